"""`ivr replay`: recorded caller audio through the full pipeline, with a verdict per expectation."""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ivr.commands import NOW_HELP, iso_time
from ivr.config import LANGUAGES, load_settings
from ivr.errors import ConfigError

if TYPE_CHECKING:
    from ivr.testing.replay import FixtureResult, Totals

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
    from ivr.testing.fixtures import Call, Fixture, load_manifest
    from ivr.testing.replay import FAIL, PASS, Totals, replay_all, wav_fixture

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
    total = len(fixtures) + sum(len(c.turns) + 1 for c in calls)

    progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err, transient=True)

    def on_result(result: FixtureResult) -> None:
        progress.update(task, advance=1, description=result.file)
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)

    with progress:
        task = progress.add_task("", total=total)
        try:
            results = await replay_all(services, fixtures, calls, by_file.get, progress=on_result,
                                       call_time=args.now)
        finally:
            services.close()
    totals = Totals.of(results)
    if args.json:
        print(json.dumps({"totals": totals.__dict__}, ensure_ascii=False))
    else:
        _print_table(results, PASS, FAIL)
    _print_totals(totals)
    if args.junit:
        _write_junit(Path(args.junit), results)
    if args.html:
        _write_html(Path(args.html), results, totals)
    return 1 if totals.failed else 0


def _print_table(results: list[FixtureResult], passed: str, failed: str) -> None:
    out = Console(highlight=False)
    table = Table(show_lines=False)
    for col in ("verdict", "file", "text", "intent", "score", "entities", "latency ms"):
        table.add_column(col)
    colour = {passed: "green", failed: "red"}
    for r in results:
        failures = "; ".join(f"{c.name}: expected {c.expected!r}, got {c.got!r}" for c in r.checks
                             if c.verdict == failed)
        table.add_row(f"[{colour.get(r.verdict, 'yellow')}]{r.verdict}[/]", r.file,
                      r.text or f"[dim]{r.reason}[/]", r.intent, f"{r.score:.2f}",
                      json.dumps(r.entities, ensure_ascii=False) if r.entities else "",
                      f"{r.latency_ms:.0f}" if r.latency_ms else "")
        if failures:
            table.add_row("", "", f"[red]{failures}[/]", "", "", "", "")
    out.print(table)


def _print_totals(totals: Totals) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f} ms"

    err.print(
        f"[bold]{totals.passed} passed, {totals.failed} failed, {totals.skipped} skipped[/] of {totals.fixtures}; "
        f"WER {pct(totals.wer)}, intent accuracy {pct(totals.intent_accuracy)}, "
        f"latency p50 {ms(totals.latency_p50_ms)}, p95 {ms(totals.latency_p95_ms)}"
    )
    for reason, n in totals.skipped_reasons.items():
        err.print(f"[yellow]skipped {n}[/]: {reason}")


def _write_junit(path: Path, results: list[FixtureResult]) -> None:
    suite = ET.Element("testsuite", name="ivr.replay", tests=str(len(results)),
                       failures=str(sum(r.verdict == "fail" for r in results)),
                       skipped=str(sum(r.verdict == "skip" for r in results)))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"replay.{r.call or r.lang}", name=r.file,
                             time=f"{r.latency_ms / 1000:.3f}")
        if r.verdict == "fail":
            text = "\n".join(f"{c.name}: expected {c.expected!r}, got {c.got!r}" for c in r.checks
                             if c.verdict == "fail") or r.reason
            ET.SubElement(case, "failure", message=text.splitlines()[0] if text else "failed").text = text
        elif r.verdict == "skip":
            ET.SubElement(case, "skipped", message=r.reason)
        ET.SubElement(case, "system-out").text = json.dumps(r.to_json(), ensure_ascii=False)
    path.write_text(ET.tostring(suite, encoding="unicode", xml_declaration=True))


def _write_html(path: Path, results: list[FixtureResult], totals: Totals) -> None:
    rows = []
    for r in results:
        failures = "<br>".join(html.escape(f"{c.name}: expected {c.expected!r}, got {c.got!r}")
                               for c in r.checks if c.verdict == "fail")
        rows.append(
            f"<tr class='{r.verdict}'><td>{r.verdict}</td><td>{html.escape(r.file)}</td>"
            f"<td>{html.escape(r.text or r.reason)}</td><td>{html.escape(r.intent)}</td><td>{r.score:.2f}</td>"
            f"<td>{html.escape(json.dumps(r.entities, ensure_ascii=False))}</td><td>{r.latency_ms:.0f}</td>"
            f"<td>{failures}</td></tr>"
        )
    summary = html.escape(
        f"{totals.passed} passed, {totals.failed} failed, {totals.skipped} skipped of {totals.fixtures}; "
        f"WER {'-' if totals.wer is None else f'{100 * totals.wer:.1f}%'}, intent accuracy "
        f"{'-' if totals.intent_accuracy is None else f'{100 * totals.intent_accuracy:.1f}%'}, latency p50 "
        f"{'-' if totals.latency_p50_ms is None else f'{totals.latency_p50_ms:.0f} ms'}, p95 "
        f"{'-' if totals.latency_p95_ms is None else f'{totals.latency_p95_ms:.0f} ms'}"
    )
    path.write_text(f"""<!doctype html><meta charset="utf-8"><title>ivr replay</title>
<style>body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 6px}}tr.pass td:first-child{{color:green}}tr.fail td:first-child{{color:#c00;font-weight:bold}}
tr.skip td:first-child{{color:#a80}}</style>
<h1>ivr replay</h1><p>{summary}</p>
<table><tr><th>verdict</th><th>file</th><th>text</th><th>intent</th><th>score</th><th>entities</th>
<th>latency ms</th><th>failed checks</th></tr>{''.join(rows)}</table>
""")
    if sys.stdout.isatty():
        err.print(f"HTML report: {path}")
