"""ASR cost per turn, before and after, in ONE run (both sides see the same machine load).

    python bench/asr_throughput.py [--rounds 2] [--json out.json]

Whisper (tiny.en, the English speech fixtures): turns decoded per CPU-second (process CPU time,
all threads)
  - one at a time, faster-whisper `transcribe` on Whisper's 30 s window (the call path before);
  - one at a time on the fitted window (ivr/asr/whisper_batch.py, `min_window_s`);
  - batches of 4 and 8 on the fitted window (what the ASR pool does when finals queue up);
  - two finals at a time on two model replicas of one thread each (`WhisperParams.workers=2,
    cpu_threads=1`) instead of one replica using both cores, the ASR pool's threads feeding them;
  - the same with Moonshine tiny decoding every turn up to 9 s (ivr/asr/moonshine.py), as the pool does
    with the turns its queue made too late for Whisper (`asr.moonshine: under_load`);
with the word error rate of each against the manifest transcripts.

Vosk (Korean, the support grammar, the Korean speech fixtures): per turn, the CPU spent after the
end of speech was decided (the final) and in all, before (a new Kaldi recognizer whenever the
grammar changes, the whole 800 ms of end-of-speech silence fed, the last 100 ms chunk still
pending at the decision) and after (recognizers reused, 300 ms of trailing silence fed as soon as
it has passed and the segment decoded then, 500 ms before the decision; only the phrase choice
is left at the decision).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rapidfuzz.distance import Levenshtein  # noqa: E402

from bench.concurrency import conditions  # noqa: E402
from bench.harness import cpu_seconds  # noqa: E402
from ivr.audio.pcm import FRAME_BYTES, frames, read_wav, rms, silence  # noqa: E402
from ivr.config import AsrSettings, Settings  # noqa: E402
from ivr.testing.fixtures import load_manifest  # noqa: E402

CHUNK = 5 * FRAME_BYTES  # the call pipeline's 100 ms feeds
END_SILENCE_MS = 800
TRAILING_AFTER_MS = 300


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _wer(outs: list[str], refs: list[str]) -> float:
    errors = sum(Levenshtein.distance(_words(o), _words(r)) for o, r in zip(outs, refs, strict=True))
    return errors / max(1, sum(len(_words(r)) for r in refs))


def whisper_rows(rounds: int) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    from ivr.asr.whisper import WhisperEngine, WhisperParams
    from ivr.asr.whisper_batch import decode_batch

    fixtures = [f for f in load_manifest().for_lang("en") if not f.no_input]
    pcms = [read_wav(f.path) for f in fixtures]
    refs = [f.transcript for f in fixtures]
    engine = WhisperEngine()
    engine.transcribe(pcms[0])  # warm-up outside the figures
    decode_batch(engine, [(pcms[0], None)] * 2)
    replicas = WhisperEngine(params=WhisperParams(cpu_threads=1, workers=2))
    decode_batch(replicas, [(pcms[0], None)])

    def one_at_a_time_30s() -> list[str]:
        return [engine.transcribe(p)[0] for p in pcms]

    def batched(size: int) -> Any:
        def run() -> list[str]:
            out: list[str] = []
            for i in range(0, len(pcms), size):
                out += [text for text, _ in decode_batch(engine, [(p, None) for p in pcms[i : i + size]])]
            return out
        return run

    def two_in_parallel(engine: WhisperEngine) -> Any:
        def run() -> list[str]:
            with ThreadPoolExecutor(2) as pool:
                return list(pool.map(lambda p: decode_batch(engine, [(p, None)])[0][0], pcms))
        return run

    ways = [("one at a time, 30 s window (before)", one_at_a_time_30s),
            (f"one at a time, {engine.params.min_window_s:.0f} s window", batched(1)),
            (f"batches of 4, {engine.params.min_window_s:.0f} s window", batched(4)),
            (f"batches of 8, {engine.params.min_window_s:.0f} s window", batched(8)),
            (f"2 at once, 2 replicas x 1 thread, {engine.params.min_window_s:.0f} s", two_in_parallel(replicas))]
    # what the pool does with the turns the queue made late (asr.moonshine: under_load), for every turn
    fast = WhisperEngine(params=WhisperParams(cpu_threads=1, workers=2, moonshine="always"))
    if fast.moonshine is not None:
        ways.append(("2 at once, as above, Moonshine for turns up to 9 s", two_in_parallel(fast)))
    rows: list[dict[str, Any]] = [{"way": name, "cpu_s": 0.0, "wall_s": 0.0, "turns": 0, "wer": 0.0}
                                  for name, _ in ways]
    for _ in range(rounds):  # interleaved, so load changes hit every way alike
        for row, (_name, run) in zip(rows, ways, strict=True):
            cpu, wall = cpu_seconds(), time.perf_counter()
            outs = run()
            row["cpu_s"] += cpu_seconds() - cpu
            row["wall_s"] += time.perf_counter() - wall
            row["turns"] += len(outs)
            row["wer"] = _wer(outs, refs)
    for row in rows:
        row["turns_per_cpu_s"] = row["turns"] / row["cpu_s"]
        row["speedup"] = row["turns_per_cpu_s"] / rows[0]["turns_per_cpu_s"]
        row["turns_per_wall_s"] = row["turns"] / row["wall_s"]  # what the node's cores get through
    return rows


def vosk_rows(rounds: int) -> list[dict[str, Any]]:
    from ivr.asr.factory import engine_for
    from ivr.dialog.registry import FlowRegistry

    # Vosk's own cost: without the second opinion (Whisper on the turns Vosk rejects, measured by bench/traffic.py)
    settings = Settings(asr=AsrSettings(second_opinion=False))
    engine: Any = engine_for("ko", settings, "vosk")
    loaded = FlowRegistry(settings).get("support", "ko")
    # two listening states' phrase lists: the grammar changes from one turn to the next, as in a call
    grammars = [list(loaded.nlu.phrases(list(loaded.flow.globals) + ["balance", "top_up", "operator"])),
                list(loaded.nlu.phrases(list(loaded.flow.globals) + ["yes", "no"]))]
    turns = []
    for fixture in load_manifest().for_lang("ko"):
        if fixture.no_input:
            continue
        pcm = read_wav(fixture.path)
        loud = [i for i, frame in enumerate(frames(pcm)) if rms(frame) >= 300]
        turns.append(pcm[: (loud[-1] + 1) * FRAME_BYTES])

    def before() -> tuple[float, float]:
        final_cpu = total = 0.0
        for i, speech in enumerate(turns):
            started = time.thread_time()
            engine._idle.clear()  # as before reuse: each call and each grammar change built a new one
            recognizer = engine.recognizer()
            recognizer.set_grammar(grammars[i % 2])
            audio = speech + silence(END_SILENCE_MS)
            cut = len(audio) - len(audio) % CHUNK or len(audio) - CHUNK
            for offset in range(0, cut, CHUNK):
                recognizer.accept(audio[offset : offset + CHUNK])
            decided = time.thread_time()
            recognizer.accept(audio[cut:])
            recognizer.final()
            final_cpu += time.thread_time() - decided
            total += time.thread_time() - started
        return final_cpu / len(turns), total / len(turns)

    def after() -> tuple[float, float]:
        final_cpu = total = 0.0
        recognizers = [engine.recognizer(), engine.recognizer()]
        for i, speech in enumerate(turns):
            started = time.thread_time()
            recognizer = recognizers[i % 2]
            recognizer.set_grammar(grammars[i % 2])
            recognizer.reset()
            audio = speech + silence(TRAILING_AFTER_MS)
            for offset in range(0, len(audio), CHUNK):
                recognizer.accept(audio[offset : offset + CHUNK])
            recognizer.close_segment()  # at 300 ms of trailing silence, 500 ms before the decision
            decided = time.thread_time()
            recognizer.final()
            final_cpu += time.thread_time() - decided
            total += time.thread_time() - started
        return final_cpu / len(turns), total / len(turns)

    results = {"before": [0.0, 0.0], "after": [0.0, 0.0]}
    for _ in range(rounds):
        for name, run in (("before", before), ("after", after)):
            final_cpu, total = run()
            results[name][0] += final_cpu / rounds
            results[name][1] += total / rounds
    return [{"way": name, "turns": len(turns), "final_cpu_ms": v[0] * 1000, "turn_cpu_ms": v[1] * 1000}
            for name, v in results.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engine", choices=["whisper", "vosk", "both"], default="both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cond = conditions()
    out: dict[str, Any] = {"conditions": cond}
    print(f"{cond['date']}, {cond['cores']} cores, {cond['cpu']}; load average at start {os.getloadavg()}")
    if args.engine in ("whisper", "both"):
        out["whisper"] = whisper_rows(args.rounds)
        print("\nWhisper tiny.en int8, English speech fixtures, turns per CPU-second (process CPU, all threads)")
        print(f"{'way':50} {'turns':>6} {'CPU s':>7} {'wall s':>7} {'turns/CPU-s':>12} {'x before':>9} "
              f"{'turns/s':>8} {'WER':>6}")
        for r in out["whisper"]:
            print(f"{r['way']:50} {r['turns']:6d} {r['cpu_s']:7.2f} {r['wall_s']:7.2f} {r['turns_per_cpu_s']:12.2f} "
                  f"{r['speedup']:9.2f} {r['turns_per_wall_s']:8.2f} {r['wer']:6.3f}")
    if args.engine in ("vosk", "both"):
        out["vosk"] = vosk_rows(args.rounds)
        print("\nVosk Korean, support grammar, per turn (thread CPU time)")
        print(f"{'way':8} {'turns':>6} {'final CPU ms':>13} {'turn CPU ms':>12}")
        for r in out["vosk"]:
            print(f"{r['way']:8} {r['turns']:6d} {r['final_cpu_ms']:13.1f} {r['turn_cpu_ms']:12.1f}")
    out["loadavg_end"] = os.getloadavg()
    print(f"\nload average at end {out['loadavg_end']} (the machine is shared: other jobs compete for the cores)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
