"""When to start a buffered recognizer's final (Whisper): pauses inside utterances against the trigger.

    python bench/early_trigger.py [--vad silero|energy] [--json out.json]

The call path (ivr/call.py) queues the Whisper final once the caller has been quiet
ASR_TRAILING_SILENCE_MS, while the endpointer waits for its 800 ms. A shorter trigger gives the
decode a longer head start (800 ms - trigger) but starts more decodes that a resumed word throws
away (each costs a whole final: ~0.25-0.3 s of CPU for tiny.en). This counts, on real speech, the
pauses inside utterances (silence runs the endpointer saw end with speech, not with the end of the
turn) and, per trigger, the decodes that would be wasted per utterance.

Speech: the manifest's fixtures (espeak-ng and real voices, en/ru/ko) and the recorded English
prompts of the Debian package asterisk-core-sounds-en-wav (a professional voice reading sentences
with commas: more pauses than a short request to an IVR), each after 1 s of quiet line and followed
by 1.5 s of it, through the call path's Endpointer with the chosen detector (default Silero, as
`vad.detector`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.endpointing import detector  # noqa: E402
from bench.line_signals import quiet_line  # noqa: E402
from ivr.audio.pcm import frames, read_wav  # noqa: E402
from ivr.audio.vad import Endpointer, EndpointParams, SpeechEnded, SpeechStarted  # noqa: E402
from ivr.testing.fixtures import load_manifest  # noqa: E402

CORE_SOUNDS = Path("/usr/share/asterisk/sounds/en")
PARAMS = EndpointParams(no_input_ms=0)
TRIGGERS_MS = (200, 300, 400, 500, 600)
LEAD_MS, TAIL_MS = 1000, 1500


def corpus() -> list[tuple[str, bytes]]:
    items = [(f.file, read_wav(f.path)) for f in load_manifest() if f.transcript]
    if CORE_SOUNDS.is_dir():
        items += [(f"core-sounds/{p.name}", read_wav(p)) for p in sorted(CORE_SOUNDS.glob("*.wav"))]
    return items


def pauses_in(kind: str, pool: Any, pcm: bytes) -> tuple[int, list[int]]:
    """(utterances the endpointer found, the pauses inside them in ms) for one stream."""
    det = detector(kind, pool)
    endpointer = Endpointer(PARAMS, det)
    utterances, pauses, longest = 0, list[int](), 0
    for frame in frames(quiet_line(LEAD_MS / 1000) + pcm + quiet_line(TAIL_MS / 1000)):
        for event in endpointer.feed(frame):
            if isinstance(event, SpeechStarted):
                utterances += 1
                longest = 0
            elif isinstance(event, SpeechEnded):
                endpointer.reset()
        quiet = endpointer.trailing_silence_ms
        if endpointer.in_speech and quiet == 0 and longest > 0:  # speech resumed after a pause
            pauses.append(longest)
        longest = quiet if endpointer.in_speech else 0
    if hasattr(det, "close"):
        det.close()
    return utterances, pauses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vad", choices=["silero", "energy"], default="silero")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pool = None
    if args.vad == "silero":
        from ivr.audio.silero import SileroPool

        pool = SileroPool()
    rows: dict[str, dict[str, Any]] = {}
    speech = corpus()
    for name, group in (("fixtures", lambda n: not n.startswith("core-sounds/")),
                        ("core sounds", lambda n: n.startswith("core-sounds/"))):
        utterances, pauses = 0, []
        for item, pcm in speech:
            if group(item):
                u, p = pauses_in(args.vad, pool, pcm)
                utterances += u
                pauses += p
        rows[name] = {"utterances": utterances, "pauses_ms": sorted(pauses)}
    print(f"pauses inside utterances ({args.vad} endpointer, end of speech at {PARAMS.end_silence_ms} ms): "
          "early decodes wasted per 100 utterances, by trigger")
    print(f"{'speech':<12} {'utterances':>10} " + " ".join(f"{t:>5} ms" for t in TRIGGERS_MS))
    for name, row in rows.items():
        per100 = [100 * sum(p >= t for p in row["pauses_ms"]) / max(1, row["utterances"]) for t in TRIGGERS_MS]
        row["wasted_per_100"] = dict(zip(map(str, TRIGGERS_MS), per100, strict=True))
        print(f"{name:<12} {row['utterances']:>10} " + " ".join(f"{w:>8.1f}" for w in per100))
    print("head start of the early final (end of speech - trigger): "
          + ", ".join(f"{t} ms -> {PARAMS.end_silence_ms - t} ms" for t in TRIGGERS_MS))
    if args.json:
        args.json.write_text(json.dumps({"vad": args.vad, "triggers_ms": TRIGGERS_MS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
