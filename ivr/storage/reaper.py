"""Close the call records a dead process left `active` (its bridge was killed, the machine lost power).

A call can never be active longer than `server.max_call_s` (the bridge ends it), so a record active
past that plus `REAP_MARGIN_S` is lost for certain, whichever node ran it and whether or not that
node ever comes back. `ivr serve` runs `reap_lost_calls` at start (after the spool of the last run
is replayed, so calls whose close was only queued get their real outcome) and every
`REAP_INTERVAL_S`. Sooner closes come from node leases (ivr/storage/nodes.py): a node closes its own
leftovers at start, and the others close a dead node's calls once its lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from ivr.errors import StorageError
from ivr.storage.records import CallStore, utcnow

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 60.0
# past max_call_s: the bridge's own limits (max_call_s, then its EXEC wait of 60 s) have all fired
REAP_MARGIN_S = 120.0
LOST_REASON = "bridge_lost"  # as the dialplan names a call whose bridge vanished (extensions.conf)


def reap_lost_calls(store: CallStore, max_call_s: float, margin_s: float = REAP_MARGIN_S) -> int:
    """Close records active for longer than `max_call_s + margin_s`; returns how many (0 if the
    database is down: the next round retries)."""
    before = utcnow() - timedelta(seconds=max_call_s + margin_s)
    try:
        return store.close_lost_calls(before, reason=LOST_REASON, max_call_s=max_call_s)
    except StorageError as exc:
        log.warning("lost call reaper: %s", exc)
        return 0


async def reap_forever(store: CallStore, max_call_s: float, interval_s: float = REAP_INTERVAL_S) -> None:
    """Run `reap_lost_calls` every `interval_s` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(reap_lost_calls, store, max_call_s)
