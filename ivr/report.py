"""Analytics over the call records: what `ivr report` prints, writes as JSON, or renders as HTML.

Definitions (also in the README):
- outcomes (ivr/outcomes.py): contained (served by the assistant, no human: the flow ended the
  call, or the caller hung up after being served), transferred (handed to the live line),
  abandoned (the caller hung up before being served), failed (the assistant broke down).
- containment rate = contained / ended calls (contained + transferred + abandoned + failed);
  active calls are not counted.
- transfer reasons: `handoff_reason` of the transferred calls.
- intent distribution: the call-level intent (the main thing the caller wanted).
- no-match / no-input rates: share of turns with that flag.
- turn latency: `latency_ms` of the turns that have one (end of caller speech to first
  audio out); percentiles by linear interpolation (numpy's default).
- CSAT: the 1-5 survey score, average and distribution.
- NPS-style score from CSAT: promoters = 5, passives = 4, detractors = 1-3;
  score = % promoters - % detractors (-100..100). A mapping, not a real 0-10 NPS question.
- knowledge-base containment per entry: of the ended calls that heard that answer (event
  `faq_answered`), the share contained (a caller who hangs up after hearing the answer was
  served). A call counts once per entry however often it heard it; `transferred` counts those
  that still went to a human (any reason).
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ivr.errors import ConfigError
from ivr.outcomes import ABANDONED, CONTAINED, FAILED, OUTCOMES, TRANSFERRED
from ivr.storage.records import ACTIVE, FAQ_ANSWERED, CallRecord, EventRecord, TurnRecord

PROMOTER_MIN = 5  # CSAT 5 -> promoter
DETRACTOR_MAX = 3  # CSAT 1..3 -> detractor; 4 is passive
CSAT_SCALE = (1, 2, 3, 4, 5)
PERCENTILES = (50, 95)


@dataclass
class Report:
    """Everything `ivr report` shows, computed from calls and turns."""

    since: datetime | None
    until: datetime
    calls: int = 0
    ended: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # status -> calls
    containment_rate: float | None = None
    transfer_reasons: dict[str, int] = field(default_factory=dict)
    intents: dict[str, int] = field(default_factory=dict)
    langs: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)  # bridge node -> calls (several nodes, one database)
    turns: int = 0
    no_match_rate: float | None = None
    no_input_rate: float | None = None
    barge_in_rate: float | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # p50, p95, max, count
    csat_count: int = 0
    csat_avg: float | None = None
    csat_dist: dict[int, int] = field(default_factory=dict)
    nps: dict[str, float | int | None] = field(default_factory=dict)  # promoters, passives, detractors, score
    calls_per_hour: dict[str, int] = field(default_factory=dict)  # "2026-05-01T09" -> calls
    # knowledge base: entry -> {topic, calls, contained, transferred, containment_rate} (module docstring)
    faq: dict[str, dict[str, Any]] = field(default_factory=dict)
    faq_topics: dict[str, dict[str, Any]] = field(default_factory=dict)  # the same per topic (entry groups)
    faq_calls: int = 0  # ended calls that heard at least one knowledge-base answer
    faq_containment_rate: float | None = None
    latencies: list[float] = field(default_factory=list, repr=False)  # raw, for the histogram

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latencies")
        data["since"] = self.since.isoformat() if self.since else None
        data["until"] = self.until.isoformat()
        data["csat_dist"] = {str(k): v for k, v in self.csat_dist.items()}
        return data


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """'1d', '7d', '12h', '30m', an ISO date/time (UTC if no zone), or 'all'/None (no bound)."""
    now = now or datetime.now(UTC)
    if value is None or value.strip().lower() in ("", "all"):
        return None
    text = value.strip().lower()
    match = re.fullmatch(r"(\d+)\s*([dhmw])", text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        unit_name = {"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}[unit]
        return now - timedelta(**{unit_name: amount})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"cannot read --since {value!r}",
            fix="use a duration like 1d, 7d, 12h, or an ISO time like 2026-05-01T00:00",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def compute(
    calls: list[CallRecord],
    turns: list[TurnRecord],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    events: list[EventRecord] | None = None,
) -> Report:
    """The report over `calls`, their `turns` and `events` (only `faq_answered` ones are used; pure: no I/O)."""
    report = Report(since=since, until=until or datetime.now(UTC), calls=len(calls))
    status = Counter(c.status for c in calls)
    report.outcomes = {s: status.get(s, 0) for s in (*OUTCOMES, ACTIVE)}
    report.ended = sum(n for s, n in status.items() if s != ACTIVE)
    report.containment_rate = _rate(status.get(CONTAINED, 0), report.ended)
    report.transfer_reasons = dict(
        Counter(c.handoff_reason or "unspecified" for c in calls if c.status == TRANSFERRED).most_common()
    )
    report.intents = dict(Counter(c.intent or "none" for c in calls).most_common())
    report.langs = dict(Counter(c.lang or "?" for c in calls).most_common())
    report.nodes = dict(Counter(c.node or "-" for c in calls).most_common())
    report.calls_per_hour = _per_hour([c.started_at for c in calls])

    report.turns = len(turns)
    report.no_match_rate = _rate(sum(t.no_match for t in turns), len(turns))
    report.no_input_rate = _rate(sum(t.no_input for t in turns), len(turns))
    report.barge_in_rate = _rate(sum(t.barge_in for t in turns), len(turns))
    report.latencies = [t.latency_ms for t in turns if t.latency_ms is not None]
    if report.latencies:
        values = np.asarray(report.latencies, dtype=float)
        report.latency_ms = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
        report.latency_ms["max"] = float(values.max())
    else:
        report.latency_ms = {name: None for name in (*(f"p{p}" for p in PERCENTILES), "max")}
    report.latency_ms["count"] = len(report.latencies)

    scores = [c.survey_score for c in calls if c.survey_score is not None]
    report.csat_count = len(scores)
    report.csat_avg = sum(scores) / len(scores) if scores else None
    report.csat_dist = {s: scores.count(s) for s in CSAT_SCALE}
    promoters = sum(s >= PROMOTER_MIN for s in scores)
    detractors = sum(s <= DETRACTOR_MAX for s in scores)
    report.nps = {
        "promoters": promoters,
        "passives": len(scores) - promoters - detractors,
        "detractors": detractors,
        "score": round(100 * (promoters - detractors) / len(scores), 1) if scores else None,
    }
    _knowledge_containment(report, calls, events or [])
    return report


def _knowledge_containment(report: Report, calls: list[CallRecord], events: list[EventRecord]) -> None:
    """Per knowledge-base entry: ended calls that heard it, how many stayed with the assistant."""
    status = {c.id: c.status for c in calls if c.status != ACTIVE}
    heard: dict[str, set[str]] = {}
    by_topic: dict[str, set[str]] = {}
    topic_of: dict[str, str] = {}
    for event in events:
        entry = str(event.data.get("entry", "")) if event.kind == FAQ_ANSWERED else ""
        if entry and event.call_id in status:
            heard.setdefault(entry, set()).add(event.call_id)
            topic_of[entry] = str(event.data.get("topic", "")) or entry
            by_topic.setdefault(topic_of[entry], set()).add(event.call_id)

    def rows(groups: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, call_ids in groups.items():
            contained = sum(status[c] == CONTAINED for c in call_ids)
            out[name] = {"calls": len(call_ids), "contained": contained,
                         "transferred": sum(status[c] == TRANSFERRED for c in call_ids),
                         "containment_rate": _rate(contained, len(call_ids))}
        return dict(sorted(out.items(), key=lambda kv: (-int(kv[1]["calls"]), kv[0])))

    report.faq = {entry: {"topic": topic_of[entry], **row} for entry, row in rows(heard).items()}
    report.faq_topics = rows(by_topic)
    answered = set().union(*heard.values()) if heard else set()
    report.faq_calls = len(answered)
    report.faq_containment_rate = _rate(sum(status[c] == CONTAINED for c in answered), len(answered))


def _per_hour(times: list[datetime]) -> dict[str, int]:
    """Calls per UTC hour from the first to the last, quiet hours included as 0."""
    if not times:
        return {}
    hours = Counter(t.astimezone(UTC).replace(minute=0, second=0, microsecond=0) for t in times)
    out, hour, last = {}, min(hours), max(hours)
    while hour <= last:
        out[hour.strftime("%Y-%m-%dT%H")] = hours.get(hour, 0)
        hour += timedelta(hours=1)
    return out


def build_report(store: Any, since: datetime | None = None, until: datetime | None = None) -> Report:
    """Read calls and turns from a CallStore and compute the report."""
    return compute(store.calls(since=since, until=until), store.turns_since(since, until), since=since, until=until,
                   events=store.events_since(since, until, kind=FAQ_ANSWERED))


# ---- terminal ------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def print_report(report: Report, console: Any = None) -> None:
    """Rich tables on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    window = f"since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "all time"
    summary = Table(title=f"Calls ({window})", show_header=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    rows = [
        ("calls", str(report.calls)),
        ("ended", str(report.ended)),
        ("containment rate", _pct(report.containment_rate)),
        *((f"  {status}", str(n)) for status, n in report.outcomes.items()),
        ("turns", str(report.turns)),
        ("no-match rate (turns)", _pct(report.no_match_rate)),
        ("no-input rate (turns)", _pct(report.no_input_rate)),
        ("barge-in rate (turns)", _pct(report.barge_in_rate)),
        ("turn latency p50", _ms(report.latency_ms.get("p50"))),
        ("turn latency p95", _ms(report.latency_ms.get("p95"))),
        ("turn latency max", _ms(report.latency_ms.get("max"))),
        ("CSAT average (1-5)", "-" if report.csat_avg is None else f"{report.csat_avg:.2f} (n={report.csat_count})"),
        ("NPS-style score", "-" if report.nps.get("score") is None else f"{report.nps['score']:+.1f}"),
        ("calls answered from the knowledge base", str(report.faq_calls)),
        ("  of those contained", _pct(report.faq_containment_rate)),
    ]
    for name, value in rows:
        summary.add_row(name, value)
    console.print(summary)
    for title, counts in (
        ("Transfer reasons", report.transfer_reasons),
        ("Intents", report.intents),
        ("CSAT distribution", {str(k): v for k, v in report.csat_dist.items()}),
        *([("Bridge nodes", report.nodes)] if len(report.nodes) > 1 else []),
    ):
        table = Table(title=title)
        table.add_column("value")
        table.add_column("calls", justify="right")
        table.add_column("share", justify="right")
        total = sum(counts.values())
        for key, n in counts.items():
            table.add_row(key, str(n), _pct(_rate(n, total)))
        if not counts:
            table.add_row("none", "0", "-")
        console.print(table)
    for title, groups in (("entry", report.faq), ("topic", report.faq_topics)):
        table = Table(title=f"Knowledge base: containment per {title}")
        for column in (title, "calls", "contained", "transferred", "containment"):
            table.add_column(column, justify="left" if column == title else "right")
        for name, row in groups.items():
            table.add_row(name, str(row["calls"]), str(row["contained"]), str(row["transferred"]),
                          _pct(row["containment_rate"]))
        if not groups:
            table.add_row("none", "0", "0", "0", "-")
        console.print(table)


# ---- HTML ----------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(report: Report) -> dict[str, str]:
    """Base64 PNG plots by title (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}

    def bars(title: str, counts: dict[str, int], color: str, horizontal: bool = False) -> None:
        if not counts:
            return
        fig, ax = plt.subplots(figsize=(6, 3.2))
        labels, values = list(counts), list(counts.values())
        if horizontal:
            ax.barh(labels[::-1], values[::-1], color=color)
            ax.set_xlabel("calls")
        else:
            ax.bar(labels, values, color=color)
            ax.set_ylabel("calls")
            ax.tick_params(axis="x", rotation=20)
        ax.set_title(title)
        out[title] = _png(fig)

    bars("Call outcomes", {k: v for k, v in report.outcomes.items() if v}, "#4c72b0")
    bars("Transfer reasons", report.transfer_reasons, "#dd8452", horizontal=True)
    bars("Intents", report.intents, "#55a868", horizontal=True)
    if report.latencies:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist(report.latencies, bins=30, color="#8172b3")
        for name, style in (("p50", "--"), ("p95", ":")):
            value = report.latency_ms[name] or 0.0
            ax.axvline(value, color="black", linestyle=style, label=f"{name} {value:.0f} ms")
        ax.set_xlabel("turn latency (ms)")
        ax.set_ylabel("turns")
        ax.set_title("Turn latency")
        ax.legend()
        out["Turn latency"] = _png(fig)
    if report.csat_count:
        bars("CSAT distribution", {str(k): v for k, v in report.csat_dist.items()}, "#c44e52")
    if report.calls_per_hour:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        keys = list(report.calls_per_hour)
        ax.plot(range(len(keys)), list(report.calls_per_hour.values()), marker="o", color="#4c72b0")
        step = max(1, len(keys) // 8)
        ax.set_xticks(range(0, len(keys), step), [k[5:].replace("T", " ") + "h" for k in keys[::step]], rotation=20)
        ax.set_ylabel("calls")
        ax.set_title("Calls per hour (UTC)")
        out["Calls per hour"] = _png(fig)
    return out


def _faq_table(title: str, groups: dict[str, dict[str, Any]]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{row['calls']}</td><td>{row['contained']}</td><td>{row['transferred']}</td>"
        f"<td>{_pct(row['containment_rate'])}</td></tr>"
        for name, row in groups.items()
    ) or '<tr><td colspan="5">none</td></tr>'
    return (f"<div><h2>Knowledge base: containment per {title}</h2><table><tr><th>{title}</th><th>calls</th>"
            f"<th>contained</th><th>transferred</th><th>containment</th></tr>{rows}</table></div>")


def render_html(report: Report) -> str:
    """One self-contained HTML page (inline CSS, plots as base64 PNG)."""
    esc = html.escape
    window = f"since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "all time"
    kpis = [
        ("Calls", str(report.calls)),
        ("Containment", _pct(report.containment_rate)),
        ("Contained / transferred", f"{report.outcomes.get(CONTAINED, 0)} / {report.outcomes.get(TRANSFERRED, 0)}"),
        ("Abandoned / failed", f"{report.outcomes.get(ABANDONED, 0)} / {report.outcomes.get(FAILED, 0)}"),
        ("No-match (turns)", _pct(report.no_match_rate)),
        ("No-input (turns)", _pct(report.no_input_rate)),
        ("Latency p50 / p95", f"{_ms(report.latency_ms.get('p50'))} / {_ms(report.latency_ms.get('p95'))}"),
        ("Latency max", _ms(report.latency_ms.get("max"))),
        ("CSAT", "-" if report.csat_avg is None else f"{report.csat_avg:.2f} / 5 (n={report.csat_count})"),
        ("NPS-style", "-" if report.nps.get("score") is None else f"{report.nps['score']:+.1f}"),
        ("Knowledge-base answered / contained", f"{report.faq_calls} / {_pct(report.faq_containment_rate)}"),
    ]
    cards = "".join(
        f'<div class="kpi"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>' for k, v in kpis
    )

    def table(title: str, counts: dict[str, int]) -> str:
        total = sum(counts.values())
        rows = (
            "".join(
                f"<tr><td>{esc(str(k))}</td><td>{n}</td><td>{_pct(_rate(n, total))}</td></tr>"
                for k, n in counts.items()
            )
            or '<tr><td colspan="3">none</td></tr>'
        )
        return f"<div><h2>{esc(title)}</h2><table><tr><th></th><th>calls</th><th>share</th></tr>{rows}</table></div>"

    tables = "".join(
        [
            table("Outcomes", report.outcomes),
            table("Transfer reasons", report.transfer_reasons),
            table("Intents", report.intents),
            table("Languages", report.langs),
            table("CSAT distribution", {str(k): v for k, v in report.csat_dist.items()}),
            _faq_table("entry", report.faq),
            _faq_table("topic", report.faq_topics),
        ]
    )
    figures = "".join(
        f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}"></figure>'
        for title, data in plots(report).items()
    )
    nps = report.nps
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>IVR report ({esc(window)})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1300px; }}
.kpis {{ display: flex; flex-wrap: wrap; gap: .8rem; }}
.kpi {{ border: 1px solid #ddd; border-radius: 8px; padding: .7rem 1rem; min-width: 9rem; }}
.kpi .v {{ font-size: 1.4rem; font-weight: 600; }} .kpi .k {{ color: #666; font-size: .85rem; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }} figure {{ margin: 0; }}
table {{ border-collapse: collapse; margin-bottom: 1rem; }} td, th {{ border-bottom: 1px solid #eee;
padding: .25rem .8rem; text-align: left; }}
.tables {{ display: flex; flex-wrap: wrap; gap: 2.5rem; align-items: flex-start; }}
.note {{ color: #666; font-size: .85rem; }}
</style></head><body>
<h1>IVR report</h1>
<p>{esc(window)}, generated {report.until:%Y-%m-%d %H:%M} UTC; {report.calls} calls, {report.turns} turns.</p>
<div class="kpis">{cards}</div>
<h2>Plots</h2><div class="grid">{figures or "<p>no calls in this window</p>"}</div>
<div class="tables">{tables}</div>
<p class="note">Containment = contained / ended calls. Contained: served by the assistant with no
human (the flow ended the call, or the caller hung up after being served); transferred: handed to the
live line; abandoned: the caller hung up before being served; failed: the assistant broke down.
Knowledge-base containment per entry = contained calls that heard the answer / ended calls that heard it.
NPS-style score from CSAT: promoters = 5 ({nps.get("promoters")}), passives = 4 ({nps.get("passives")}),
detractors = 1-3 ({nps.get("detractors")}); score = % promoters - % detractors.</p>
</body></html>
"""
