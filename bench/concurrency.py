"""N simultaneous callers through the real server: turn latency, CPU, memory, late frames.

    python bench/concurrency.py [--calls 1,10,50] [--engine vosk|whisper|both] [--lang ko|en]
                                [--fixture ko/balance_1.wav] [--json out.json] [--trace jobs.json]

The server (`ivr.server.run_server`, what `ivr serve` runs) starts in this process on free
loopback ports with records in a temporary SQLite file. The callers are fake Asterisk channels
(bench/fake_asterisk.py) in a child process: each speaks FastAGI, answers `EXEC AudioSocket` by
connecting with the call's UUID, and streams in real time (a 320-byte frame every 20 ms, silence
when not speaking). After the greeting ends (+300 ms human gap) each caller says the fixture
utterance and measures the time from the end of its speech to the first non-silent reply frame.

Per N the table shows: that latency (p50/p95/max), the server's own split from the turn records
(endpointing = the configured end-of-speech silence, ASR final, NLU + dialog, prompt audio ready,
compute = decision -> first reply frame handed to the socket), CPU per call (server process CPU
time / call-seconds), RSS per extra call (peak RSS during the batch - RSS before, / N), and paced
playback frames late by more than 40 ms (seen by the callers) and by more than 10 ms (server stats).

`--trace` records every ASR pool job of each batch (kind, call, queued / started / ended, deadline, thread
CPU; `AsrScheduler.trace`), writes them to the file and prints per kind the jobs, their CPU and queue wait, and
how many waited at the busiest moment: where a slow batch's time went.

Vosk runs on the Korean fixtures, Whisper on the English ones (the only models installed here).
One warm-up call per engine runs first (model load, prompt cache), outside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.fake_asterisk import CallerScript, fake_call, speech_end_offset_s  # noqa: E402
from bench.harness import (  # noqa: E402
    InProcessServer,
    RssSampler,
    bench_settings,
    cpu_seconds,
    decoded_by,
    percentile,
    rss_bytes,
    temp_data_dir,
)
from ivr.asr.scheduler import JobTrace  # noqa: E402
from ivr.services import CallServices  # noqa: E402

ENGINE_LANG = {"vosk": "ko", "whisper": "en"}  # the models installed here: Vosk Korean, Whisper tiny.en
# balance_2 ("요금 얼마") is one the Korean grammar + Vosk recognise at this commit (balance_1 is not)
DEFAULT_FIXTURE = {"ko": "ko/balance_2.wav", "en": "en/balance_1.wav"}
DEFAULT_CALLS = "1,10,50"
CLIENT_SCRIPT = ROOT / "bench" / "fake_asterisk.py"
# callers start within this window (a burst, as when a campaign or an outage recovery hits)
DEFAULT_STAGGER_S = 0.01
LISTEN_S = 1.5  # each caller listens this long to the reply before hanging up
MB = 1024 * 1024


@dataclass
class BatchResult:
    """One row of the table."""

    engine: str
    lang: str
    calls: int
    fixture: str
    utterance_s: float
    ok: int
    errors: list[str]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_max_ms: float | None
    endpoint_ms: float | None
    asr_p50_ms: float | None
    asr_p95_ms: float | None
    nlu_dialog_p95_ms: float | None
    tts_p95_ms: float | None
    compute_p50_ms: float | None
    compute_p95_ms: float | None
    compute_max_ms: float | None
    understood: int  # turns whose intent matched the fixture's
    cpu_per_call: float  # CPU seconds per call-second (1.0 = one core per call)
    rss_before_mb: float
    rss_per_call_mb: float
    late_frames_client: int
    playback_frames_client: int
    max_gap_ms: float
    late_frames_server: int
    frames_out_server: int
    client_send_lag_max_ms: float
    wall_s: float
    loadavg_1m: float  # machine load (all processes) at the end of the batch: other work competes too
    vad_behind_frames: int = 0  # frames Silero's worker was too far behind for (judged by energy)
    vad_mean_batch: float | None = None  # Silero windows per network run
    decoded_by: dict[str, int] = field(default_factory=dict)  # finals by model (Whisper's: whisper, moonshine)


def read_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


async def run_clients(port: int, calls: list[dict[str, Any]], stagger_s: float) -> list[dict[str, Any]]:
    """Run the callers in a child process (own event loop and CPU) and return their reports."""
    jobs = {"host": "127.0.0.1", "port": port, "calls": calls, "stagger_s": stagger_s}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLIENT_SCRIPT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(json.dumps(jobs).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"fake Asterisk client exited with {proc.returncode}")
    return json.loads(out)


def _p(values: list[float], q: float) -> float | None:
    return percentile(values, q)


async def run_batch(server: InProcessServer, engine: str, lang: str, fixture: str, n: int,
                    expected_intent: str | None, stagger_s: float) -> BatchResult:
    path = ROOT / "audio_fixtures" / fixture
    pcm = read_pcm(path)
    tag = f"{engine}-{n}-{time.monotonic_ns()}"
    channels = [f"Local/bench-{tag}-{i}" for i in range(n)]
    calls = [{"pcm_file": str(path), "lang": lang, "channel": ch, "listen_s": LISTEN_S} for ch in channels]
    rss_before = rss_bytes()
    cpu_before = cpu_seconds()
    vad_before = server.services.vad_stats()
    decoded_before = decoded_by(server.services, {lang})
    started = time.monotonic()
    with RssSampler() as sampler:
        reports = await run_clients(server.agi_port, calls, stagger_s)
    wall = time.monotonic() - started
    if os.environ.get("IVR_BENCH_DEBUG"):
        for report in reports:
            print(report, server.taps.turns.get(report["channel"]), server.taps.audio.get(report["channel"]))
    cpu = cpu_seconds() - cpu_before
    vad = {k: v - vad_before.get(k, 0) for k, v in server.services.vad_stats().items()}
    call_seconds = sum(r["duration_s"] for r in reports) or 1.0
    turns = [t for ch in channels for t in server.taps.turns.get(ch, [])[:1] if not t.no_input]
    audio = [server.taps.audio[ch] for ch in channels if ch in server.taps.audio]
    latencies = [r["latency_ms"] for r in reports if r["latency_ms"] is not None]
    compute = [t.latency_ms for t in turns]
    return BatchResult(
        engine=engine, lang=lang, calls=n, fixture=fixture, utterance_s=round(len(pcm) / 16000, 2),
        ok=sum(r["ok"] for r in reports), errors=sorted({r["error"] for r in reports if r["error"]}),
        latency_p50_ms=_p(latencies, 50), latency_p95_ms=_p(latencies, 95),
        latency_max_ms=max(latencies) if latencies else None,
        endpoint_ms=_p([t.endpoint_ms for t in turns], 50),
        asr_p50_ms=_p([t.asr_ms for t in turns], 50), asr_p95_ms=_p([t.asr_ms for t in turns], 95),
        nlu_dialog_p95_ms=_p([t.nlu_ms + t.dialog_ms for t in turns], 95),
        tts_p95_ms=_p([t.tts_ms for t in turns], 95),
        compute_p50_ms=_p(compute, 50), compute_p95_ms=_p(compute, 95),
        compute_max_ms=max(compute) if compute else None,
        understood=sum(1 for t in turns if expected_intent and t.intent == expected_intent),
        cpu_per_call=cpu / call_seconds,
        rss_before_mb=rss_before / MB, rss_per_call_mb=max(0, sampler.peak - rss_before) / MB / n,
        late_frames_client=sum(r["late_frames"] for r in reports),
        playback_frames_client=sum(r["playback_frames"] for r in reports),
        max_gap_ms=max((r["max_gap_ms"] for r in reports), default=0.0),
        late_frames_server=sum(a.late_frames for a in audio), frames_out_server=sum(a.frames_out for a in audio),
        client_send_lag_max_ms=max((r["send_lag_max_ms"] for r in reports), default=0.0), wall_s=wall,
        loadavg_1m=os.getloadavg()[0], vad_behind_frames=vad.get("behind_frames", 0),
        vad_mean_batch=vad["windows_run"] / vad["batches"] if vad.get("batches") else None,
        decoded_by=dict(decoded_by(server.services, {lang}) - decoded_before),
    )


def conditions() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(), "cpu": model,
            "python": platform.python_version(), "loadavg_start": os.getloadavg()[0]}


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(results: list[BatchResult], cond: dict[str, Any], console: Console) -> None:
    table = Table(title=f"ivr serve, N simultaneous callers in real time - {cond['date']}, {cond['cores']} cores, "
                        f"{cond['cpu']}, Python {cond['python']}")
    for column in ("engine", "N", "utt s", "ok", "understood", "e2e p50 ms", "e2e p95 ms", "e2e max ms",
                   "endpoint ms", "ASR p50/p95 ms", "NLU+dlg p95", "prompt p95", "compute p50/p95/max ms",
                   "CPU %core/call", "RSS MB/call", "late >40ms (client)", "late >10ms (server)",
                   "VAD behind frames / mean batch", "load 1m"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r.engine} ({r.lang})", str(r.calls), f"{r.utterance_s:.2f}", f"{r.ok}/{r.calls}",
            f"{r.understood}/{r.calls}", _fmt(r.latency_p50_ms), _fmt(r.latency_p95_ms), _fmt(r.latency_max_ms),
            _fmt(r.endpoint_ms), f"{_fmt(r.asr_p50_ms)}/{_fmt(r.asr_p95_ms)}", _fmt(r.nlu_dialog_p95_ms, 1),
            _fmt(r.tts_p95_ms, 1), f"{_fmt(r.compute_p50_ms)}/{_fmt(r.compute_p95_ms)}/{_fmt(r.compute_max_ms)}",
            f"{r.cpu_per_call * 100:.1f}", f"{r.rss_per_call_mb:.2f}",
            f"{r.late_frames_client}/{r.playback_frames_client}", f"{r.late_frames_server}/{r.frames_out_server}",
            f"{r.vad_behind_frames} / {_fmt(r.vad_mean_batch, 1)}", f"{r.loadavg_1m:.1f}",
        )
    console.print(table)
    console.print("e2e: caller's end of speech -> first non-silent reply frame (includes the endpointing "
                  "silence); compute: server decision -> first reply frame handed to the socket "
                  "(ASR final + NLU + dialog + prompt audio). CPU: server process CPU time / call-seconds. "
                  "VAD: frames judged by energy because Silero's worker was behind, and Silero windows per "
                  "network run (energy detector: 0 / -). "
                  "load 1m: machine load average at the end of the batch (other processes compete for the cores).")
    for r in results:
        if r.decoded_by:
            console.print(f"{r.engine} N={r.calls}: finals decoded by "
                          + ", ".join(f"{model} {n}" for model, n in sorted(r.decoded_by.items())))
        if r.errors:
            console.print(f"[yellow]{r.engine} N={r.calls}: caller errors: {'; '.join(r.errors)[:300]}")
        if r.client_send_lag_max_ms > 40:
            console.print(f"[yellow]{r.engine} N={r.calls}: the caller process itself sent frames up to "
                          f"{r.client_send_lag_max_ms:.0f} ms late (client CPU contention)")


def trace_summary(jobs: list[JobTrace]) -> str:
    """Per job kind: count, thread CPU, queue wait p50 / p95; and the most jobs waiting at one time."""
    parts = []
    for kind in sorted({j.kind for j in jobs}):
        mine = [j for j in jobs if j.kind == kind]
        waits = [1000 * (j.started - j.queued) for j in mine]
        parts.append(f"{kind} {len(mine)} jobs, CPU {sum(j.cpu_s for j in mine):.2f} s, queue p50/p95 "
                     f"{_fmt(percentile(waits, 50))}/{_fmt(percentile(waits, 95))} ms")
    events = sorted([(j.queued, 1) for j in jobs] + [(j.started, -1) for j in jobs])
    waiting = peak = 0
    for _, step in events:
        waiting += step
        peak = max(peak, waiting)
    return "; ".join(parts) + f"; at most {peak} waiting at once"


async def bench(engines: list[str], counts: list[int], fixtures: dict[str, str], stagger_s: float,
                console: Console, vad: str = "silero", trace: Path | None = None) -> list[BatchResult]:
    from ivr.testing.fixtures import load_manifest

    manifest = load_manifest(check_files=False)
    data_dir = temp_data_dir()
    settings = bench_settings(data_dir, max_calls=max(counts) + 10)
    settings.vad.detector = vad  # type: ignore[assignment]
    services = CallServices.create(settings, with_records=True, engine_override={"en": "whisper"})
    results: list[BatchResult] = []
    traces: list[dict[str, Any]] = []
    async with InProcessServer(settings, services) as server:
        for engine in engines:
            lang = ENGINE_LANG[engine]
            fixture = fixtures[lang]
            expected = manifest.fixture(fixture).intent
            pcm = read_pcm(ROOT / "audio_fixtures" / fixture)
            console.print(f"{engine}: warm-up call ({fixture}, speech ends at {speech_end_offset_s(pcm):.2f} s)")
            warm = await fake_call("127.0.0.1", server.agi_port,
                                   CallerScript(pcm=pcm, lang=lang, channel=f"Local/warm-{engine}"))
            if not warm.ok:
                console.print(f"[red]warm-up call failed: {warm.error}")
            for n in counts:
                console.print(f"{engine}: {n} simultaneous call(s)...")
                services.asr.trace = [] if trace else None
                result = await run_batch(server, engine, lang, fixture, n, expected, stagger_s)
                console.print(f"  done in {result.wall_s:.1f} s: e2e p95 {_fmt(result.latency_p95_ms)} ms, "
                              f"compute p95 {_fmt(result.compute_p95_ms)} ms")
                if services.asr.trace is not None:
                    console.print(f"  ASR pool: {trace_summary(services.asr.trace)}")
                    traces.append({"engine": engine, "calls": n, "jobs": [asdict(j) for j in services.asr.trace]})
                results.append(result)
    services.asr.trace = None
    if trace:
        trace.write_text(json.dumps(traces))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default=DEFAULT_CALLS, help="comma-separated N values (default 1,10,50)")
    parser.add_argument("--engine", choices=["vosk", "whisper", "both"], default="both")
    parser.add_argument("--lang", choices=["ko", "en"], help="only the engine for this language")
    parser.add_argument("--fixture", action="append", default=[],
                        help="fixture per language, e.g. ko/roaming_1.wav (default: ko/balance_2, en/balance_1)")
    parser.add_argument("--stagger", type=float, default=DEFAULT_STAGGER_S, help="seconds between call starts")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--vad", choices=["silero", "energy"], default="silero", help="speech detector (vad.detector)")
    parser.add_argument("--trace", type=Path, help="record every ASR pool job of each batch and write them here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    engines = ["vosk", "whisper"] if args.engine == "both" else [args.engine]
    if args.lang:
        engines = [e for e in engines if ENGINE_LANG[e] == args.lang]
    fixtures = dict(DEFAULT_FIXTURE)
    for item in args.fixture:
        fixtures[item.split("/", 1)[0]] = item
    counts = [int(c) for c in args.calls.split(",") if c.strip()]
    console = Console(width=220)
    cond = conditions()
    results = asyncio.run(bench(engines, counts, fixtures, args.stagger, console, args.vad, args.trace))
    print_table(results, cond, console)
    if args.json:
        args.json.write_text(json.dumps({"conditions": cond, "results": [asdict(r) for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
