"""`ivr report` over a day of synthetic calls written into real SQLite through the CallStore API.

The expected numbers are tallied while the calls are generated, with their own arithmetic,
never read back from the report code.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ivr.commands import report as report_command
from ivr.errors import ConfigError, StorageError
from ivr.report import build_report, compute, parse_since, print_report, render_html
from ivr.storage.records import CallStore, StoreParams, TurnRecord

ROOT = Path(__file__).resolve().parents[1]
DAY = datetime(2026, 5, 1, tzinfo=UTC)
INTENTS = ["balance", "lost_phone", "tariff", "agent", "payment"]
REASONS = ["caller_asked", "no_match", "no_input", "after_hours"]


def _linear_percentile(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (the C = 1 variant)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """200 calls on DAY plus 15 on the day before; returns (db url, expected numbers)."""
    rng = random.Random(20260501)
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'calls.sqlite3'}"
    expect = {
        "status": Counter(),
        "reasons": Counter(),
        "intents": Counter(),
        "scores": [],
        "latencies": [],
        "turns": 0,
        "no_match": 0,
        "no_input": 0,
        "hours": Counter(),
    }
    with CallStore(url, StoreParams(spool=False)) as store:
        for n in range(215):
            in_window = n < 200
            start = (DAY if in_window else DAY - timedelta(days=1)) + timedelta(seconds=rng.randrange(86_400))
            cid = store.open_call(
                lang=rng.choice(["en", "ru", "ko"]),
                flow="support",
                caller=f"+1555{rng.randrange(10**7):07d}",
                started_at=start,
            )
            for idx in range(rng.randint(1, 5)):
                no_input = rng.random() < 0.1
                no_match = not no_input and rng.random() < 0.15
                latency = None if no_input else round(rng.lognormvariate(6.3, 0.4), 1)
                store.add_turn(
                    cid,
                    TurnRecord(
                        idx=idx,
                        started_at=start + timedelta(seconds=8 * idx),
                        prompt="How can I help?",
                        transcript="" if no_input else f"card 4111 1111 1111 1111 turn {idx}",
                        intent="none" if no_match else rng.choice(INTENTS),
                        no_input=no_input,
                        no_match=no_match,
                        latency_ms=latency,
                    ),
                )
                if in_window:
                    expect["turns"] += 1
                    expect["no_match"] += no_match
                    expect["no_input"] += no_input
                    if latency is not None:
                        expect["latencies"].append(latency)
            status = rng.choices(["contained", "transferred", "abandoned", "failed"], [55, 30, 12, 3])[0]
            reason = rng.choice(REASONS) if status == "transferred" else ""
            intent = rng.choice(INTENTS)
            score = rng.choice([None, None, 1, 2, 3, 4, 5, 5]) if status != "abandoned" else None
            store.close_call(
                cid,
                status=status,
                route="support" if reason else "",
                handoff_reason=reason,
                intent=intent,
                survey_score=score,
                ended_at=start + timedelta(minutes=2),
            )
            if in_window:
                expect["status"][status] += 1
                expect["intents"][intent] += 1
                expect["hours"][start.strftime("%Y-%m-%dT%H")] += 1
                if reason:
                    expect["reasons"][reason] += 1
                if score is not None:
                    expect["scores"].append(score)
        # one call still in progress in the window: counted as a call, not as ended
        live = store.open_call(lang="en", started_at=DAY + timedelta(hours=23, minutes=59))
        store.add_turn(live, TurnRecord(idx=0, started_at=DAY + timedelta(hours=23, minutes=59)))
        expect["turns"] += 1
        expect["intents"]["none"] += 1
        expect["hours"][f"{DAY:%Y-%m-%d}T23"] += 1
    return url, expect


@pytest.fixture(scope="module")
def report(day):
    url, _ = day
    with CallStore(url, StoreParams(spool=False)) as store:
        return build_report(store, since=DAY, until=DAY + timedelta(days=1))


def test_counts_and_rates_match_the_generated_day(report, day):
    _, expect = day
    ended = sum(expect["status"].values())
    assert report.calls == ended + 1 and report.ended == ended
    assert report.outcomes["active"] == 1
    for status in ("contained", "transferred", "abandoned", "failed"):
        assert report.outcomes[status] == expect["status"][status]
    assert report.containment_rate == pytest.approx(expect["status"]["contained"] / ended)
    assert report.transfer_reasons == dict(expect["reasons"])
    assert report.intents == dict(expect["intents"])
    assert report.turns == expect["turns"]
    assert report.no_match_rate == pytest.approx(expect["no_match"] / expect["turns"])
    assert report.no_input_rate == pytest.approx(expect["no_input"] / expect["turns"])
    assert {hour: n for hour, n in report.calls_per_hour.items() if n} == dict(expect["hours"])
    assert len(report.calls_per_hour) == 24  # every hour of the day, quiet ones as 0


def test_latency_percentiles(report, day):
    _, expect = day
    latencies = expect["latencies"]
    assert report.latency_ms["count"] == len(latencies)
    assert report.latency_ms["p50"] == pytest.approx(_linear_percentile(latencies, 50))
    assert report.latency_ms["p95"] == pytest.approx(_linear_percentile(latencies, 95))
    assert report.latency_ms["max"] == max(latencies)


def test_csat_and_nps(report, day):
    _, expect = day
    scores = expect["scores"]
    assert report.csat_count == len(scores)
    assert report.csat_avg == pytest.approx(sum(scores) / len(scores))
    assert report.csat_dist == {s: scores.count(s) for s in range(1, 6)}
    promoters = scores.count(5)
    detractors = sum(1 for s in scores if s <= 3)
    assert report.nps["promoters"] == promoters and report.nps["detractors"] == detractors
    assert report.nps["passives"] == scores.count(4)
    assert report.nps["score"] == pytest.approx(round(100 * (promoters - detractors) / len(scores), 1))


def test_html_is_self_contained_with_plots_and_no_pii(report):
    page = render_html(report)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    titles = [title for title, _ in images]
    assert titles == [
        "Call outcomes",
        "Transfer reasons",
        "Intents",
        "Turn latency",
        "CSAT distribution",
        "Calls per hour",
    ]
    import base64

    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "4111" not in page
    assert f"{100 * report.containment_rate:.1f}%" in page


def test_terminal_tables(report):
    from rich.console import Console

    console = Console(record=True, width=120)
    print_report(report, console)
    text = console.export_text()
    assert "containment rate" in text and f"{100 * report.containment_rate:.1f}%" in text
    assert "Transfer reasons" in text and "caller_asked" in text


def test_cli_json_and_html(day, tmp_path, capsys):
    url, expect = day
    html_file = tmp_path / "report.html"
    args = argparse.Namespace(
        config=None,
        since=DAY.isoformat(),
        until=(DAY + timedelta(days=1)).isoformat(),
        db=url,
        html=str(html_file),
        json=True,
    )
    assert report_command.run(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calls"] == sum(expect["status"].values()) + 1
    assert data["transfer_reasons"] == dict(expect["reasons"])
    assert html_file.read_text().count("data:image/png;base64,") == 6


def test_cli_missing_sqlite_file_names_the_fix(tmp_path):
    args = argparse.Namespace(
        config=None, since="1d", until=None, db=f"sqlite:///{tmp_path / 'none.db'}", html=None, json=True
    )
    with pytest.raises(StorageError, match="no call records"):
        report_command.run(args)


def test_empty_window():
    empty = compute([], [], since=DAY, until=DAY + timedelta(days=1))
    assert empty.calls == 0 and empty.containment_rate is None and empty.latency_ms["p50"] is None
    assert "no calls in this window" in render_html(empty)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d", DAY - timedelta(days=1)),
        ("7d", DAY - timedelta(days=7)),
        ("12h", DAY - timedelta(hours=12)),
        ("2026-04-30", datetime(2026, 4, 30, tzinfo=UTC)),
        ("2026-04-30T10:00+02:00", datetime(2026, 4, 30, 8, tzinfo=UTC)),
        ("all", None),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, now=DAY) == expected


def test_parse_since_rejects_garbage():
    with pytest.raises(ConfigError, match="1d, 7d"):
        parse_since("yesterday")


@pytest.mark.slow
def test_report_of_calls_the_pipeline_made(tmp_path):
    """The ops path end to end: a tester replays manifest calls (real pipeline, Korean Vosk, Russian by
    keys); `ivr report` over the records they left counts them, their outcomes and intents."""
    import os
    import subprocess
    import sys

    import yaml

    # Russian: only the keys call (Whisper does not understand the espeak-ng Russian of the speech call)
    manifest = yaml.safe_load((ROOT / "audio_fixtures/manifest.yaml").read_text(encoding="utf-8"))
    manifest.update(fixtures=[], calls=[c for c in manifest["calls"] if c["name"] == "ru_keys_balance_then_operator"])
    keys_only = tmp_path / "manifest.yaml"
    keys_only.write_text(yaml.safe_dump(manifest, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "IVR_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    for lang, extra in (("ko", []), ("ru", [str(keys_only)])):
        replay = subprocess.run([sys.executable, "-m", "ivr.cli", "replay", "--calls-only", "--lang", lang, *extra],
                                capture_output=True, text=True, timeout=300, env=env)
        assert replay.returncode == 0, replay.stdout + replay.stderr
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "report", "--since", "1d", "--json",
                           "--html", str(tmp_path / "day.html")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    # ko_operator_handoff, ko_balance_then_key_for_agent, ko_balance_then_no_more,
    # ru_keys_balance_then_operator
    assert data["calls"] == 4 and data["langs"] == {"ko": 3, "ru": 1}
    assert {k: v for k, v in data["outcomes"].items() if v} == {"transferred": 3, "contained": 1}
    assert data["containment_rate"] == pytest.approx(1 / 4)
    assert data["transfer_reasons"] == {"caller_asked": 3}
    assert data["intents"] == {"balance": 4}  # each call's main request, not the later "no" or "operator"
    assert data["latency_ms"]["count"] >= 4
    assert (tmp_path / "day.html").read_text().count("data:image/png;base64,") >= 4
