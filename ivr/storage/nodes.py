"""Bridge nodes sharing one call record database: who is alive, and closing what a dead one left.

Each `ivr serve` node renews a lease in the `nodes` table (its name, its start, `last_seen`) every
`lease_s / 3`. A node whose lease ran out (killed, frozen, its machine off) runs no call any more,
so any other node closes the records it left `active` (CallStore.close_lost_calls: status "error",
reason `bridge_lost` as the dialplan names such a call). A node coming back closes its own records
from before its start at once. Without leases (ivr/storage/reaper.py) a shared database only learns
of a dead node's calls past `max_call_s`.

The survivors' clock and the database's agree well enough: the lease is tens of seconds and is
compared against `last_seen` values written by the nodes themselves with their own clocks (NTP).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ivr.errors import StorageError
from ivr.storage.records import ACTIVE, CallStore, calls_table, create_tables, metadata, utcnow

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30.0
LOST_REASON = "bridge_lost"

nodes_table = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
)


@dataclass
class NodeLease:
    """This node's lease on a shared call record database, and the reaping of dead nodes' calls."""

    store: CallStore
    name: str
    lease_s: float = DEFAULT_LEASE_S
    started_at: datetime = field(default_factory=utcnow)
    # the nodes table was made (or found) by this lease: later beats skip CREATE (on PostgreSQL it takes
    # the schema advisory lock and reflects the catalogue every beat); a failed beat makes it again, in
    # case the database came back empty
    _table_ready: bool = field(default=False, init=False, repr=False)

    @property
    def interval_s(self) -> float:
        return self.lease_s / 3

    def beat(self) -> bool:
        """Renew the lease; False if the database cannot be reached (the next beat retries)."""
        now = utcnow()
        try:
            with self.store.engine.begin() as conn:
                if not self._table_ready:
                    create_tables(conn, [nodes_table])
                updated = conn.execute(sa.update(nodes_table).where(nodes_table.c.name == self.name)
                                       .values(last_seen=now, started_at=self.started_at)).rowcount
                if not updated:
                    conn.execute(sa.insert(nodes_table).values(name=self.name, started_at=self.started_at,
                                                               last_seen=now))
        except sa_exc.SQLAlchemyError as exc:
            log.warning("node lease of %s not renewed: %s", self.name, str(exc).splitlines()[0])
            self._table_ready = False
            return False
        self._table_ready = True
        return True

    def close_own_leftovers(self) -> int:
        """At start: close this node's records from before `started_at` (its last run died)."""
        return self._close_calls(self.started_at, [self.name], "its node restarted")

    def reap_dead_nodes(self) -> int:
        """Close the active records of every other node whose lease ran out; returns how many."""
        cutoff = utcnow() - timedelta(seconds=self.lease_s)
        try:
            with self.store.engine.connect() as conn:
                dead = [row.name for row in conn.execute(
                    sa.select(nodes_table.c.name).where(nodes_table.c.last_seen < cutoff,
                                                         nodes_table.c.name != self.name))]
        except sa_exc.SQLAlchemyError as exc:
            log.warning("node lease: cannot read the nodes table: %s", str(exc).splitlines()[0])
            return 0
        if not dead:
            return 0
        closed = self._close_calls(utcnow(), dead, f"its node's lease ({self.lease_s:.0f} s) ran out")
        # forget them only once none of their calls is left active (close_lost_calls does nothing while
        # this store has writes queued, e.g. after a database hiccup: the next round tries again)
        if closed >= 0 and self.store.flush(timeout_s=5) and self._active_calls_of(dead) == 0:
            self._forget(dead)
        return max(closed, 0)

    def _active_calls_of(self, nodes: list[str]) -> int | None:
        try:
            with self.store.engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(calls_table).where(
                    calls_table.c.status == ACTIVE, calls_table.c.node.in_(nodes))).scalar_one())
        except sa_exc.SQLAlchemyError as exc:
            log.warning("node lease: cannot read the call records: %s", str(exc).splitlines()[0])
            return None

    def _close_calls(self, started_before: datetime, nodes: list[str], why: str) -> int:
        """-1 if the records cannot be read now (the next round retries)."""
        try:
            return self.store.close_lost_calls(started_before, reason=LOST_REASON, nodes=nodes,
                                               by=f"node {self.name}: {why}")
        except StorageError as exc:
            log.warning("node lease: %s", exc)
            return -1

    def _forget(self, names: list[str]) -> None:
        """Drop dead nodes whose calls are all closed: later rounds need not look at them again
        (a node that comes back takes a new lease)."""
        try:
            with self.store.engine.begin() as conn:
                conn.execute(sa.delete(nodes_table).where(nodes_table.c.name.in_(names)))
        except sa_exc.SQLAlchemyError as exc:
            log.warning("node lease: cannot update the nodes table: %s", str(exc).splitlines()[0])

    async def run(self) -> None:
        """Renew the lease and reap dead nodes every `interval_s`, until cancelled."""
        while True:
            await asyncio.to_thread(self.beat)
            await asyncio.to_thread(self.reap_dead_nodes)
            await asyncio.sleep(self.interval_s)
