"""Call records on real SQLite and a real PostgreSQL server started here (initdb + pg_ctl)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ivr.errors import StorageError
from ivr.storage.records import CallStore, StoreParams, TurnRecord
from ivr.testing.pgserver import TempPostgres, find_pg_bin

CARD = "4111 1111 1111 1111"  # Luhn-valid test card number


@pytest.fixture(scope="module")
def postgres():
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    server = TempPostgres()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty database URL of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def store(db_url, tmp_path):
    with CallStore(db_url, StoreParams(spool_path=tmp_path / "spool.jsonl")) as s:
        yield s


def _count(url: str, table: str) -> int:
    """Rows in `table`, read through a separate engine (what another process would see)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_round_trip_with_redaction(store):
    t0 = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    cid = store.open_call(
        lang="en", flow="support", caller="+1 555 123 4567", channel="PJSIP/100-1", engine="whisper", started_at=t0
    )
    store.add_turn(
        cid,
        TurnRecord(
            idx=0,
            started_at=t0 + timedelta(seconds=1),
            prompt="How can I help?",
            transcript=f"pay with card {CARD}",
            intent="payment",
            confidence=0.81,
            asr_ms=420.0,
            nlu_ms=3.5,
            dialog_ms=1.0,
            tts_ms=15.0,
            latency_ms=610.0,
        ),
    )
    store.add_turn(cid, TurnRecord(idx=1, started_at=t0 + timedelta(seconds=5), dtmf="1", no_match=True, barge_in=True))
    store.add_event(cid, "hook", {"name": "balance", "reply": "call 555-123-4567", "n": 3})
    store.close_call(
        cid,
        status="transferred",
        route="support",
        handoff_reason="no_match",
        intent="payment",
        survey_score=4,
        ended_at=t0 + timedelta(seconds=30),
    )

    (call,) = store.calls()
    assert call.id == cid and call.status == "transferred" and call.route == "support"
    assert call.caller == "*******4567"  # only the last 4 digits are kept
    assert call.started_at == t0 and call.ended_at == t0 + timedelta(seconds=30)
    assert (call.lang, call.flow, call.channel, call.engine) == ("en", "support", "PJSIP/100-1", "whisper")
    assert (call.handoff_reason, call.intent, call.survey_score) == ("no_match", "payment", 4)

    first, second = store.turns(cid)
    assert first.transcript == "pay with card [CARD]"
    assert (first.intent, first.confidence, first.asr_ms, first.latency_ms) == ("payment", 0.81, 420.0, 610.0)
    assert first.started_at == t0 + timedelta(seconds=1) and first.call_id == cid
    assert (second.dtmf, second.no_match, second.barge_in, second.no_input) == ("1", True, True, False)

    (event,) = store.events(cid)
    assert event.kind == "hook" and event.data == {"name": "balance", "reply": "call [PHONE]", "n": 3}


def test_each_write_is_visible_before_the_call_ends(store, db_url):
    """Written as the call goes: a crash after add_turn keeps the turn."""
    cid = store.open_call(lang="ru")
    store.add_turn(cid, TurnRecord(idx=0, transcript="баланс"))
    assert _count(db_url, "calls") == 1 and _count(db_url, "turns") == 1
    store.add_turn(cid, TurnRecord(idx=1, transcript="да"))
    assert _count(db_url, "turns") == 2
    assert store.call(cid).status == "active" and store.call(cid).ended_at is None


CRASHING_CALLER = """
import os, sys
from ivr.storage.records import CallStore, StoreParams, TurnRecord
store = CallStore(sys.argv[1], StoreParams(spool_path=None, spool=False))
cid = store.open_call("crash-1", lang="en", flow="support")
for i in range(3):
    store.add_turn(cid, TurnRecord(idx=i, transcript=f"turn {i}"))
os._exit(1)  # killed mid-call: no close_call, no flush, no clean shutdown
"""


def test_process_killed_mid_call_keeps_every_written_turn(db_url):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CRASHING_CALLER, db_url], capture_output=True, timeout=120)
    assert done.returncode == 1, done.stderr.decode()
    with CallStore(db_url, StoreParams(spool=False)) as store:
        call = store.call("crash-1")
        assert call is not None and call.status == "active" and call.ended_at is None
        assert [t.transcript for t in store.turns("crash-1")] == ["turn 0", "turn 1", "turn 2"]


def test_calls_since_filters_by_start_time(store):
    now = datetime.now(UTC)
    old = store.open_call(started_at=now - timedelta(days=3))
    new = store.open_call(started_at=now - timedelta(hours=2))
    assert [c.id for c in store.calls()] == [old, new]
    assert [c.id for c in store.calls(since=now - timedelta(days=1))] == [new]
    assert [c.id for c in store.calls(until=now - timedelta(days=1))] == [old]
    store.add_turn(old, TurnRecord(idx=0))
    store.add_turn(new, TurnRecord(idx=0))
    assert [t.call_id for t in store.turns_since(now - timedelta(days=1))] == [new]


def test_concurrent_writers_lose_nothing(store, db_url):
    calls_per_thread, turns_per_call, threads = 10, 4, 6

    def caller() -> None:
        for _ in range(calls_per_thread):
            cid = store.open_call(lang="en")
            for i in range(turns_per_call):
                store.add_turn(cid, TurnRecord(idx=i, transcript=f"turn {i}"))
            store.close_call(cid)

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert _count(db_url, "calls") == threads * calls_per_thread
    assert _count(db_url, "turns") == threads * calls_per_thread * turns_per_call
    assert all(c.status == "contained" for c in store.calls())
    assert store.dropped == 0


def test_spooled_writes_replay_once(db_url, tmp_path):
    """A spool left by a crash is replayed by the next store; replays never duplicate rows."""
    spool = tmp_path / "crash.jsonl"
    with CallStore(db_url, StoreParams(spool_path=spool)) as first:
        cid = first.open_call(lang="en")
        first.add_turn(cid, TurnRecord(idx=0, transcript="already written"))
    # the same writes once more (a commit whose acknowledgement was lost) plus one new turn
    at = {"__dt__": datetime.now(UTC).isoformat()}
    lines = [
        [
            "open_call",
            {
                "id": cid,
                "started_at": at,
                "lang": "en",
                "flow": "",
                "caller": "",
                "channel": "",
                "engine": "",
                "status": "active",
            },
        ],
        ["add_turn", {"call_id": cid, "idx": 0, "started_at": at, "transcript": "already written"}],
        ["add_turn", {"call_id": cid, "idx": 1, "started_at": at, "transcript": "from the spool"}],
        ["update_call", {"id": cid, "status": "abandoned", "ended_at": at}],
    ]
    spool.write_text("".join(json.dumps(line) + "\n" for line in lines) + '["add_turn", {"torn')
    with CallStore(db_url, StoreParams(spool_path=spool)) as second:
        assert second.pending == 0
        assert [t.transcript for t in second.turns(cid)] == ["already written", "from the spool"]
        assert second.call(cid).status == "abandoned"
    assert not spool.exists()
    assert _count(db_url, "calls") == 1


def test_bad_input_errors_name_the_fix(store, tmp_path):
    with pytest.raises(StorageError, match="unknown call field"):
        store.update_call("x", colour="red")
    with pytest.raises(StorageError, match="unknown call status"):
        store.update_call("x", status="done")
    with pytest.raises(StorageError, match="invalid database URL"):
        CallStore("not a url")


def test_sqlite_uses_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    with CallStore(url) as store:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"


# ---- PostgreSQL outages --------------------------------------------------------------------
@pytest.fixture
def pg_store_url(postgres):
    return postgres.new_database()


def _wait_for(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.postgres
def test_server_restart_mid_call_loses_nothing(postgres, pg_store_url, tmp_path):
    store = CallStore(pg_store_url, StoreParams(spool_path=tmp_path / "spool.jsonl", background_retry=False))
    try:
        cid = store.open_call(lang="en", flow="support", caller="5551234567")
        store.add_turn(cid, TurnRecord(idx=0, transcript="what is my balance"))
        postgres.stop()
        try:
            store.add_turn(cid, TurnRecord(idx=1, transcript=f"my card is {CARD}"))  # never raises
            store.add_event(cid, "barge_in", {"at_ms": 1200})
            store.close_call(cid, status="completed", intent="balance", survey_score=5)
            assert store.pending == 3
            assert store.flush(timeout_s=0.5) is False  # still down
            with pytest.raises(StorageError, match="cannot read call records"):
                store.calls()
        finally:
            postgres.start()
        assert store.flush(timeout_s=20) is True
        assert [t.transcript for t in store.turns(cid)] == ["what is my balance", "my card is [CARD]"]
        call = store.call(cid)
        assert (call.status, call.intent, call.survey_score) == ("contained", "balance", 5)
        assert [e.kind for e in store.events(cid)] == ["barge_in"]
        assert store.dropped == 0 and store.pending == 0
    finally:
        store.close()


@pytest.mark.postgres
def test_writers_keep_going_through_a_restart(postgres, pg_store_url, tmp_path, caplog):
    """Several threads write calls while the server stops and starts: every record arrives, once."""
    store = CallStore(pg_store_url, StoreParams(spool_path=tmp_path / "spool.jsonl", retry_s=0.1))
    threads, calls_each, turns_each = 4, 6, 5
    stop_at = threads * calls_each // 3  # calls opened before the outage

    opened = threading.Semaphore(0)

    def caller(n: int) -> None:
        for c in range(calls_each):
            cid = store.open_call(f"t{n}-c{c}", lang="en")
            opened.release()
            for i in range(turns_each):
                store.add_turn(cid, TurnRecord(idx=i, transcript=f"{cid} {i}"))
                time.sleep(0.01)
            store.close_call(cid, status="completed")

    try:
        workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for _ in range(stop_at):
            opened.acquire()
        postgres.stop()
        time.sleep(0.3)
        postgres.start()
        for w in workers:
            w.join()
        assert store.flush(timeout_s=30)
        assert "call record store unavailable" in caplog.text  # the outage really hit the writers
        assert _count(pg_store_url, "calls") == threads * calls_each
        assert _count(pg_store_url, "turns") == threads * calls_each * turns_each
        assert all(c.status == "contained" for c in store.calls())
        assert store.dropped == 0
    finally:
        store.close()


@pytest.mark.postgres
def test_background_retry_drains_after_restart(postgres, pg_store_url, tmp_path):
    with CallStore(pg_store_url, StoreParams(spool_path=tmp_path / "s.jsonl", retry_s=0.2)) as store:
        cid = store.open_call(lang="ko")
        postgres.stop()
        try:
            for i in range(5):
                store.add_turn(cid, TurnRecord(idx=i, transcript=f"turn {i}"))
        finally:
            postgres.start()
        assert _wait_for(lambda: store.pending == 0), "the retry thread did not drain the queue"
        assert len(store.turns(cid)) == 5


@pytest.mark.postgres
def test_process_crash_while_down_is_recovered_from_the_spool(postgres, pg_store_url, tmp_path):
    spool = tmp_path / "spool.jsonl"
    crashed = CallStore(pg_store_url, StoreParams(spool_path=spool, background_retry=False))
    cid = crashed.open_call(lang="en")
    postgres.stop()
    try:
        crashed.add_turn(cid, TurnRecord(idx=0, transcript="before the crash"))
        crashed.close_call(cid, status="abandoned")
        crashed.engine.dispose()  # the process dies here: no flush, no close
        assert spool.exists()
    finally:
        postgres.start()
    with CallStore(pg_store_url, StoreParams(spool_path=spool)) as restarted:
        assert restarted.flush(timeout_s=20)
        assert [t.transcript for t in restarted.turns(cid)] == ["before the crash"]
        assert restarted.call(cid).status == "abandoned"
    assert not spool.exists()


@pytest.mark.postgres
def test_database_down_at_start_up(postgres, pg_store_url, tmp_path):
    postgres.stop()
    try:
        store = CallStore(pg_store_url, StoreParams(spool_path=tmp_path / "s.jsonl", background_retry=False))
        cid = store.open_call(lang="en")
        store.add_turn(cid, TurnRecord(idx=0, transcript="hello"))
        assert store.pending == 2
    finally:
        postgres.start()
    try:
        assert store.flush(timeout_s=20)
        assert [t.transcript for t in store.turns(cid)] == ["hello"]
    finally:
        store.close()


def test_pg_server_helper_reports_missing_binaries(tmp_path):
    with pytest.raises(StorageError, match="initdb"):
        TempPostgres(bin_dir=Path(tmp_path))
