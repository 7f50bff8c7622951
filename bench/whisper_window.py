"""Whisper's encoder window against grammar turns: recorded prompts, each decoded as a grammar turn.

    python bench/whisper_window.py [--step 1] [--json out.json]

The call path decodes a Whisper final on an encoder window shorter than Whisper's own 30 s
(ivr/asr/whisper_batch.py: the encoder's cost follows the window). That was chosen on the English
replay fixtures (29 turns, most 2-4 s). This measures it on speech nobody here chose or tuned on: the
English prompts of the Debian package asterisk-core-sounds-en-wav (a professional voice, 8 kHz, with
the package's own transcripts), those of 0.3-12 s, many of them single words ("eighteen", "e").

Each prompt is framed as the call path hands a turn to Whisper (quiet line before it, as the pre-roll
holds ~0.36 s before Silero's onset, and 300 ms after it, ASR_TRAILING_SILENCE_MS; the files carry
~0.1 s of their own) and decoded as a grammar turn: its phrase list is its own transcript among 19
others drawn at random (seeded) from the set, in random order, so the bias prompt holds what was said
most of the time (it keeps the first ~400 characters); the transcript is snapped onto the list as in a
call (`WhisperRecognizer.result_for`). Every turn is decoded on both windows (tiny.en int8, one thread,
one decode at a time); a rule "30 s for turns shorter than T" takes each turn's verdict and CPU from
the window it would use. Printed per rule: right / wrong / rejected, right by the turn's length, CPU per
decode. Every turn up to 9 s is also decoded by Moonshine tiny (ivr/asr/moonshine.py, no prompt, snapped
the same way): the rule "Moonshine for every turn up to 9 s" is the call path's under load.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.concurrency import conditions  # noqa: E402
from bench.line_signals import quiet_line  # noqa: E402
from ivr.asr import moonshine  # noqa: E402
from ivr.asr.whisper import DEFAULT_MIN_WINDOW_S, DEFAULT_SHORT_TURN_S, WhisperEngine, WhisperParams  # noqa: E402
from ivr.asr.whisper_batch import FULL_WINDOW_FRAMES, decode_batch  # noqa: E402
from ivr.audio.pcm import SAMPLE_RATE, read_wav, resample  # noqa: E402
from ivr.services import one_blas_thread  # noqa: E402
from ivr.testing.core_sounds import EN_SOUNDS, transcripts, transcripts_file, words_of  # noqa: E402

SOUNDS = EN_SOUNDS
MIN_S, MAX_S = 0.3, 12.0
PHRASES_PER_TURN = 20
SEED = 13
# the call path's framing of a turn, less the ~0.1 s each file has of its own
LEAD_S, TAIL_S = 0.25, 0.2
LENGTH_BINS = ((0.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, 4.0), (4.0, MAX_S + 2))
THRESHOLDS_S = (1.5, DEFAULT_SHORT_TURN_S, 2.5)  # "30 s for turns shorter than T" rules to print


@dataclass(frozen=True)
class Turn:
    name: str
    pcm: bytes
    text: str  # the package's transcript, as words
    phrases: list[str]

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


def turns(step: int) -> list[Turn]:
    refs = transcripts(transcripts_file("en"))
    found: list[tuple[str, bytes, str]] = []
    for name, text in sorted(refs.items()):
        path = SOUNDS / f"{name}.wav"
        said = " ".join(words_of(text))
        if not path.is_file() or not said:
            continue
        pcm = read_wav(path)
        if MIN_S <= len(pcm) / 2 / SAMPLE_RATE <= MAX_S:
            found.append((name, quiet_line(LEAD_S) + pcm + quiet_line(TAIL_S, seed=2), said))
    texts = sorted({said for _, _, said in found})
    rng = random.Random(SEED)
    out = []
    for name, pcm, said in found:
        phrases = rng.sample([t for t in texts if t != said], PHRASES_PER_TURN - 1) + [said]
        rng.shuffle(phrases)
        out.append(Turn(name, pcm, said, phrases))
    return out[::step]


def decode_all(turns_: list[Turn], base: WhisperEngine, window_s: float) -> list[tuple[str, float]]:
    """(verdict, CPU seconds) per turn, every turn on `window_s` (a shorter turn pads up to it)."""
    engine = WhisperEngine(base.model_name, replace(base.params, min_window_s=window_s, short_turn_s=0.0,
                                                    moonshine="off"))
    recognizer = engine.recognizer()
    decode_batch(engine, [(turns_[0].pcm, turns_[0].phrases)])  # warm-up: the first decode of a window is slower
    out = []
    for turn in turns_:
        started = time.process_time()
        (text, confidence), = decode_batch(engine, [(turn.pcm, turn.phrases)])
        cpu = time.process_time() - started
        heard = recognizer.result_for(text, confidence, turn.phrases).text
        out.append(("rejected" if not heard else "right" if heard == turn.text else "wrong", cpu))
    return out


def decode_moonshine(turns_: list[Turn], base: WhisperEngine) -> list[tuple[str, float] | None]:
    """(verdict, CPU seconds) per turn by Moonshine tiny (ivr/asr/moonshine.py); None for turns longer than it takes."""
    model = moonshine.load()
    if model is None:
        raise SystemExit("needs moonshine-voice==0.1.0 (ivr[whisper]): run ./install.sh")
    recognizer = base.recognizer()
    out: list[tuple[str, float] | None] = []
    for turn in turns_:
        if turn.seconds > moonshine.MAX_TURN_S:
            out.append(None)
            continue
        audio = resample(np.frombuffer(turn.pcm, "<i2"), SAMPLE_RATE, moonshine.RATE).astype(np.float32) / 32768.0
        started = time.process_time()
        text, confidence = model.transcribe(audio)
        cpu = time.process_time() - started
        heard = recognizer.result_for(text, confidence, turn.phrases).text
        out.append(("rejected" if not heard else "right" if heard == turn.text else "wrong", cpu))
    return out


def summary(turns_: list[Turn], picked: list[tuple[str, float]]) -> dict[str, Any]:
    verdicts = [v for v, _ in picked]
    bins = {}
    for lo, hi in LENGTH_BINS:
        chosen = [v for v, t in zip(verdicts, turns_, strict=True) if lo <= t.seconds < hi]
        bins[f"{lo:g}-{hi:g} s"] = {"turns": len(chosen), "right": chosen.count("right")}
    return {"right": verdicts.count("right"), "wrong": verdicts.count("wrong"),
            "rejected": verdicts.count("rejected"),
            "cpu_ms_per_turn": 1000 * sum(c for _, c in picked) / len(picked), "by_length": bins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", type=int, default=1, help="every Nth prompt (1: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not SOUNDS.is_dir() or not transcripts_file("en").is_file():
        raise SystemExit("needs asterisk-core-sounds-en and asterisk-core-sounds-en-wav: run ./install.sh")
    one_blas_thread()  # as a call server: numpy's BLAS threads would spin on the other core
    cond = conditions()
    base = WhisperEngine(params=WhisperParams(cpu_threads=1, workers=1))
    turns_ = turns(args.step)
    console = Console(width=170)
    console.print(f"{len(turns_)} prompts of {MIN_S}-{MAX_S} s, {PHRASES_PER_TURN} phrases each, "
                  f"model {Path(base.model_name).name}")
    full = decode_all(turns_, base, FULL_WINDOW_FRAMES / 100)
    short = decode_all(turns_, base, DEFAULT_MIN_WINDOW_S)
    rules: list[tuple[str, float, list[tuple[str, float]]]] = [
        ("30 s (Whisper's own)", FULL_WINDOW_FRAMES / 100, full),
        (f"{DEFAULT_MIN_WINDOW_S:g} s for every turn", 0.0, short),
    ]
    for threshold in sorted(set(THRESHOLDS_S)):
        mark = " (the default)" if threshold == DEFAULT_SHORT_TURN_S else ""
        rules.append((f"{DEFAULT_MIN_WINDOW_S:g} s, 30 s under {threshold:g} s{mark}", threshold,
                      [f if t.seconds < threshold else s_ for t, f, s_ in zip(turns_, full, short, strict=True)]))
    moon = decode_moonshine(turns_, base)
    rule = [f if t.seconds < DEFAULT_SHORT_TURN_S else s_ for t, f, s_ in zip(turns_, full, short, strict=True)]
    rules += [
        ("Moonshine for every turn up to 9 s (the call path under load)", 0.0,
         [m or s_ for m, s_ in zip(moon, short, strict=True)]),
        (f"Moonshine {DEFAULT_SHORT_TURN_S:g}-9 s, else as the default", DEFAULT_SHORT_TURN_S,
         [m if m is not None and t.seconds >= DEFAULT_SHORT_TURN_S else r
          for t, m, r in zip(turns_, moon, rule, strict=True)]),
    ]
    results = []
    for label, threshold, picked in rules:
        row = summary(turns_, picked)
        results.append({"rule": label, "short_turn_s": threshold, **row})
    table = Table(title=f"Whisper grammar turns by encoder window - {cond['date']}, {cond['cores']} cores, "
                        f"{cond['cpu']}, load {cond['loadavg_start']:.1f}")
    table.add_column("window rule")
    for key in ("right", "wrong", "rejected"):
        table.add_column(key, justify="right")
    for bin_name in results[0]["by_length"]:
        n = results[0]["by_length"][bin_name]["turns"]
        table.add_column(f"right {bin_name} (of {n})", justify="right")
    table.add_column("CPU ms / decode", justify="right")
    for row in results:
        table.add_row(row["rule"], str(row["right"]), str(row["wrong"]), str(row["rejected"]),
                      *(str(b["right"]) for b in row["by_length"].values()), f"{row['cpu_ms_per_turn']:.0f}")
    console.print(table)
    if args.json:
        per_turn = [{"name": t.name, "seconds": round(t.seconds, 2), "said": t.text, "full window": f[0],
                     "shorter window": s_[0], "moonshine": m[0] if m else None}
                    for t, f, s_, m in zip(turns_, full, short, moon, strict=True)]
        args.json.write_text(json.dumps({"conditions": cond, "turns": len(turns_), "results": results,
                                         "per_turn": per_turn}, indent=1))


if __name__ == "__main__":
    main()
