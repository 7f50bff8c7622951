"""`ivr talk`: try a flow with your own voice, through the local microphone and speaker.

The same pipeline as a phone call (VAD, ASR, NLU, dialog, TTS); only the line differs: the
sound device (ivr/audio/device.py) instead of Asterisk. On a machine without a sound device it
says so and suggests `ivr demo` / `ivr chat`. Use headphones, or the prompts barge in on themselves.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.console import Console

from ivr.config import LANGUAGES, Settings, load_settings
from ivr.errors import ConfigError

console = Console(highlight=False)


def _device(value: str) -> int | str:
    """A PortAudio device: its index, or a substring of its name."""
    return int(value) if value.isdigit() else value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("talk", help="talk to a flow through the microphone and speaker")
    p.add_argument("--lang", choices=LANGUAGES, help="conversation language (default: settings default_lang)")
    p.add_argument("--flow", default="support", help="flow name under flows/ (default: support)")
    p.add_argument("--input", type=_device, help="input device index or name (default: the system default)")
    p.add_argument("--output", type=_device, help="output device index or name (default: the system default)")
    p.add_argument("--rate", type=int, help="device sample rate (default: 8000 if supported, else the device's)")
    p.add_argument("--list-devices", action="store_true", help="list sound devices and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ivr.audio.device import list_devices

    if args.list_devices:
        listing = list_devices()
        console.print(listing or "no sound devices found")
        return 0 if listing else 1
    settings = load_settings(args.config)
    lang = args.lang or settings.default_lang
    if lang not in LANGUAGES:
        raise ConfigError(f"unknown language {lang!r}", fix=f"use one of {', '.join(LANGUAGES)}")
    return asyncio.run(_talk(settings, lang, args))


async def _talk(settings: Settings, lang: str, args: argparse.Namespace) -> int:
    from ivr.audio.device import DeviceParams, SoundDevice

    params = DeviceParams(input_device=args.input, output_device=args.output, sample_rate=args.rate)
    # open the device first: without one, say so before loading any speech model
    async with SoundDevice(params) as device:
        # imported here: the pipeline pulls in the speech engines
        from ivr.call import run_local_call

        console.print(
            f"[bold]ivr talk[/]: flow [cyan]{args.flow}[/] in [cyan]{lang}[/] — "
            f"mic: {device.input_name} ({device.input_rate} Hz), speaker: {device.output_name} "
            f"({device.output_rate} Hz). Speak after the greeting; Ctrl-C to hang up. Use headphones."
        )
        async def play(pcm: bytes) -> None:
            await device.play(pcm)

        # the conversation is printed as it happens
        result = await run_local_call(settings, lang, args.flow, device.frames(), play, device.stop_playback,
                                      on_say=_print_say, on_turn=_print_turn)
    console.print(f"call ended: {result.route}" + (f" ({result.reason})" if result.reason else ""))
    if result.survey_score is not None:
        console.print(f"survey score {result.survey_score}")
    if device.dropped_frames:
        console.print(f"[dim]{device.dropped_frames} microphone frame(s) dropped (the pipeline lagged)[/]")
    return 0


def _print_say(text: str) -> None:
    console.print(f"[green]assistant[/] {text}")


def _print_turn(turn: Any) -> None:  # ivr.call.TurnLog
    heard = turn.transcript or (f"#{turn.dtmf}" if turn.dtmf else "(no input)")
    console.print(f"[yellow]you[/]       {heard}  [dim]-> {turn.intent or '-'} ({turn.latency_ms:.0f} ms)[/]")
