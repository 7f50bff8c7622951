"""Bounded writes for the asyncio streams of AGI and AudioSocket.

A peer that stops reading (a frozen Asterisk, a half-dead network path) fills the socket buffer;
from then on an unbounded `drain()` or `wait_closed()` waits forever and holds the call. Every
write here is bounded: past the timeout the connection is dropped (`abort()`) and the caller
learns it, so the call can fail open and its legs are freed.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

# What a healthy peer on a LAN needs to take a few KB is milliseconds; this is seconds of silence.
WRITE_TIMEOUT_S = 5.0


class WriteStalled(ConnectionError):
    """The peer read nothing for the write timeout; the connection has been dropped."""


async def drain(writer: asyncio.StreamWriter, timeout_s: float = WRITE_TIMEOUT_S) -> None:
    """`writer.drain()` for at most `timeout_s`; then abort the connection and raise WriteStalled."""
    transport = writer.transport
    if not transport.is_closing() and transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[0]:
        # At or under the low-water mark the writer is not paused, so drain() cannot wait: call it
        # without the timeout's task and timer (a call sends 50 frames a second; see docs/performance.md).
        await writer.drain()
        return
    try:
        await asyncio.wait_for(writer.drain(), timeout_s)
    except TimeoutError:
        writer.transport.abort()
        raise WriteStalled(f"the peer {_peer(writer)} read nothing for {timeout_s:g} s; connection dropped") from None


async def close_writer(writer: asyncio.StreamWriter, timeout_s: float = WRITE_TIMEOUT_S) -> bool:
    """Close a stream, letting the peer take what is still buffered for up to `timeout_s`; past that
    drop the connection (a transport closes only once its buffer is flushed: with a stalled peer,
    never). Returns False if it had to be dropped."""
    if not writer.is_closing():
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    except TimeoutError:
        log.warning("closing the connection to %s: the peer read nothing for %g s; dropped it",
                    _peer(writer), timeout_s)
        writer.transport.abort()
        return False
    except (ConnectionError, OSError):
        pass
    return True


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"
