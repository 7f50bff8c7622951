"""`ivr prompts build|list`: render the fixed prompts (prompts/<lang>.yaml, faq/ answers) once; list the cache."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prompts", help="render fixed prompts to audio (build) or list the cache")
    sub = p.add_subparsers(dest="prompts_command", metavar="ACTION")
    build = sub.add_parser("build", help="render every fixed prompt not yet cached (keyed by text, voice, engine)")
    build.add_argument("--lang", action="append", help="en, ru or ko (repeatable; default: every prompts/*.yaml)")
    build.add_argument("--keep-stale", action="store_true", help="do not delete audio of changed prompts")
    build.set_defaults(func=run)
    listing = sub.add_parser("list", help="list the rendered prompts on disk")
    listing.add_argument("--lang", action="append", help="only these languages")
    listing.set_defaults(func=run)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ivr.config import load_settings
    from ivr.tts.cache import PromptCache
    from ivr.tts.engine import TtsEngine

    settings = load_settings(args.config)
    console = Console(highlight=False)
    action = getattr(args, "prompts_command", None)
    if action is None:
        console.print("usage: ivr prompts build [--lang L] | ivr prompts list [--lang L]")
        return 2
    with TtsEngine() as engine:
        cache = PromptCache(settings.paths.prompts, engine, knowledge_dir=settings.paths.faq)
        if action == "build":
            langs = args.lang or cache.prompt_langs()
            if not langs:
                console.print(f"no prompt files (prompts/<lang>.yaml) in {cache.prompts_dir}")
                return 1
            table = Table(title=f"ivr prompts build ({engine.version})")
            for column in ("lang", "fixed", "rendered", "cached", "dynamic", "removed", "audio", "time", "ms/prompt"):
                table.add_column(column, justify="left" if column == "lang" else "right")
            for lang in langs:
                stats = cache.build(lang, prune=not args.keep_stale)
                per = sum(stats.render_ms) / len(stats.render_ms) if stats.render_ms else None
                table.add_row(
                    lang,
                    str(stats.prompts),
                    str(stats.rendered),
                    str(stats.cached),
                    str(stats.skipped),
                    str(stats.removed),
                    f"{stats.audio_bytes / 1024:.0f} KiB",
                    f"{stats.seconds:.2f} s",
                    "-" if per is None else f"{per:.0f}",
                )
            console.print(table)
            console.print(f"cache: {cache.cache_dir}")
            return 0
        entries = cache.entries()
        if args.lang:
            entries = [e for e in entries if e.lang in args.lang]
        table = Table(title=f"rendered prompts in {cache.cache_dir}")
        for column in ("lang", "prompt", "seconds", "text", "current"):
            table.add_column(column, justify="right" if column == "seconds" else "left")
        for entry in entries:
            current = entry.engine == engine.version
            table.add_row(
                entry.lang,
                entry.prompt_id,
                f"{entry.duration_ms / 1000:.1f}",
                entry.text,
                "yes" if current else "stale",
            )
        console.print(table)
        console.print(f"{len(entries)} prompts, {sum(e.bytes for e in entries) / 1024:.0f} KiB")
        recorded = sorted((cache.prompts_dir / "recorded").glob("*/*.wav"))
        if args.lang:
            recorded = [p for p in recorded if p.parent.name in args.lang]
        if recorded:
            names = ", ".join(f"{p.parent.name}/{p.stem}" for p in recorded)
            console.print(f"recorded (played instead of TTS): {names}")
        return 0
