"""N simultaneous SIP callers (SIPp) through the sandbox Asterisk into the real bridge: timings.

    python bench/sip_load.py [--calls 20] [--law ulaw|alaw] [--json out.json]

Needs root (sandbox chroot, SIPp's pcap play, the loopback capture) and SIPp (`sip-tester`).
A sandbox Asterisk starts with the shipped pjsip.conf; the bridge runs in this process as `ivr serve`
runs it (warm start included); SIPp places N calls at once, each caller says "how much money is left
on my account" 3 s after the answer and listens. Per call, from what the caller heard on the wire:

- answered: SIPp got the 200 OK for its INVITE
- reply heard: the caller heard the assistant talk after its own speech ended
- records: calls written, their outcomes, and the server-side turn latency (latency_ms) p50/p95

The machine's load (uptime) is printed with the figures: this box is shared, say so when quoting them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ivr.audio.pcm import SAMPLE_RATE, duration_s, read_wav  # noqa: E402
from ivr.config import Settings  # noqa: E402
from ivr.server import AmiLink, bridge_params, conversation_handler  # noqa: E402
from ivr.services import CallServices  # noqa: E402
from ivr.telephony.bridge import Bridge  # noqa: E402
from ivr.testing.sandbox import Sandbox, _free_port  # noqa: E402
from ivr.testing.sipcaller import Pause, SippRun, Speak, place_calls, speech_spans  # noqa: E402

LEAD_MS = 3000  # the caller speaks this long after the answer
LISTEN_S = 25.0


def _pcts(values: list[float]) -> str:
    if not values:
        return "-"
    a = np.asarray(values)
    return f"p50 {np.percentile(a, 50):.0f} ms, p95 {np.percentile(a, 95):.0f} ms, max {a.max():.0f} ms (n={len(a)})"


async def _serve_and_call(sandbox: Sandbox, services: CallServices, calls: int, law: str, work: Path) -> SippRun:
    params = bridge_params(services.settings)
    params.agi_port, params.audiosocket_port = sandbox.info.agi_port, 0
    services.settings.ami = sandbox.ami_settings()
    link = AmiLink(services)
    await link.client.connect()
    bridge = Bridge(params, conversation_handler(services, link))
    await bridge.start()
    speech = read_wav(ROOT / "audio_fixtures/en/balance_1.wav")
    script = [Pause(LEAD_MS), Speak(speech), Pause(int(LISTEN_S * 1000))]
    try:
        return await asyncio.to_thread(place_calls, sandbox.info.sip_port, script, work, law=law,  # type: ignore[arg-type]
                                       calls=calls, rate_per_s=max(calls, 1), listen_s=LISTEN_S)
    finally:
        await bridge.stop(drain_timeout_s=10)
        await asyncio.sleep(1)
        await link.client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--law", choices=["ulaw", "alaw"], default="ulaw")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    speech_end_s = (LEAD_MS / 1000) + duration_s(read_wav(ROOT / "audio_fixtures/en/balance_1.wav"))
    with tempfile.TemporaryDirectory() as tmp, Sandbox.start(agi_port=_free_port()) as sandbox:
        work = Path(tmp)
        settings = Settings(call_time="2026-11-23T10:00:00")
        settings.paths.data = work
        settings.storage.url = f"sqlite:///{work / 'calls.sqlite3'}"
        services = CallServices.create(settings, engine_override={"en": "whisper"})
        asyncio.run(services.warm_up(["en"]))
        load_before = os.getloadavg()
        run = asyncio.run(_serve_and_call(sandbox, services, args.calls, args.law, work / "sipp"))
        load_after = os.getloadavg()
        services.close()
        assert services.records is not None
        store = services.records.store
        rows = store.calls()
        latencies = [t.latency_ms for c in rows for t in store.turns(c.id)[:1] if t.latency_ms]
    heard_reply = sum(any(end > speech_end_s + 0.5 for _, end in speech_spans(call.audio())) for call in run.calls)
    figures = {
        "calls": args.calls, "law": args.law, "sipp_exit": run.returncode,
        "answered": sum(c.answered for c in run.calls),
        "reply_heard": heard_reply, "records": len(rows), "outcomes": dict(Counter(c.status for c in rows)),
        "server_turn_latency_ms": sorted(round(x) for x in latencies),
        "elapsed_s": round(run.elapsed_s, 1), "load_before": load_before, "load_after": load_after,
        "cpus": os.cpu_count(), "sample_rate": SAMPLE_RATE,
    }
    print(f"{args.calls} simultaneous SIP calls ({args.law}), SIPp exit {run.returncode}, {run.elapsed_s:.1f} s")
    print(f"  answered {figures['answered']}, assistant heard talking after the caller spoke {heard_reply}, "
          f"records {len(rows)} {figures['outcomes']}")
    print(f"  server turn latency (records): {_pcts(latencies)}")
    print(f"  load average before {load_before[0]:.1f}, after {load_after[0]:.1f} on {os.cpu_count()} cores "
          "(a shared machine: other work ran beside this)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
