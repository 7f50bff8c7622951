"""Where a turn's time goes, per stage, over every fixture (in-process, no sockets, one call at a time).

    python bench/latency_budget.py [--lang ko|en|both] [--json out.json]

Part 1 replays each single-utterance fixture of the manifest through the real pipeline
(`ivr.testing.replay.run_call`: simulated line on an audio clock, so no waiting for prompts) and reports
the TurnLog split of the first turn: ASR final (end of speech decided -> final result), NLU,
dialog step, prompt audio ready, and compute = decision -> first reply frame.

Part 2 measures the per-frame work a call costs even when nobody speaks (what limits the number of
concurrent calls on 2 cores): endpointer, AudioSocket parse + encode, and the recognizer per 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.concurrency import ENGINE_LANG, conditions  # noqa: E402
from bench.harness import bench_settings, percentile, temp_data_dir  # noqa: E402
from ivr.audio.pcm import FRAME_BYTES, read_wav  # noqa: E402
from ivr.audio.vad import Endpointer  # noqa: E402
from ivr.services import CallServices  # noqa: E402
from ivr.telephony.audiosocket import AudioSocketParser, encode_audio  # noqa: E402
from ivr.testing.simline import CallerTurn  # noqa: E402

STAGES = ("asr_ms", "nlu_ms", "dialog_ms", "tts_ms", "latency_ms")
MICRO_FRAMES = 5000  # 100 s of audio per per-frame measurement


async def replay_turns(services: CallServices, lang: str) -> list[tuple[str, Any]]:
    """(fixture, first TurnLog) for every speech fixture of `lang`."""
    from ivr.testing.fixtures import load_manifest
    from ivr.testing.replay import run_call

    out = []
    for fixture in load_manifest().for_lang(lang):
        if fixture.no_input:
            continue
        pcm = read_wav(fixture.path)
        call, _line = await run_call(services, lang, [CallerTurn(pcm=pcm, label=fixture.file)])
        if call.turns:
            out.append((fixture.file, call.turns[0]))
    return out


def per_frame_costs(services: CallServices, lang: str, pcm: bytes) -> dict[str, float]:
    """CPU microseconds per 20 ms frame (endpointer, AudioSocket) and ms per 100 ms of ASR."""
    frames = [pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\x00") for i in range(0, len(pcm), FRAME_BYTES)]
    frames = (frames * (MICRO_FRAMES // len(frames) + 1))[:MICRO_FRAMES]
    costs: dict[str, float] = {}

    endpointer = Endpointer(services.endpoint_params.with_overrides({"no_input_ms": 0}))
    started = time.process_time()
    for frame in frames:
        endpointer.feed(frame)
        if endpointer.state == "done":
            endpointer.reset()
    costs["endpointer_us_per_frame"] = (time.process_time() - started) / len(frames) * 1e6

    wire = b"".join(encode_audio(frame) for frame in frames)
    parser = AudioSocketParser()
    started = time.process_time()
    for offset in range(0, len(wire), 4096):
        parser.feed(wire[offset : offset + 4096])
    for frame in frames:
        encode_audio(frame)
    costs["audiosocket_us_per_frame"] = (time.process_time() - started) / len(frames) * 1e6

    engine = services.asr_engine(lang)
    if engine is not None:
        recognizer = engine.recognizer()
        # the phrase list a menu turn uses (every intent of the grammar), as CallSession sets it
        nlu = services.registry.get("support", lang).nlu
        phrases = nlu.phrases(list(nlu.grammar.intents)) if nlu.grammar.asr_phrases else None
        recognizer.set_grammar(list(phrases) if phrases else None)
        recognizer.reset()
        costs["asr_phrases"] = float(len(phrases or ()))
        chunk = FRAME_BYTES * 5
        started = time.process_time()
        n = 0
        for offset in range(0, len(pcm), chunk):
            recognizer.accept(pcm[offset : offset + chunk])
            n += 1
        costs["asr_accept_ms_per_100ms"] = (time.process_time() - started) / max(n, 1) * 1000
        started = time.process_time()
        recognizer.final()
        costs["asr_final_cpu_ms"] = (time.process_time() - started) * 1000
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", choices=["ko", "en", "both"], default="both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    langs = ["ko", "en"] if args.lang == "both" else [args.lang]
    settings = bench_settings(temp_data_dir("ivr-budget-"))
    services = CallServices.create(settings, with_records=False, engine_override={"en": "whisper"})
    services.registry.reload()
    console = Console(width=200)
    cond = conditions()
    results: dict[str, Any] = {"conditions": cond, "langs": {}}
    table = Table(title=f"Per-stage turn time over the fixtures (ms) - {cond['date']}, {cond['cores']} cores, "
                        f"{cond['cpu']}, load {cond['loadavg_start']:.1f}")
    for column in ("engine", "fixtures", "understood", *(f"{s[:-3]} p50/p95" for s in STAGES)):
        table.add_column(column, justify="right")
    micro = Table(title="Per-call cost that scales with concurrency (CPU time)")
    for column in ("engine", "endpointer µs/frame", "AudioSocket parse+encode µs/frame", "ASR accept ms/100 ms",
                   "ASR final CPU ms", "=> % of a core per listening call"):
        micro.add_column(column, justify="right")
    from ivr.testing.fixtures import load_manifest

    manifest = load_manifest()
    for lang in langs:
        engine = next(e for e, code in ENGINE_LANG.items() if code == lang)
        turns = asyncio.run(replay_turns(services, lang))
        understood = sum(1 for file, turn in turns if manifest.fixture(file).intent in (None, turn.intent))
        row = [f"{engine} ({lang})", str(len(turns)), f"{understood}/{len(turns)}"]
        stats = {}
        for stage in STAGES:
            values = [getattr(turn, stage) for _, turn in turns]
            p50, p95 = percentile(values, 50), percentile(values, 95)
            stats[stage] = {"p50": p50, "p95": p95}
            row.append(f"{p50:.1f}/{p95:.1f}" if p50 is not None and p95 is not None else "-")
        table.add_row(*row)
        sample = read_wav(manifest.fixture(f"{lang}/balance_1.wav").path)
        costs = per_frame_costs(services, lang, sample)
        # a listening call: 50 frames/s in (endpointer + parse), 50 out (encode), ASR on its speech share
        listening = (costs["endpointer_us_per_frame"] + costs["audiosocket_us_per_frame"]) * 50 / 1e6
        speaking = listening + costs.get("asr_accept_ms_per_100ms", 0) * 10 / 1000
        micro.add_row(f"{engine} ({lang})", f"{costs['endpointer_us_per_frame']:.0f}",
                      f"{costs['audiosocket_us_per_frame']:.1f}", f"{costs.get('asr_accept_ms_per_100ms', 0):.2f}",
                      f"{costs.get('asr_final_cpu_ms', 0):.0f}",
                      f"{listening * 100:.2f} silent / {speaking * 100:.2f} speaking")
        results["langs"][lang] = {"engine": engine, "turns": len(turns), "understood": understood,
                                  "stages": stats, "per_frame": costs}
    console.print(table)
    console.print(micro)
    services.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
