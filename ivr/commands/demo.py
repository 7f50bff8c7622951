"""`ivr demo`: one whole simulated call through the real pipeline, no Asterisk needed.

The caller is a multi-turn call from audio_fixtures/manifest.yaml; the assistant is the same
pipeline `ivr serve` runs (VAD, ASR, NLU, dialog with hooks on the demo subscriber database, TTS).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TYPE_CHECKING

from rich.console import Console

from ivr.commands import NOW_HELP, iso_time
from ivr.config import load_settings
from ivr.errors import ConfigError

if TYPE_CHECKING:
    from ivr.config import Settings
    from ivr.results import TurnLog
    from ivr.services import CallServices
    from ivr.testing.fixtures import Call

console = Console(highlight=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="a whole simulated call from audio_fixtures/ (no Asterisk needed)")
    p.add_argument("--call", help="manifest call to play (default: the first one a speech engine is available for)")
    p.add_argument("--lang", help="only consider calls in this language")
    p.add_argument("--realtime", action="store_true", help="run at the speed of a phone call (default: audio clock)")
    p.add_argument("--save-audio", metavar="WAV", help="write what the caller heard to this WAV file")
    p.add_argument("--list", action="store_true", help="list the calls the demo can play and exit")
    p.add_argument("--now", type=iso_time, default=None, help=NOW_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    from ivr.services import CallServices
    from ivr.testing.fixtures import load_manifest

    settings = load_settings(args.config)
    manifest = load_manifest(settings.paths.fixtures / "manifest.yaml")
    calls = [c for c in manifest.calls if not args.lang or c.lang == args.lang]
    services = CallServices.create(settings)
    try:
        return await _play(args, settings, calls, services)
    finally:
        services.close()  # TTS worker and its temporary files, record writer


async def _play(args: argparse.Namespace, settings: Settings, calls: list[Call], services: CallServices) -> int:
    from ivr.audio.pcm import write_wav
    from ivr.testing.replay import caller_turns, run_call

    if args.list:
        for call in calls:
            engine = services.asr_engine(call.lang)
            status = f"engine {engine.name}" if engine else "no speech model here"
            console.print(f"{call.name:32} {call.lang}  {status:24} {call.description}")
        return 0
    if args.call:
        chosen = next((c for c in calls if c.name == args.call), None)
        if chosen is None:
            raise ConfigError(f"no call named {args.call!r} in the manifest", fix="see `ivr demo --list`")
    else:
        chosen = next((c for c in calls if services.asr_engine(c.lang) is not None), None)
        if chosen is None:
            raise ConfigError(
                "no speech engine is available for any demo call",
                fix="install the Whisper extra (`pip install -e '.[whisper]'`) or a Vosk model (`ivr models list`)",
            )
    engine = services.asr_engine(chosen.lang)
    console.print(f"[bold]ivr demo[/]: call [cyan]{chosen.name}[/] ({chosen.lang}), caller {chosen.caller or '-'}")
    call_time = args.now or chosen.call_time
    console.print(f"speech engine: [green]{engine.name if engine else 'none (keys only)'}[/]; "
                  f"flow: {chosen.flow}; records: {settings.storage_url}")
    if call_time:
        console.print(f"[dim]placed at {call_time.isoformat(timespec='minutes')} (business hours; --now to change)[/]")
    if chosen.description:
        console.print(f"[dim]{chosen.description}[/]")
    console.print()
    labels = iter(t.file or f"keys {t.dtmf}" for t in chosen.turns)
    started = time.perf_counter()

    def on_say(text: str) -> None:
        console.print(f"[bold green]assistant[/] {text}")

    def on_turn(turn: TurnLog) -> None:
        label = next(labels, "?")
        if turn.no_input:
            said = "[dim](silence)[/]"
        elif turn.dtmf:
            said = f"[keys {turn.dtmf}]"
        else:
            said = f"“{turn.transcript}”"
        console.print(f"[bold blue]caller   [/] {said}  [dim]{label}[/]")
        entities = f" {turn.entities}" if turn.entities else ""
        console.print(
            f"[dim]          → {turn.intent or '-'} ({turn.score:.2f}){entities}; asr {turn.asr_ms:.0f} ms, "
            f"nlu {turn.nlu_ms:.1f} ms, dialog {turn.dialog_ms:.1f} ms, tts {turn.tts_ms:.0f} ms, "
            f"reply {turn.latency_ms:.0f} ms after end of speech was detected "
            f"({turn.endpoint_ms:.0f} ms of silence){' (barge-in)' if turn.barge_in else ''}[/]"
        )

    result, line = await run_call(services, chosen.lang, caller_turns(chosen), flow=chosen.flow,
                                  caller_id=chosen.caller, realtime=args.realtime,
                                  call_time=call_time, on_turn=on_turn, on_say=on_say)
    console.print()
    outcome = f"handed off to [bold]{result.route}[/]" if result.handed_off else f"ended: {result.route}"
    console.print(f"call {result.call_id}: {outcome} (reason: {result.reason}), {len(result.turns)} turns, "
                  f"{time.perf_counter() - started:.1f} s wall clock")
    if result.summary:
        console.print(f"summary for the agent: {result.summary}")
    expected = "as expected" if result.route == chosen.route else f"[red]expected {chosen.route}[/]"
    console.print(f"route {expected}; call record written to {settings.storage_url}")
    if args.save_audio:
        write_wav(args.save_audio, bytes(line.heard))
        console.print(f"what the caller heard: {args.save_audio}")
    return 0 if result.route == chosen.route else 1
