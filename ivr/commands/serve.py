"""`ivr serve`: run the assistant behind Asterisk (FastAGI + AudioSocket + metrics/health)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.telephony.bridge import Bridge


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the assistant behind Asterisk (FastAGI + AudioSocket)")
    p.add_argument("--host", help="listen address (default 127.0.0.1; settings server.host)")
    p.add_argument("--agi-port", type=int, help="FastAGI port (default 4573)")
    p.add_argument("--audiosocket-port", type=int, help="AudioSocket port (default 9092)")
    p.add_argument("--health-port", type=int, help="/healthz and /metrics port (default 8089)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ivr.config import load_settings
    from ivr.server import run_server

    settings = load_settings(args.config)
    for name, value in (("host", args.host), ("agi_port", args.agi_port),
                        ("audiosocket_port", args.audiosocket_port), ("health_port", args.health_port)):
        if value is not None:
            setattr(settings.server, name, value)

    def started(bridge: Bridge) -> None:
        s = settings.server
        print(f"ivr serve: node {bridge.node}, FastAGI agi://{s.host}:{bridge.agi_port}/<flow>?lang=xx, AudioSocket "
              f"{bridge.advertise}, health http://{s.host}:{s.health_port}/healthz", flush=True)

    asyncio.run(run_server(settings, started=started))
    return 0
