"""Call records: every call, turn and event, written as the call goes.

SQLAlchemy 2 Core over SQLite (default, WAL mode) or PostgreSQL (`postgresql+psycopg://...`).

Each write (`open_call`, `add_turn`, `add_event`, `update_call`, `close_call`) is its own
short transaction, so a crash loses at most the turn in flight. Writes never fail or block
the call for long: if the database is unreachable the write is queued in memory (bounded)
and appended to a spool file, and a background thread retries in order; `flush()` drains
now. A new CallStore replays a spool left by a crashed process. Every write is idempotent
(client-side ids + insert-or-ignore), so a retry after a lost commit acknowledgement does
not duplicate rows.

Transcripts, prompts, event data and the caller ID are redacted (ivr.redact) before they
are stored, here, so no caller of this API can forget to.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ivr.errors import StorageError
from ivr.outcomes import ABANDONED, CONTAINED, FAILED, OUTCOMES, TRANSFERRED, normalize  # noqa: F401 (reports use them)
from ivr.redact import redact, redact_caller

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 10_000  # queued writes kept in memory while the database is down
DEFAULT_RETRY_S = 1.0  # first retry delay; doubles up to DEFAULT_MAX_RETRY_S
DEFAULT_MAX_RETRY_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 3

# call status values (calls.status): "active", then the call's outcome (definitions: ivr/outcomes.py)
ACTIVE = "active"
STATUSES = (ACTIVE, *OUTCOMES)
COMPLETED = CONTAINED  # the names these had before the outcomes were defined ("completed", "error")
ERROR = FAILED

# event kinds read by reports
FAQ_ANSWERED = "faq_answered"  # data: {"entry": id, "topic": ..., "state": ...}: a knowledge-base answer
NBEST_EVENT = "nlu_nbest"  # event data: turn, nbest [[text, confidence]...], reading (chosen), intent, ambiguous

metadata = sa.MetaData()

calls_table = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("lang", sa.String(16), nullable=False, default=""),
    sa.Column("flow", sa.String(64), nullable=False, default=""),
    sa.Column("caller", sa.String(64), nullable=False, default=""),  # redacted: last 4 digits
    sa.Column("channel", sa.String(128), nullable=False, default=""),
    sa.Column("route", sa.String(64), nullable=False, default=""),
    sa.Column("handoff_reason", sa.String(64), nullable=False, default=""),
    sa.Column("intent", sa.String(64), nullable=False, default=""),
    sa.Column("survey_score", sa.Integer),
    sa.Column("status", sa.String(16), nullable=False, default=ACTIVE),
    sa.Column("engine", sa.String(64), nullable=False, default=""),
    # the bridge node that ran the call (settings server.node): with several nodes on one database,
    # whose calls a dead node left active (ivr/storage/nodes.py)
    sa.Column("node", sa.String(128), nullable=False, default="", server_default=""),
)
# columns added after the first release: (table, column), added to an older database at start
ADDED_COLUMNS = ((calls_table, "node"),)

turns_table = sa.Table(
    "turns",
    metadata,
    sa.Column("call_id", sa.String(64), sa.ForeignKey("calls.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False, default=""),
    sa.Column("transcript", sa.Text, nullable=False, default=""),  # redacted
    sa.Column("intent", sa.String(64), nullable=False, default=""),
    sa.Column("confidence", sa.Float),
    sa.Column("asr_ms", sa.Float),
    sa.Column("nlu_ms", sa.Float),
    sa.Column("dialog_ms", sa.Float),
    sa.Column("tts_ms", sa.Float),
    sa.Column("latency_ms", sa.Float),  # end of caller speech -> first audio out
    sa.Column("dtmf", sa.String(32), nullable=False, default=""),
    sa.Column("no_input", sa.Boolean, nullable=False, default=False),
    sa.Column("no_match", sa.Boolean, nullable=False, default=False),
    sa.Column("barge_in", sa.Boolean, nullable=False, default=False),
)

events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # client-side uuid: retries stay idempotent
    sa.Column("call_id", sa.String(64), sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("data", sa.JSON, nullable=False, default=dict),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """Aware UTC (naive values are taken as UTC): what both SQLite and PostgreSQL store here."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass
class TurnRecord:
    """One exchange: what we said, what the caller said or pressed, and how long each stage took."""

    idx: int
    started_at: datetime = field(default_factory=utcnow)
    prompt: str = ""
    transcript: str = ""
    intent: str = ""
    confidence: float | None = None
    asr_ms: float | None = None
    nlu_ms: float | None = None
    dialog_ms: float | None = None
    tts_ms: float | None = None
    latency_ms: float | None = None
    dtmf: str = ""
    no_input: bool = False
    no_match: bool = False
    barge_in: bool = False
    call_id: str = ""  # filled in when read back


@dataclass
class CallRecord:
    """One call as stored (see the `calls` table)."""

    id: str
    started_at: datetime
    ended_at: datetime | None = None
    lang: str = ""
    flow: str = ""
    caller: str = ""
    channel: str = ""
    route: str = ""
    handoff_reason: str = ""
    intent: str = ""
    survey_score: int | None = None
    status: str = ACTIVE
    engine: str = ""
    node: str = ""


@dataclass
class EventRecord:
    call_id: str
    at: datetime
    kind: str
    data: dict[str, Any]
    id: str = ""


CALL_UPDATABLE = {
    "ended_at",
    "lang",
    "flow",
    "route",
    "handoff_reason",
    "intent",
    "survey_score",
    "status",
    "engine",
    "channel",
}


@dataclass(frozen=True)
class StoreParams:
    max_pending: int = DEFAULT_MAX_PENDING
    spool_path: Path | None = None  # None: next to a SQLite file, else ~/.local/share/ivr/spool-*.jsonl
    # where writes go when the spool cannot be written (its disk is full or read-only): outside the
    # data dir. None: ~/.local/state/ivr/spool-<hash of the URL>.jsonl
    fallback_spool_path: Path | None = None
    retry_s: float = DEFAULT_RETRY_S
    max_retry_s: float = DEFAULT_MAX_RETRY_S
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S
    background_retry: bool = True  # a daemon thread drains the queue while the database is down
    spool: bool = True  # False: no spool file (readers such as `ivr report`; memory queue only)


# ---- (de)serialising queued writes ---------------------------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__dt__": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__dt__"}:
        return datetime.fromisoformat(value["__dt__"])
    return value


class CallStore:
    """Thread-safe call record store. Call it from asyncio via `asyncio.to_thread`.

    >>> store = CallStore("sqlite:///calls.sqlite3")
    >>> cid = store.open_call(lang="en", flow="support", caller="+15551234567")
    >>> store.add_turn(cid, TurnRecord(idx=0, prompt="How can I help?", transcript="my balance"))
    >>> store.close_call(cid, status="contained", intent="balance")
    """

    def __init__(self, url: str, params: StoreParams | None = None) -> None:
        self.url = url
        self.params = params or StoreParams()
        self.engine = _make_engine(url, self.params)
        # Lock order: _drain_lock before _lock. _lock guards the queue and is held for a direct
        # write; a drain holds it only to touch the queue, so writers queue behind a slow retry
        # (connect timeout) without waiting for it.
        self._lock = threading.RLock()
        self._drain_lock = threading.Lock()  # one drainer at a time
        self._schema_lock = threading.Lock()
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._overflowed = False  # memory queue full: the spool file holds the truth
        self._schema_ready = False
        self._next_retry = 0.0
        self._retry_delay = self.params.retry_s
        self.dropped = 0  # writes lost (queue overflow with no spool, or rejected data)
        self.spool_path = (self.params.spool_path or _default_spool(url)) if self.params.spool else None
        self.fallback_spool_path = (self.params.fallback_spool_path or _fallback_spool(url)) if self.params.spool \
            else None
        self._spool_target = self.spool_path  # the fallback once the spool has failed (kept: order)
        self._spool_complete = True  # every queued write is in a spool file (else overflow would lose some)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_spool()
        try:
            self._ensure_schema()
        except _RETRYABLE as exc:  # database down at start-up: the calls still go on
            with self._lock:
                self._went_down(exc)
        else:
            self._drain()

    # ---- public write API -------------------------------------------------------------------
    def open_call(
        self,
        call_id: str | None = None,
        *,
        lang: str = "",
        flow: str = "",
        caller: str = "",
        channel: str = "",
        engine: str = "",
        node: str = "",
        started_at: datetime | None = None,
    ) -> str:
        """Record a new call (status "active"); returns its id (a new uuid if none is given)."""
        call_id = call_id or uuid.uuid4().hex
        row = {
            "id": call_id,
            "started_at": started_at or utcnow(),
            "lang": lang,
            "flow": flow,
            "caller": redact_caller(caller),
            "channel": channel,
            "engine": engine,
            "node": node,
            "status": ACTIVE,
        }
        self._write("open_call", row)
        return call_id

    def add_turn(self, call_id: str, turn: TurnRecord) -> None:
        """Record one turn of `call_id` (transcript and prompt redacted)."""
        row = asdict(turn)
        row["call_id"] = call_id
        row["transcript"] = redact(turn.transcript)
        row["prompt"] = redact(turn.prompt)
        self._write("add_turn", row)

    def add_event(
        self, call_id: str, kind: str, data: dict[str, Any] | None = None, *, at: datetime | None = None
    ) -> None:
        """Record an event (barge-in, hook result, error, ...) with JSON data (string values redacted)."""
        row = {
            "id": uuid.uuid4().hex,
            "call_id": call_id,
            "at": at or utcnow(),
            "kind": kind,
            "data": _redact_json(data or {}),
        }
        self._write("add_event", row)

    def update_call(self, call_id: str, **values: Any) -> None:
        """Set call fields during the call (e.g. `survey_score=5`, `intent="balance"`)."""
        unknown = set(values) - CALL_UPDATABLE
        if unknown:
            raise StorageError(
                f"unknown call field(s): {', '.join(sorted(unknown))}",
                fix=f"use one of {', '.join(sorted(CALL_UPDATABLE))}",
            )
        if "status" in values:
            values["status"] = normalize(values["status"])
        if "status" in values and values["status"] not in STATUSES:
            raise StorageError(f"unknown call status {values['status']!r}", fix=f"use one of {STATUSES}")
        self._write("update_call", {"id": call_id, **values})

    def close_call(
        self,
        call_id: str,
        *,
        status: str = COMPLETED,
        route: str = "",
        handoff_reason: str = "",
        intent: str | None = None,
        survey_score: int | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        """Mark the call ended: `status` is contained | transferred | abandoned | failed (ivr/outcomes.py)."""
        values: dict[str, Any] = {
            "status": status,
            "ended_at": ended_at or utcnow(),
            "route": route,
            "handoff_reason": handoff_reason,
        }
        if intent is not None:
            values["intent"] = intent
        if survey_score is not None:
            values["survey_score"] = survey_score
        self.update_call(call_id, **values)

    def close_lost_calls(self, started_before: datetime, *, reason: str = "bridge_lost",
                         max_call_s: float | None = None, nodes: Collection[str] | None = None,
                         by: str = "lost call reaper") -> int:
        """Close the calls still `active` that started before `started_before`: the process that ran
        them is gone (killed, crashed, the machine lost power), so no one else will. Each becomes
        status "failed" with `handoff_reason=reason`, ended at the latest `max_call_s` after its start
        (the bridge's limit: it cannot have lasted longer), and gets an event saying so.

        `nodes`: only the calls of these bridge nodes (several nodes on one database: ivr/storage/nodes.py).
        Does nothing while writes are queued: one of them may be the call's own close. Returns how
        many were closed; raises StorageError if the database cannot be read."""
        if self._pending or self._overflowed:
            return 0
        query = sa.select(calls_table.c.id, calls_table.c.started_at).where(
            calls_table.c.status == ACTIVE, calls_table.c.started_at < _utc(started_before))
        if nodes is not None:
            query = query.where(calls_table.c.node.in_(list(nodes)))
        rows = self._read(query)
        now = utcnow()
        for row in rows:
            started: datetime = _utc(row.started_at)
            ended = now if max_call_s is None else min(now, started + timedelta(seconds=max_call_s))
            self.add_event(row.id, "record_closed", {"reason": reason, "by": by}, at=now)
            self.close_call(row.id, status=ERROR, handoff_reason=reason, ended_at=ended)
        if rows:
            whose = f"node(s) {', '.join(nodes)}" if nodes else "a process that is gone"
            log.warning("call records: %d call(s) left active by %s closed as %s: %s", len(rows), whose, reason,
                        ", ".join(row.id for row in rows[:10]) + (" ..." if len(rows) > 10 else ""))
        return len(rows)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write queued records now; with `timeout_s`, keep retrying that long. True if nothing is left."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                self._next_retry = 0.0
            self._drain()
            with self._lock:
                if not self._pending and not self._overflowed:
                    return True
            if deadline is None or time.monotonic() >= deadline:
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    @property
    def pending(self) -> int:
        """Writes waiting for the database."""
        return len(self._pending)

    def close(self, flush_timeout_s: float = 2.0) -> bool:
        """Try to flush (briefly), stop the retry thread, release connections.

        Writes the database did not take are never dropped silently: they are logged with their
        count and left in a spool file (the fallback one, outside the data dir, if the spool's own
        disk fails), which the next CallStore on this URL replays. Returns True if nothing is left."""
        flushed = self.flush(timeout_s=flush_timeout_s)
        if not flushed:
            self._keep_for_next_start()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.engine.dispose()
        return flushed

    def _keep_for_next_start(self) -> None:
        with self._lock:
            if self._overflowed:
                count, where = -1, self._spool_target  # the spool already holds them all
            else:
                count = len(self._pending)
                where = self._rewrite_spool(list(self._pending))
        shown = "all queued" if count < 0 else str(count)
        if where is not None:
            log.error("call records: %s write(s) not stored in %s at shutdown; kept in %s, replayed at the next "
                      "start", shown, _safe_url(self.url), where)
        else:
            log.error("call records: %s write(s) LOST at shutdown: %s is unavailable and no spool file could be "
                      "written (%s, %s)", shown, _safe_url(self.url), self.spool_path, self.fallback_spool_path)

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- public read API (reports) ----------------------------------------------------------
    def calls(self, since: datetime | None = None, until: datetime | None = None) -> list[CallRecord]:
        """Calls started in [since, until), oldest first. Raises StorageError if the database is down."""
        query = sa.select(calls_table).order_by(calls_table.c.started_at)
        if since is not None:
            query = query.where(calls_table.c.started_at >= _utc(since))
        if until is not None:
            query = query.where(calls_table.c.started_at < _utc(until))
        rows = self._read(query)
        return [_call_from_row(row) for row in rows]

    def call(self, call_id: str) -> CallRecord | None:
        rows = self._read(sa.select(calls_table).where(calls_table.c.id == call_id))
        return _call_from_row(rows[0]) if rows else None

    def turns(self, call_id: str) -> list[TurnRecord]:
        """The turns of one call, in order."""
        query = sa.select(turns_table).where(turns_table.c.call_id == call_id).order_by(turns_table.c.idx)
        return [_turn_from_row(row) for row in self._read(query)]

    def turns_since(self, since: datetime | None = None, until: datetime | None = None) -> list[TurnRecord]:
        """Turns of the calls started in [since, until) (one query, for reports)."""
        query = (
            sa.select(turns_table)
            .join(calls_table, calls_table.c.id == turns_table.c.call_id)
            .order_by(turns_table.c.call_id, turns_table.c.idx)
        )
        if since is not None:
            query = query.where(calls_table.c.started_at >= _utc(since))
        if until is not None:
            query = query.where(calls_table.c.started_at < _utc(until))
        return [_turn_from_row(row) for row in self._read(query)]

    def events(self, call_id: str) -> list[EventRecord]:
        query = sa.select(events_table).where(events_table.c.call_id == call_id).order_by(events_table.c.at)
        return [
            EventRecord(call_id=r.call_id, at=_aware(r.at), kind=r.kind, data=r.data, id=r.id)  # type: ignore[arg-type]
            for r in self._read(query)
        ]

    def events_since(self, since: datetime | None = None, until: datetime | None = None,
                     kind: str | None = None) -> list[EventRecord]:
        """Events (of `kind`, if given) of the calls started in [since, until) (one query, for reports)."""
        query = (
            sa.select(events_table)
            .join(calls_table, calls_table.c.id == events_table.c.call_id)
            .order_by(events_table.c.call_id, events_table.c.at)
        )
        if kind is not None:
            query = query.where(events_table.c.kind == kind)
        if since is not None:
            query = query.where(calls_table.c.started_at >= _utc(since))
        if until is not None:
            query = query.where(calls_table.c.started_at < _utc(until))
        return [
            EventRecord(call_id=r.call_id, at=_aware(r.at), kind=r.kind, data=r.data, id=r.id)  # type: ignore[arg-type]
            for r in self._read(query)
        ]

    def _read(self, query: sa.Select[Any]) -> list[Any]:
        try:
            self._ensure_schema()
            with self.engine.connect() as conn:
                return list(conn.execute(query))
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(
                f"cannot read call records from {_safe_url(self.url)}: {_short(exc)}",
                fix="check that the database is running and the URL (--db / IVR_STORAGE_URL)",
            ) from None

    # ---- write queue ------------------------------------------------------------------------
    def _write(self, op: str, row: dict[str, Any]) -> None:
        row = {k: _utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
        drain_now = False
        with self._lock:
            if self._pending or self._overflowed:  # keep the order: behind what is queued
                self._enqueue(op, row)
                drain_now = not self.params.background_retry and time.monotonic() >= self._next_retry
            else:
                try:
                    self._ensure_schema()
                    self._apply(op, row)
                except _RETRYABLE as exc:
                    self._went_down(exc)
                    self._enqueue(op, row)
                except sa_exc.SQLAlchemyError as exc:
                    self._reject(op, row, exc)
        if drain_now:
            self._drain()

    def _enqueue(self, op: str, row: dict[str, Any]) -> None:
        if self._spool_target is not None:
            self._spool_complete = self._spool_append([(op, row)]) and self._spool_complete
        if len(self._pending) >= self.params.max_pending:
            if self._spool_target is not None and self._spool_complete:
                self._overflowed = True  # the spool has everything; reload it when draining
            else:
                self._pending.popleft()
                self.dropped += 1
                log.error("call record queue full (%d): oldest write dropped", self.params.max_pending)
        if not self._overflowed:
            self._pending.append((op, row))
        self._start_retry_thread()

    def _drain(self) -> None:
        """Write queued records in order until the queue is empty or the database fails again."""
        with self._drain_lock:
            with self._lock:
                if self._overflowed:
                    self._pending = deque(self._read_spools())
                    self._overflowed = False
                if not self._pending:
                    return
            try:
                self._ensure_schema()
                while True:
                    with self._lock:
                        if not self._pending:
                            break
                        op, row = self._pending[0]
                    try:
                        self._apply(op, row)
                    except _RETRYABLE:
                        raise
                    except sa_exc.SQLAlchemyError as exc:
                        with self._lock:
                            self._reject(op, row, exc)
                    with self._lock:
                        self._pending.popleft()
            except _RETRYABLE as exc:
                with self._lock:
                    self._went_down(exc)
                return
            with self._lock:
                if self._pending or self._overflowed:  # a writer queued more meanwhile
                    return
                log.info("call record store is back: queued writes flushed")
                self._retry_delay = self.params.retry_s
                self._truncate_spool()

    def _went_down(self, exc: Exception) -> None:
        if not self._pending:
            log.warning("call record store unavailable (%s); queueing writes", _short(exc))
        self._next_retry = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.params.max_retry_s)

    def _reject(self, op: str, row: dict[str, Any], exc: Exception) -> None:
        self.dropped += 1
        log.error(
            "call record %s for %s rejected by the database: %s",
            op,
            row.get("call_id") or row.get("id"),
            _short(exc),
        )

    def _start_retry_thread(self) -> None:
        if not self.params.background_retry:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._retry_loop, name="callstore-retry", daemon=True)
            self._thread.start()
        self._wake.set()

    def _retry_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                idle = not self._pending and not self._overflowed
                if idle:
                    self._wake.clear()  # under the lock: a writer's set() cannot slip in between
                due = time.monotonic() >= self._next_retry
            if idle:
                self._wake.wait()
                continue
            if due:
                self._drain()
            with self._lock:
                wait = max(0.05, self._next_retry - time.monotonic())
            self._stop.wait(wait)

    # ---- spool file -------------------------------------------------------------------------
    def _spool_files(self) -> list[Path]:
        """The spool, then the fallback: the order their writes were made in."""
        return [path for path in (self.spool_path, self.fallback_spool_path) if path is not None]

    def _spool_append(self, writes: list[tuple[str, dict[str, Any]]]) -> bool:
        """Append to the spool; if that fails, to the fallback spool from now on. False if neither took it."""
        text = "".join(json.dumps([op, {k: _encode(v) for k, v in row.items()}]) + "\n" for op, row in writes)
        files = self._spool_files()
        if self._spool_target not in files:
            return False
        for path in files[files.index(self._spool_target):]:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as spool:
                    spool.write(text)
                    spool.flush()
                    os.fsync(spool.fileno())
            except OSError as exc:
                log.error("cannot append to the call record spool %s: %s", path, exc)
                continue
            if path != self._spool_target:
                log.warning("call record writes now go to the fallback spool %s", path)
                self._spool_target = path
            return True
        return False

    def _rewrite_spool(self, writes: list[tuple[str, dict[str, Any]]]) -> Path | None:
        """Replace the spool files by exactly `writes` (the queue holds every write not yet stored);
        returns the file they are in, or None if none could be written."""
        if not writes:
            self._truncate_spool()
            return None
        text = "".join(json.dumps([op, {k: _encode(v) for k, v in row.items()}]) + "\n" for op, row in writes)
        files = self._spool_files()
        if self._spool_target in files:  # the one that worked last first
            files.insert(0, files.pop(files.index(self._spool_target)))
        for path in files:
            tmp = path.with_name(path.name + ".tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with tmp.open("w", encoding="utf-8") as spool:
                    spool.write(text)
                    spool.flush()
                    os.fsync(spool.fileno())
                tmp.replace(path)
            except OSError as exc:
                log.error("cannot write the call record spool %s: %s", path, exc)
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                continue
            for other in self._spool_files():  # the others' writes are all in this one now
                if other != path:
                    with contextlib.suppress(OSError):
                        other.unlink(missing_ok=True)
            return path
        return None

    def _read_spools(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for path in self._spool_files():
            if not path.exists():
                continue
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                log.error("cannot read the call record spool %s: %s", path, exc)
                continue
            for n, line in enumerate(lines, 1):
                try:
                    op, row = json.loads(line)
                    out.append((op, {k: _decode(v) for k, v in row.items()}))
                except (ValueError, TypeError):
                    log.error("%s:%d: unreadable spooled write skipped", path, n)  # torn last line
        return out

    def _load_spool(self) -> None:
        spooled = self._read_spools()
        if spooled:
            log.warning("replaying %d call record writes spooled in %s", len(spooled),
                        " and ".join(str(p) for p in self._spool_files() if p.exists()))
            self._pending.extend(spooled)
            self._start_retry_thread()

    def _truncate_spool(self) -> None:
        for path in self._spool_files():
            if path.exists():
                try:
                    path.unlink()
                except OSError as exc:
                    log.error("cannot remove the spool %s: %s", path, exc)
        self._spool_target = self.spool_path
        self._spool_complete = True

    # ---- SQL --------------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    with self.engine.begin() as conn:
                        create_tables(conn)
                    _add_missing_columns(self.engine)
                    self._schema_ready = True

    def _apply(self, op: str, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            if op == "open_call":
                _insert_ignore(conn, calls_table, row, ["id"])
            elif op == "add_turn":
                _insert_ignore(conn, turns_table, row, ["call_id", "idx"])
            elif op == "add_event":
                _insert_ignore(conn, events_table, row, ["id"])
            elif op == "update_call":
                values = {k: v for k, v in row.items() if k != "id"}
                conn.execute(sa.update(calls_table).where(calls_table.c.id == row["id"]).values(**values))
            else:  # a spool written by a newer version
                raise sa_exc.ArgumentError(f"unknown write {op!r}")


# Any constant: the PostgreSQL advisory lock that serialises schema creation between nodes.
SCHEMA_LOCK_KEY = 0x1F5C4E11


def create_tables(conn: Connection, tables: list[sa.Table] | None = None) -> None:
    """CREATE the missing tables inside `conn`'s transaction. Several nodes starting at once on an empty
    PostgreSQL would race: concurrent CREATE TABLE of one name fails on pg_type's unique index
    (IntegrityError), not with "already exists". A transaction-level advisory lock makes them take turns,
    and the later ones find the tables there."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    metadata.create_all(conn, tables=tables)


# errors that mean "the database is not there right now": queue and retry
_RETRYABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)


def _add_missing_columns(engine: Engine) -> None:
    """ALTER TABLE ... ADD COLUMN for the ADDED_COLUMNS an older database lacks (create_all only
    creates missing tables). Several nodes may start at once on one database: a column another one
    just added is not an error."""
    inspector = sa.inspect(engine)
    for table, name in ADDED_COLUMNS:
        if name in {column["name"] for column in inspector.get_columns(table.name)}:
            continue
        column = table.c[name]
        ddl = (f"ALTER TABLE {table.name} ADD COLUMN {name} {column.type.compile(engine.dialect)} "
               f"NOT NULL DEFAULT ''")
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(ddl))
            log.warning("call records: added column %s.%s to %s", table.name, name,
                        engine.url.render_as_string(hide_password=True))
        except sa_exc.ProgrammingError:  # added meanwhile by another node (PostgreSQL)
            pass
        except sa_exc.OperationalError as exc:  # SQLite says "duplicate column"
            if "duplicate column" not in str(exc):
                raise


def _insert_ignore(conn: Connection, table: sa.Table, row: dict[str, Any], keys: list[str]) -> None:
    """INSERT that does nothing if the row exists (a retried write after a lost acknowledgement)."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        conn.execute(insert(table).values(**row).on_conflict_do_nothing(index_elements=keys))
    else:
        exists = conn.execute(
            sa.select(sa.literal(1)).select_from(table).where(*[table.c[k] == row[k] for k in keys])
        ).first()
        if not exists:
            conn.execute(sa.insert(table).values(**row))


def _make_engine(url: str, params: StoreParams) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa_exc.ArgumentError:
        raise StorageError(
            f"invalid database URL {url!r}",
            fix="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
        ) from None
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = 30  # seconds to wait for another writer's lock
    elif parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = params.connect_timeout_s
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise StorageError(
            f"cannot use database URL {_safe_url(url)}: {exc}",
            fix="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (pip install 'psycopg[binary]')",
        ) from None
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL: readers (reports) never block the writer; NORMAL sync is durable across
            # process crashes (not power loss), which is what "lose at most one turn" needs.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def _default_spool(url: str) -> Path | None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return None
        db = Path(parsed.database).expanduser()
        return db.with_name(db.name + ".spool.jsonl")
    import hashlib

    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path.home() / ".local" / "share" / "ivr" / f"spool-{tag}.jsonl"


def _fallback_spool(url: str) -> Path:
    import hashlib

    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "ivr" / f"spool-{tag}.jsonl"


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<invalid URL>"


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _redact_json(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_json(v) for v in value]
    return value


def _call_from_row(row: Any) -> CallRecord:
    data = {f.name: getattr(row, f.name) for f in fields(CallRecord)}
    data["started_at"] = _aware(data["started_at"])
    data["ended_at"] = _aware(data["ended_at"])
    data["status"] = normalize(data["status"])  # rows written before the outcomes had their names
    return CallRecord(**data)


def _turn_from_row(row: Any) -> TurnRecord:
    data = {f.name: getattr(row, f.name) for f in fields(TurnRecord)}
    data["started_at"] = _aware(data["started_at"])
    return TurnRecord(**data)
