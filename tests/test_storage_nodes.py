"""Several bridge nodes on one call record database (ivr/storage/nodes.py): the lease, closing what a
dead node left active, and the `node` column added to a database from before it existed.
On real SQLite and a real PostgreSQL server started here."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from ivr.storage.nodes import LOST_REASON, NodeLease
from ivr.storage.records import CallStore, StoreParams, utcnow
from ivr.testing.pgserver import TempPostgres, find_pg_bin

LEASE_S = 0.6


@pytest.fixture(scope="module")
def postgres():
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    server = TempPostgres()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    else:
        server: TempPostgres = request.getfixturevalue("postgres")
        url = server.new_database()
    with CallStore(url, StoreParams(spool_path=tmp_path / "spool.jsonl")) as s:
        yield s


def test_a_dead_nodes_calls_are_closed_by_a_survivor_and_only_those(store: CallStore) -> None:
    a, b = NodeLease(store, "node-a", LEASE_S), NodeLease(store, "node-b", LEASE_S)
    assert a.beat() and b.beat()
    a_calls = [store.open_call(node="node-a", flow="support") for _ in range(3)]
    b_call = store.open_call(node="node-b", flow="support")
    assert b.reap_dead_nodes() == 0  # A's lease is fresh: its calls are its own
    time.sleep(LEASE_S + 0.2)  # A is killed: it beats no more; B goes on
    b.beat()
    assert b.reap_dead_nodes() == 3
    for call_id in a_calls:
        record = store.call(call_id)
        assert record is not None and record.status == "failed" and record.handoff_reason == LOST_REASON
        assert record.ended_at is not None and record.ended_at >= record.started_at
        assert [e.kind for e in store.events(call_id)] == ["record_closed"]
    b_record = store.call(b_call)
    assert b_record is not None and b_record.status == "active"
    assert b.reap_dead_nodes() == 0  # A is forgotten once its calls are closed
    with store.engine.connect() as conn:
        assert [r.name for r in conn.execute(sa.text("SELECT name FROM nodes"))] == ["node-b"]


def test_a_restarted_node_closes_its_own_leftovers_at_once(store: CallStore) -> None:
    first_run = NodeLease(store, "node-a", 30.0)
    first_run.beat()
    left = store.open_call(node="node-a")
    other = store.open_call(node="node-b")
    time.sleep(0.01)
    second_run = NodeLease(store, "node-a", 30.0)  # started after the kill: same name, new start
    new = store.open_call(node="node-a")  # taken by the new run
    assert second_run.close_own_leftovers() == 1
    assert [store.call(c).status for c in (left, other, new)] == ["failed", "active", "active"]  # type: ignore[union-attr]


def test_the_node_column_is_added_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the calls table as released before `node`
        db.execute("CREATE TABLE calls (id VARCHAR(64) PRIMARY KEY, started_at DATETIME NOT NULL, "
                   "ended_at DATETIME, lang VARCHAR(16) NOT NULL, flow VARCHAR(64) NOT NULL, "
                   "caller VARCHAR(64) NOT NULL, channel VARCHAR(128) NOT NULL, route VARCHAR(64) NOT NULL, "
                   "handoff_reason VARCHAR(64) NOT NULL, intent VARCHAR(64) NOT NULL, survey_score INTEGER, "
                   "status VARCHAR(16) NOT NULL, engine VARCHAR(64) NOT NULL)")
        db.execute("INSERT INTO calls VALUES ('old', '2026-12-01 10:00:00', NULL, 'en', 'support', '', '', '', '', "
                   "'', NULL, 'completed', 'whisper')")
    with CallStore(f"sqlite:///{path}", StoreParams(spool_path=tmp_path / "spool.jsonl")) as store:
        new = store.open_call(node="node-a", started_at=utcnow())
        assert store.call("old").node == ""  # type: ignore[union-attr]
        assert store.call(new).node == "node-a"  # type: ignore[union-attr]


def test_the_report_counts_calls_per_node(store: CallStore) -> None:
    from ivr.report import build_report

    for node in ("node-a", "node-a", "node-b"):
        call_id = store.open_call(node=node, lang="en", flow="support")
        store.close_call(call_id, status="completed")
    report = build_report(store)
    assert report.nodes == {"node-a": 2, "node-b": 1}
    assert report.to_json()["nodes"] == {"node-a": 2, "node-b": 1}


@pytest.mark.postgres
def test_nodes_starting_at_once_on_an_empty_postgresql_all_get_the_schema(postgres: TempPostgres,
                                                                            tmp_path: Path) -> None:
    """Concurrent CREATE TABLE of one name fails on PostgreSQL's pg_type index (CI saw a node of the failover
    test die at start that way): schema creation takes turns under an advisory lock."""
    import threading

    url = postgres.new_database()
    nodes = 6
    start = threading.Barrier(nodes)
    failures: list[BaseException] = []
    opened: list[str] = []

    def node(index: int) -> None:
        try:
            with CallStore(url, StoreParams(spool_path=tmp_path / f"spool-{index}.jsonl")) as store:
                start.wait(timeout=30)
                store._ensure_schema()  # what the first write of a starting node does
                assert NodeLease(store, f"node-{index}", LEASE_S).beat()
                opened.append(store.open_call(node=f"node-{index}", flow="support"))
        except BaseException as exc:  # reported below, with the node's own traceback in the message
            failures.append(exc)

    threads = [threading.Thread(target=node, args=(i,)) for i in range(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == [] and len(opened) == nodes
    check = CallStore(url, StoreParams(spool_path=tmp_path / "check.jsonl"))
    try:
        assert all(check.call(call_id) is not None for call_id in opened)
    finally:
        check.close()


def test_a_beat_renews_with_one_statement_and_remakes_a_lost_table(store: CallStore) -> None:
    """Only the first beat (and the first after a failed one) makes the nodes table: on PostgreSQL that takes
    the schema lock and reads the catalogue, every lease_s / 3 on every node otherwise."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    lease = NodeLease(store, "node-a", lease_s=LEASE_S)
    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert lease.beat()
        statements.clear()
        assert lease.beat()
        assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE"), statements
        with store.engine.begin() as conn:  # the database comes back without it
            conn.execute(sa.text("DROP TABLE nodes"))
        assert not lease.beat()
        assert lease.beat()
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name FROM nodes")).scalars().all() == ["node-a"]
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
