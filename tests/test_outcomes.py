"""Call outcomes as contact centres count them (ivr/outcomes.py), in records and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from ivr.metrics import IvrMetrics
from ivr.outcomes import ABANDONED, CONTAINED, FAILED, TRANSFERRED, outcome
from ivr.storage.records import CallStore, calls_table


@pytest.mark.parametrize(("route", "reason", "expected"), [
    ("completed", "goodbye", CONTAINED),
    ("completed", "caller_hung_up_after_service", CONTAINED),  # heard the answer, then hung up
    ("hangup", "caller_hung_up", ABANDONED),  # before being served
    ("support", "caller_asked", TRANSFERRED),
    ("support", "no_input", TRANSFERRED),
    ("support", "max_call_length", TRANSFERRED),
    ("support", "error", FAILED),  # fail-open took the caller to a human, but the assistant broke
    ("support", "tts_failed", FAILED),
    ("support", "cancelled", FAILED),
])
def test_outcome_of_each_way_a_call_ends(route: str, reason: str, expected: str) -> None:
    assert outcome(route, reason) == expected


def test_records_store_the_outcome_names_and_read_old_ones_under_them(tmp_path: Path) -> None:
    store = CallStore(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    new, old_completed, old_error = (store.open_call(lang="en") for _ in range(3))
    store.close_call(new, status=CONTAINED)
    store.close_call(old_completed, status="completed")  # the name callers of the API used before
    with store.engine.begin() as db:  # a row written by an older version
        db.execute(sa.update(calls_table).where(calls_table.c.id == old_error).values(status="error"))
    assert [store.call(c).status for c in (new, old_completed, old_error)] == [  # type: ignore[union-attr]
        CONTAINED, CONTAINED, FAILED]
    with store.engine.connect() as db:
        stored = db.execute(sa.select(calls_table.c.status).where(calls_table.c.id == old_completed)).scalar()
    assert stored == CONTAINED
    store.close()


def test_metrics_count_outcomes_and_the_containment_ratio() -> None:
    metrics = IvrMetrics()
    for result in (CONTAINED, CONTAINED, TRANSFERRED, ABANDONED):
        metrics.call_started()
        metrics.call_ended(outcome=result)
    text = metrics.exposition().decode()
    assert 'ivr_call_outcomes_total{outcome="contained"} 2.0' in text
    assert 'ivr_call_outcomes_total{outcome="failed"} 0.0' in text  # present before the first failure
    assert "ivr_containment_ratio 0.5" in text
