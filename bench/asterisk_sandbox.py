"""The same turn through a real Asterisk (the sandbox, ivr/testing/sandbox.py): N calls at once.

    python bench/asterisk_sandbox.py [--calls 1,5,10] [--fixture ko/balance_1.wav]

Needs root and the cached sandbox rootfs (see ivr/testing/sandbox.py). The server runs in-process as in
bench/concurrency.py; Asterisk 22 dials it with FastAGI + AudioSocket, exactly as in production.
Each call is a Local channel originated over AMI whose caller half (a context added for the
benchmark) waits for the greeting to end (1 s of silence), plays the fixture, listens, and
MixMonitor records what it heard. From that recording: end of the caller's speech
(= greeting end + 1 s + the fixture's speech end) -> first sound of the reply. The server's own
split (TurnLog) and AudioSocket frame stats come from the instrumented server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.concurrency import conditions  # noqa: E402
from bench.fake_asterisk import NON_SILENT_PEAK, speech_end_offset_s  # noqa: E402
from bench.harness import InProcessServer, bench_settings, percentile, temp_data_dir  # noqa: E402
from ivr.audio.pcm import FRAME_BYTES, read_wav  # noqa: E402
from ivr.services import CallServices  # noqa: E402

SILENCE_BEFORE_SPEAKING_MS = 1000  # the caller speaks after this much silence following the greeting
LISTEN_S = 4
BENCH_CALLER = f"""
[bench-caller]
exten => s,1,Answer()
 same => n,MixMonitor(${{BENCH_REC}}-mix.wav,r(${{BENCH_REC}}-heard.wav))
 same => n,WaitForNoise(300,1,30)
 same => n,WaitForSilence({SILENCE_BEFORE_SPEAKING_MS},1,40)
 same => n,Playback(${{BENCH_SOUND}})
 same => n,Wait({LISTEN_S})
 same => n,Hangup()
"""


def reply_latency_ms(heard: bytes, speech_end_s: float) -> float | None:
    """From the caller's recording: first sound after (greeting end + silence + speech end)."""
    samples = np.frombuffer(heard[: len(heard) // FRAME_BYTES * FRAME_BYTES], dtype="<i2")
    if not len(samples):
        return None
    peaks = np.abs(samples.astype(np.int32)).reshape(-1, FRAME_BYTES // 2).max(axis=1)
    loud = peaks > NON_SILENT_PEAK
    need = SILENCE_BEFORE_SPEAKING_MS // 20
    started = False
    quiet = 0
    for index, is_loud in enumerate(loud):
        if is_loud:
            started, quiet = True, 0
            continue
        if started:
            quiet += 1
            if quiet >= need:
                greeting_end = index - quiet + 1
                speech_end = greeting_end + need + round(speech_end_s / 0.02)
                after = np.nonzero(loud[speech_end:])[0]
                return float(after[0] * 20) if len(after) else None
    return None


async def run(counts: list[int], fixture: str, console: Console) -> list[dict]:
    from ivr.telephony.ami import AmiClient
    from ivr.testing.sandbox import Sandbox, _free_port

    lang = fixture.split("/", 1)[0]
    pcm = read_wav(ROOT / "audio_fixtures" / fixture)
    speech_end = speech_end_offset_s(pcm)
    agi_port = _free_port()
    settings = bench_settings(temp_data_dir("ivr-sandbox-bench-"), max_calls=max(counts) + 5)
    settings.server.agi_port = agi_port
    services = CallServices.create(settings, with_records=True, engine_override={"en": "whisper"})
    rows = []
    sandbox = await asyncio.to_thread(Sandbox.start, agi_port=agi_port, extra_dialplan=BENCH_CALLER)
    try:
        sound = sandbox.install_sound(ROOT / "audio_fixtures" / fixture, f"bench-{lang}")
        async with InProcessServer(settings, services) as server, AmiClient(sandbox.ami_settings()) as ami:
            for n in [1, *counts]:  # the first 1 is a warm-up
                tag = uuid.uuid4().hex[:6]
                calls = []
                for i in range(n):
                    caller, ivr = str(uuid.uuid4()), str(uuid.uuid4())
                    rec = sandbox.recording_path(f"bench-{tag}-{i}")
                    ended = ami.expect_event(lambda e, c=caller: e.name == "Hangup" and e.get("Uniqueid") == c)
                    await ami.originate("Local/s@bench-caller/n", "ivr", "s", 1, channel_id=ivr,
                                        other_channel_id=caller, variables={
                                            "IVR_FLOW": "support", "IVR_LANG": lang, "BENCH_SOUND": sound,
                                            "BENCH_REC": rec})
                    calls.append((ended, rec))
                started = time.monotonic()
                await asyncio.wait_for(asyncio.gather(*(ended for ended, _ in calls)), 120)
                await asyncio.sleep(1.0)  # MixMonitor closes its files after the hang-up
                wall = time.monotonic() - started
                latencies = []
                for _, rec in calls:
                    path = sandbox.host_path(rec + "-heard.wav")
                    if path.exists():
                        value = reply_latency_ms(read_wav(path), speech_end)
                        if value is not None:
                            latencies.append(value)
                rows.append({"n": n, "heard": len(latencies), "wall_s": wall, "latencies": latencies})
                console.print(f"sandbox: {n} call(s) in {wall:.1f} s, reply measured on {len(latencies)}: "
                              f"p50 {percentile(latencies, 50) or 0:.0f} ms")
            rows = rows[1:]
            compute = [t.latency_ms for turns in server.taps.turns.values() for t in turns[:1] if not t.no_input]
            audio = list(server.taps.audio.values())
            for row in rows:
                row["server_compute_p95_ms"] = percentile(compute, 95)
            rows.append({"server_turns": len(compute), "late_frames_server": sum(a.late_frames for a in audio),
                         "frames_out_server": sum(a.frames_out for a in audio)})
    finally:
        await asyncio.to_thread(sandbox.stop)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="1,5,10")
    parser.add_argument("--fixture", default="ko/balance_1.wav")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=160)
    cond = conditions()
    counts = [int(c) for c in args.calls.split(",")]
    rows = asyncio.run(run(counts, args.fixture, console))
    table = Table(title=f"Through the sandbox Asterisk 22 - {cond['date']}, {cond['cores']} cores, {cond['cpu']}, "
                        f"fixture {args.fixture}")
    for column in ("N", "replies measured", "e2e p50 ms", "e2e p95 ms", "e2e max ms", "wall s"):
        table.add_column(column, justify="right")
    for row in rows[:-1]:
        lat = row["latencies"]
        table.add_row(str(row["n"]), f"{row['heard']}/{row['n']}", f"{percentile(lat, 50) or 0:.0f}",
                      f"{percentile(lat, 95) or 0:.0f}", f"{max(lat) if lat else 0:.0f}", f"{row['wall_s']:.1f}")
    console.print(table)
    summary = rows[-1]
    console.print(f"server: late frames >10 ms {summary['late_frames_server']}/{summary['frames_out_server']}; "
                  "e2e = reply start in the caller's recording - end of its speech (includes the 800 ms "
                  "endpointing silence and Asterisk's own buffering)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
