"""`ivr replay`'s outputs, written as results arrive: a replay of any number of files keeps none.

Each writer has `add(result)` (called once per FixtureResult, in order) and `close(totals)`.
The JUnit and HTML reports need the totals at their top, known only at the end: their rows go to
a spool file next to the report while the replay runs and are copied under the header at the end.
"""

from __future__ import annotations

import html
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO, Protocol

from rich.console import Console
from rich.markup import escape

from ivr.testing.replay import FAIL, PASS, FixtureResult, Totals

# the text table's fixed columns (the transcript comes last, whole): rows printed one by one line up
COLUMNS = (("verdict", 7), ("file", 28), ("intent", 16), ("score", 6), ("latency ms", 11))


class ReportWriter(Protocol):
    def add(self, result: FixtureResult) -> None: ...

    def close(self, totals: Totals) -> None: ...


def failed_checks(result: FixtureResult) -> list[str]:
    return [f"{c.name}: expected {c.expected!r}, got {c.got!r}" for c in result.checks if c.verdict == FAIL]


def summary_line(totals: Totals) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f} ms"

    return (f"{totals.passed} passed, {totals.failed} failed, {totals.skipped} skipped of {totals.fixtures}; "
            f"WER {pct(totals.wer)}, intent accuracy {pct(totals.intent_accuracy)}, "
            f"latency p50 {ms(totals.latency_p50_ms)}, p95 {ms(totals.latency_p95_ms)}")


class TableWriter:
    """The verdict table on stdout, one row per result as it comes (fixed columns, then the text)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._header = False

    def add(self, result: FixtureResult) -> None:
        if not self._header:
            self.console.print("[bold]" + _cells([name for name, _ in COLUMNS]) + "text[/]")
            self._header = True
        colour = {PASS: "green", FAIL: "red"}.get(result.verdict, "yellow")
        cells = _cells([result.verdict, result.file, result.intent, f"{result.score:.2f}",
                        f"{result.latency_ms:.0f}" if result.latency_ms else ""])
        said = escape(result.text) if result.text else f"[dim]{escape(result.reason)}[/]"
        if result.entities:
            said += " " + escape(json.dumps(result.entities, ensure_ascii=False))
        self.console.print(f"[{colour}]{cells[:COLUMNS[0][1]]}[/]{cells[COLUMNS[0][1]:]}{said}")
        failures = failed_checks(result)
        if failures:
            self.console.print(" " * COLUMNS[0][1] + f"[red]{escape('; '.join(failures))}[/]")

    def close(self, totals: Totals) -> None:
        pass


def _cells(values: list[str]) -> str:
    """Values padded (or cut with ~) to the COLUMNS widths, markup-escaped."""
    out = []
    for value, (_name, width) in zip(values, COLUMNS, strict=True):
        text = value if len(value) < width else value[: width - 2] + "~"
        out.append(escape(text.ljust(width)))
    return "".join(out)


class _SpooledReport:
    """Rows go to `<path>.rows` while the replay runs; `close` writes head + rows + tail to `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows_path = path.with_name(path.name + ".rows")
        self._rows: IO[str] = self._rows_path.open("w", encoding="utf-8")

    def _finish(self, head: str, tail: str) -> None:
        self._rows.close()
        with self.path.open("w", encoding="utf-8") as out, self._rows_path.open(encoding="utf-8") as rows:
            out.write(head)
            shutil.copyfileobj(rows, out)
            out.write(tail)
        self._rows_path.unlink()


class JunitWriter(_SpooledReport):
    """A JUnit XML report (one testcase per result) for CI."""

    def add(self, result: FixtureResult) -> None:
        case = ET.Element("testcase", classname=f"replay.{result.call or result.lang}", name=result.file,
                          time=f"{result.latency_ms / 1000:.3f}")
        if result.verdict == FAIL:
            text = "\n".join(failed_checks(result)) or result.reason
            ET.SubElement(case, "failure", message=text.splitlines()[0] if text else "failed").text = text
        elif result.verdict != PASS:
            ET.SubElement(case, "skipped", message=result.reason)
        ET.SubElement(case, "system-out").text = json.dumps(result.to_json(), ensure_ascii=False)
        self._rows.write(ET.tostring(case, encoding="unicode"))

    def close(self, totals: Totals) -> None:
        suite = ET.Element("testsuite", name="ivr.replay", tests=str(totals.fixtures), failures=str(totals.failed),
                           skipped=str(totals.skipped))
        head = ET.tostring(suite, encoding="unicode", short_empty_elements=False).removesuffix("</testsuite>")
        self._finish("<?xml version='1.0' encoding='utf-8'?>\n" + head, "</testsuite>")


class HtmlWriter(_SpooledReport):
    """A one-page HTML report for people."""

    def add(self, result: FixtureResult) -> None:
        failures = "<br>".join(html.escape(f) for f in failed_checks(result))
        self._rows.write(
            f"<tr class='{result.verdict}'><td>{result.verdict}</td><td>{html.escape(result.file)}</td>"
            f"<td>{html.escape(result.text or result.reason)}</td><td>{html.escape(result.intent)}</td>"
            f"<td>{result.score:.2f}</td><td>{html.escape(json.dumps(result.entities, ensure_ascii=False))}</td>"
            f"<td>{result.latency_ms:.0f}</td><td>{failures}</td></tr>\n")

    def close(self, totals: Totals) -> None:
        head = f"""<!doctype html><meta charset="utf-8"><title>ivr replay</title>
<style>body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 6px}}tr.pass td:first-child{{color:green}}tr.fail td:first-child{{color:#c00;font-weight:bold}}
tr.skip td:first-child{{color:#a80}}</style>
<h1>ivr replay</h1><p>{html.escape(summary_line(totals))}</p>
<table><tr><th>verdict</th><th>file</th><th>text</th><th>intent</th><th>score</th><th>entities</th>
<th>latency ms</th><th>failed checks</th></tr>
"""
        self._finish(head, "</table>\n")


class JsonWriter:
    """One JSON object per result on stdout, then the totals."""

    def add(self, result: FixtureResult) -> None:
        print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)

    def close(self, totals: Totals) -> None:
        print(json.dumps({"totals": totals.__dict__}, ensure_ascii=False), flush=True)
