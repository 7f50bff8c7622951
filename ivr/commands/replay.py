"""`ivr replay`: recorded caller audio through the full pipeline, with a verdict per expectation."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ivr.commands import NOW_HELP, iso_time
from ivr.config import LANGUAGES, load_settings
from ivr.errors import ConfigError

if TYPE_CHECKING:
    from ivr.services import CallServices
    from ivr.testing.fixtures import Call, Fixture
    from ivr.testing.replay import Totals

err = Console(stderr=True, highlight=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("replay", help="replay recorded caller audio through the pipeline and judge it")
    p.add_argument("inputs", nargs="*", metavar="FILES|MANIFEST",
                   help="WAV files and/or manifest.yaml files (default: audio_fixtures/manifest.yaml)")
    p.add_argument("--lang", choices=LANGUAGES, help="only this language (and the language of bare WAV files)")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--html", metavar="FILE", help="write an HTML report")
    p.add_argument("--calls-only", action="store_true", help="only the multi-turn calls of the manifest")
    p.add_argument("--fixtures-only", action="store_true", help="only the single-utterance fixtures")
    p.add_argument("--engine", choices=("auto", "vosk", "whisper"), help="force the ASR engine")
    p.add_argument("--now", type=iso_time, default=None, help=NOW_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_replay(args))


async def _replay(args: argparse.Namespace) -> int:
    from ivr.services import CallServices
    from ivr.testing.fixtures import load_manifest
    from ivr.testing.replay import wav_fixture
    from ivr.testing.reports import summary_line

    settings = load_settings(args.config)
    fixtures: list[Fixture] = []
    calls: list[Call] = []
    by_file: dict[str, Fixture] = {}
    inputs = args.inputs or [str(settings.paths.fixtures / "manifest.yaml")]
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() in (".yaml", ".yml"):
            manifest = load_manifest(path)
            if args.lang:
                manifest = manifest.for_lang(args.lang)
            fixtures += manifest.fixtures
            calls += manifest.calls
            by_file.update({f.file: f for f in manifest.fixtures})
        elif path.suffix.lower() == ".wav":
            fixtures.append(wav_fixture(path, args.lang or settings.default_lang))
        else:
            raise ConfigError(f"{item}: expected a .wav file or a manifest .yaml", fix="check the arguments")
    if args.calls_only:
        fixtures = []
    if args.fixtures_only:
        calls = []
    override = {lang: args.engine for lang in LANGUAGES} if args.engine else None
    services = CallServices.create(settings, engine_override=override)
    try:
        totals = await stream_replay(services, fixtures, calls, by_file, args)
    finally:
        services.close()
    err.print(f"[bold]{summary_line(totals)}[/]")
    for reason, n in totals.skipped_reasons.items():
        err.print(f"[yellow]skipped {n}[/]: {reason}")
    if args.html and sys.stdout.isatty():
        err.print(f"HTML report: {args.html}")
    return 1 if totals.failed else 0


async def stream_replay(services: CallServices, fixtures: list[Fixture], calls: list[Call],
                        by_file: dict[str, Fixture], args: argparse.Namespace) -> Totals:
    """Replay everything, handing each result to the outputs as it is judged (nothing is kept: memory
    stays flat over any number of files); returns the Totals."""
    from ivr.testing.replay import Tally, replay_iter
    from ivr.testing.reports import HtmlWriter, JsonWriter, JunitWriter, ReportWriter, TableWriter

    writers: list[ReportWriter] = [JsonWriter() if args.json else TableWriter()]
    if args.junit:
        writers.append(JunitWriter(Path(args.junit)))
    if args.html:
        writers.append(HtmlWriter(Path(args.html)))
    tally = Tally()
    total = len(fixtures) + sum(len(c.turns) + 1 for c in calls)
    progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err, transient=True)
    with progress:
        task = progress.add_task("", total=total)
        async for result in replay_iter(services, fixtures, calls, by_file.get, call_time=args.now):
            progress.update(task, advance=1, description=result.file)
            tally.add(result)
            for writer in writers:
                writer.add(result)
    totals = tally.totals()
    for writer in writers:
        writer.close(totals)
    return totals
