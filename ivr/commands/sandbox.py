"""`ivr sandbox up|down|status`: a throwaway Asterisk 22 on loopback (chroot; needs root)."""

from __future__ import annotations

import argparse

from rich.console import Console

console = Console(highlight=False, soft_wrap=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sandbox", help="a throwaway Asterisk 22 on loopback for development (root)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="build (first time, ~30 s) and start an instance; print its endpoints")
    up.add_argument("--name", default="default", help="instance name (several can run at once)")
    up.add_argument("--agi-port", type=int, help="where the dialplan dials the bridge (default: settings)")
    up.add_argument("--audiosocket-port", type=int, help="the bridge's AudioSocket port (default: settings)")
    up.add_argument("--ami-port", type=int, help="AMI port (default: a free one)")
    down = sub.add_parser("down", help="stop an instance and remove its files")
    down.add_argument("--name", default="default")
    sub.add_parser("status", help="list instances and whether they run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ivr.config import load_settings
    from ivr.testing import sandbox

    if args.action == "status":
        instances = sandbox.list_instances()
        if not instances:
            console.print("no sandbox instances (start one with `ivr sandbox up`)")
        for info, alive in instances:
            state = "[green]running[/]" if alive else "[red]dead[/] (run `ivr sandbox down` to clean up)"
            console.print(f"{info.name}: {state} pid {info.pid}, AMI 127.0.0.1:{info.ami_port}, "
                          f"AGI -> 127.0.0.1:{info.agi_port}")
        return 0
    if args.action == "down":
        found = sandbox.load_info(args.name)
        if found is None:
            console.print(f"no sandbox named {args.name!r}")
            return 1
        sandbox.Sandbox(found, "").stop()
        console.print(f"sandbox {args.name} stopped")
        return 0
    settings = load_settings(args.config)
    instance = sandbox.Sandbox.start(
        name=args.name,
        agi_port=args.agi_port or settings.server.agi_port,
        audiosocket_port=args.audiosocket_port or settings.server.audiosocket_port,
        ami_port=args.ami_port,
        detach=True,
    )
    console.print(f"sandbox {instance.name}: Asterisk ready (pid {instance.info.pid})")
    for label, value in instance.endpoints().items():
        console.print(f"  {label}: {value}")
    console.print(
        "  run the bridge against it with:\n"
        f"    IVR_AMI_ENABLED=1 IVR_AMI_PORT={instance.ami_port} IVR_AMI_SECRET_FILE={instance.info.secret_file} "
        f"IVR_AGI_PORT={instance.info.agi_port} IVR_AUDIOSOCKET_PORT={instance.info.audiosocket_port} ivr serve\n"
        f"  call it over SIP (SIPp, as the provider trunk): sipp -sn uac -s 100 127.0.0.1:{instance.info.sip_port}\n"
        f"  stop it with: ivr sandbox down --name {instance.name}"
    )
    return 0
