"""`ivr call`: the manifest's multi-turn calls through a real Asterisk, with a verdict per call.

Two modes:
- `--sandbox` (default): a throwaway Asterisk (`ivr sandbox`) is started, or the running one named
  by `--sandbox-name` is used; the assistant runs in this process on the sandbox's AGI port.
- `--asterisk`: your own Asterisk, reached over AMI (settings `ami:` / IVR_AMI_*), with
  asterisk/extensions_test_caller.conf installed and `ivr serve` running against the same call
  record database; `--sounds-dir` is where the fixture WAVs are on the Asterisk host.

Each call: AMI Originate of Local/s@ivr-test-turns, whose caller half says the turns after each
prompt and records what it heard; the verdict compares the call record (intents per turn, route)
with the manifest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ivr.config import Settings, load_settings
from ivr.errors import ConfigError, IvrError

if TYPE_CHECKING:
    from ivr.services import CallServices
    from ivr.storage.records import CallStore
    from ivr.telephony.ami import AmiClient
    from ivr.testing.fixtures import Call

console = Console(highlight=False)
CALL_TIMEOUT_S = 240


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("call", help="replay manifest calls through a real Asterisk (sandbox or yours)")
    p.add_argument("names", nargs="*", help="manifest call names (default: every call a speech engine is here for)")
    p.add_argument("--lang", help="only calls in this language")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sandbox", action="store_true", default=True, help="use a sandbox Asterisk (default)")
    mode.add_argument("--asterisk", action="store_true", help="use your Asterisk via AMI (settings ami:)")
    p.add_argument("--sandbox-name", help="use this running sandbox (`ivr sandbox up --name N`) instead of a new one")
    p.add_argument("--sounds-dir", help="--asterisk: folder holding audio_fixtures/ on the Asterisk host")
    p.add_argument("--out", default="out/calls", help="sandbox: where to copy what each caller heard (WAV)")
    p.add_argument("--barge-in", action="store_true", help="say each call's barge_in turn over the prompt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from ivr.services import CallServices
    from ivr.testing.fixtures import load_manifest

    settings = load_settings(args.config)
    manifest = load_manifest(settings.paths.fixtures / "manifest.yaml")
    calls = [c for c in manifest.calls if (not args.names or c.name in args.names)
             and (not args.lang or c.lang == args.lang)]
    intents = {f.file: f.intent for f in manifest.fixtures}
    unknown = set(args.names) - {c.name for c in manifest.calls}
    if unknown:
        raise ConfigError(f"no call named {', '.join(sorted(unknown))} in the manifest", fix="see `ivr demo --list`")
    if args.asterisk:
        if not args.sounds_dir:
            raise ConfigError("--asterisk needs --sounds-dir", fix="copy audio_fixtures/ to the Asterisk host")
        return await _on_asterisk(args, settings, calls, intents)
    services = CallServices.create(settings)
    if not args.names:
        calls = [c for c in calls if services.asr_engine(c.lang) is not None]
    try:
        return await _on_sandbox(args, services, calls, intents)
    finally:
        services.close()


async def _on_sandbox(args: argparse.Namespace, services: CallServices, calls: list[Call],
                      intents: dict[str, str | None]) -> int:
    import shutil

    from ivr.server import bridge_params, conversation_handler
    from ivr.telephony.ami import AmiClient
    from ivr.telephony.bridge import Bridge
    from ivr.testing.sandbox import Sandbox, _free_port

    sandbox = Sandbox.attach(args.sandbox_name) if args.sandbox_name else Sandbox.start(agi_port=_free_port())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = bridge_params(services.settings)
    params.agi_port, params.audiosocket_port = sandbox.info.agi_port, 0
    bridge = Bridge(params, conversation_handler(services))
    await bridge.start()
    console.print(f"sandbox Asterisk {sandbox.name}: AMI 127.0.0.1:{sandbox.ami_port}; bridge on AGI port "
                  f"{bridge.agi_port}; records {services.settings.storage_url}")
    failed = 0
    if services.records is None:  # CallServices.create writes records unless told not to
        raise IvrError("ivr call needs the call records to judge the calls", fix="create the services with records")
    store = services.records.store
    try:
        async with AmiClient(sandbox.ami_settings()) as ami:
            for call in calls:
                sounds = [sandbox.install_sound(t.path, name=f"{call.name}-{i}") if t.file else f"dtmf:{t.dtmf}"
                          for i, t in enumerate(call.turns)]
                services.settings.call_time = call.call_time  # the bridge judges business hours as the manifest says
                record = sandbox.recording_path(call.name)
                heard = sandbox.host_path(record + ".wav")
                uniqueid = await _one_call(ami, call, sounds, record, heard, args.barge_in)
                await _wait_closed(store, uniqueid)
                failed += not _verdict(store, call, uniqueid, intents)
                if heard.exists():
                    shutil.copy(heard, out / f"{call.name}.wav")
    finally:
        await bridge.stop(drain_timeout_s=10)
        if not args.sandbox_name:
            sandbox.stop()
    console.print(f"{len(calls) - failed} passed, {failed} failed; what each caller heard: {out}/")
    return 1 if failed else 0


async def _on_asterisk(args: argparse.Namespace, settings: Settings, calls: list[Call],
                       intents: dict[str, str | None]) -> int:
    from ivr.storage.records import CallStore
    from ivr.telephony.ami import AmiClient

    store = CallStore(settings.storage_url)
    failed = 0
    async with AmiClient(settings.ami) as ami:
        for call in calls:
            sounds = [str(Path(args.sounds_dir) / Path(t.file).with_suffix("")) if t.file else f"dtmf:{t.dtmf}"
                      for t in call.turns]
            uniqueid = await _one_call(ami, call, sounds, "", None, args.barge_in)
            await _wait_closed(store, uniqueid)
            failed += not _verdict(store, call, uniqueid, intents)
    console.print(f"{len(calls) - failed} passed, {failed} failed")
    return 1 if failed else 0


async def _one_call(ami: AmiClient, call: Call, sounds: list[str], record: str, heard: Path | None,
                    barge_in: bool) -> str:
    from ivr.testing.testcall import originate_turns

    barge = next((i + 1 for i, t in enumerate(call.turns) if t.barge_in), 0) if barge_in else 0
    console.print(f"[bold]{call.name}[/] ({call.lang}, {len(sounds)} turns)…")
    test_call = await originate_turns(ami, sounds, flow=call.flow, lang=call.lang, record=record, heard_wav=heard,
                                      caller_id=call.caller, barge_in_turn=barge, wait_s=10)
    with contextlib.suppress(TimeoutError):
        await test_call.wait_ended(CALL_TIMEOUT_S)
    return test_call.ivr_uniqueid


async def _wait_closed(store: CallStore, uniqueid: str, timeout_s: float = 15.0) -> None:
    """The assistant closes the record just after the caller's side hangs up: give it a moment."""
    for _ in range(int(timeout_s * 10)):
        record = store.call(uniqueid)
        if record is not None and record.ended_at is not None:
            return
        await asyncio.sleep(0.1)


def _verdict(store: CallStore, call: Call, uniqueid: str, intents: dict[str, str | None]) -> bool:
    """Compare the call record with the manifest call; `intents`: fixture file -> expected intent."""
    record = store.call(uniqueid)
    if record is None:
        console.print(f"  [red]fail[/]: no call record for {uniqueid} (is the assistant reachable? `ivr serve`)")
        return False
    turns = store.turns(uniqueid)
    ok = True
    for i, expected in enumerate(call.turns):
        got = turns[i] if i < len(turns) else None
        want = expected.intent
        if want is None and expected.file in intents:
            want = intents[expected.file]
        said = f"keys {got.dtmf}" if got and got.dtmf else f"“{got.transcript}”" if got else ""
        text = f"{said} → {got.intent}" if got else "(no turn)"
        good = got is not None and (want is None or got.intent == want)
        if expected.dtmf and len(expected.dtmf) == 1:  # the key must have reached the assistant
            good = good and got is not None and got.dtmf == expected.dtmf
            want = want or f"keys {expected.dtmf}"
        ok &= good
        console.print(f"  turn {i + 1}: {text}  {'[green]ok[/]' if good else f'[red]expected {want}[/]'}")
    route_ok = record.route == call.route
    ok &= route_ok
    console.print(f"  route: {record.route} ({record.handoff_reason}) "
                  f"{'[green]ok[/]' if route_ok else f'[red]expected {call.route}[/]'}")
    return ok
