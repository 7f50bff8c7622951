"""Several bridge nodes behind one real Asterisk (the sandbox), spread and failover by the shipped
dialplan alone (asterisk/extensions.conf: IVR_AGI lists the nodes joined with &).

Each node here is a `Bridge` on its own loopback address (127.0.0.2, 127.0.0.3, ...), as nodes on
separate machines would be; Asterisk dials them all from 127.0.0.1. Calls are Local channels
originated over AMI (tests/test_telephony_asterisk.py does the same for one node). The test
of whole `ivr serve` processes killed under load is tests/test_scale_failover.py.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ivr.telephony.ami import AmiClient, AmiEvent
from ivr.telephony.bridge import Bridge, BridgeParams, HandOff, TelephonyCall
from ivr.testing.sandbox import Sandbox, _free_port

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]

LOOPBACK_PEERS = ["127.0.0.0/8"]  # Asterisk connects from 127.0.0.1 to every node


class Node:
    """One bridge node answering every call with a hand-off that names it."""

    def __init__(self, host: str, name: str, conversation_s: float = 0.3) -> None:
        self.name = name
        self.conversation_s = conversation_s
        self.took: list[str] = []  # Uniqueids of the calls this node ran
        self.bridge = Bridge(BridgeParams(host=host, agi_port=_free_port(host), audiosocket_port=0,
                                          allowed_peers=LOOPBACK_PEERS, node=name), self.handle)

    async def handle(self, call: TelephonyCall) -> HandOff | None:
        self.took.append(call.uniqueid)
        await asyncio.sleep(self.conversation_s)
        return HandOff(intent="balance", reason="handoff")

    @property
    def url(self) -> str:
        return f"agi://{self.bridge.params.host}:{self.bridge.agi_port}"


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    for node in nodes:
        await node.bridge.start()
    try:
        yield
    finally:
        for node in nodes:
            if not node.bridge.draining:
                await node.bridge.stop(drain_timeout_s=5)


async def _calls(sandbox: Sandbox, ami: AmiClient, agi: str, count: int) -> list[AmiEvent]:
    """`count` calls at once through [ivr] with IVR_AGI=`agi`; their QueueCallerJoin events."""
    calls = [await sandbox.originate_test_call(ami, [], wait_s=2, variables={"IVR_AGI": agi})
             for _ in range(count)]
    joins = [ami.expect_event(lambda e, c=c: e.name == "QueueCallerJoin" and e.get("Uniqueid") == c.ivr_uniqueid)
             for c in calls]
    events = [await asyncio.wait_for(join, 30) for join in joins]
    for call in calls:
        await call.wait_ended(30)
    return events


def test_calls_spread_over_nodes_and_skip_a_dead_one(sandbox: Sandbox) -> None:
    """Round robin over two live nodes and one whose port is closed: every call reaches a live node
    (none falls to the menu), the two share the calls evenly, and the agent sees which node ran each."""
    a, b = Node("127.0.0.2", "node-a"), Node("127.0.0.3", "node-b")
    dead = f"agi://127.0.0.4:{_free_port('127.0.0.4')}"

    async def main() -> list[AmiEvent]:
        async with running(a, b), AmiClient(sandbox.ami_settings()) as ami:
            return await _calls(sandbox, ami, f"{a.url}&{dead}&{b.url}", 6)

    joins = asyncio.run(main())
    assert [j.variables["IVR_REASON"] for j in joins] == ["handoff"] * 6  # no caller saw the menu
    by_node = collections.Counter(j.variables["IVR_NODE"] for j in joins)
    assert set(by_node) == {"node-a", "node-b"}
    assert min(by_node.values()) >= 2, by_node  # the dead node's turns go to its successor
    assert len(a.took) + len(b.took) == 6


def test_a_draining_node_finishes_its_calls_and_takes_no_new_ones(sandbox: Sandbox) -> None:
    """Node A is stopped (SIGTERM's path) while it runs a call: that call ends with its own hand-off;
    calls placed while A drains all go to node B at once, none to A, none to the menu."""
    a, b = Node("127.0.0.2", "node-a", conversation_s=3.0), Node("127.0.0.3", "node-b")

    async def main() -> tuple[AmiEvent, list[AmiEvent]]:
        async with running(a, b), AmiClient(sandbox.ami_settings()) as ami:
            agi = f"{a.url}&{b.url}"
            first = None
            for _ in range(2):  # the round robin may start on either node: two calls, one lands on A
                call = await sandbox.originate_test_call(ami, [], wait_s=4, variables={"IVR_AGI": agi})
                await asyncio.sleep(0.5)
                if a.took:
                    first = call
                    break
            assert first is not None, "no call reached node A"
            joined = ami.expect_event(lambda e: e.name == "QueueCallerJoin" and e.get("Uniqueid") == first.ivr_uniqueid)
            draining = asyncio.create_task(a.bridge.stop(drain_timeout_s=10))
            await asyncio.sleep(0.1)
            later = await _calls(sandbox, ami, agi, 4)
            await draining
            return await asyncio.wait_for(joined, 10), later

    first_join, later = asyncio.run(main())
    assert first_join.variables["IVR_NODE"] == "node-a"
    assert first_join.variables["IVR_REASON"] == "handoff"  # finished by A, not cut short
    assert [j.variables["IVR_NODE"] for j in later] == ["node-b"] * 4
    assert [j.variables["IVR_REASON"] for j in later] == ["handoff"] * 4
    assert len(a.took) == 1


def test_a_full_node_passes_calls_on_and_the_last_refusal_opens_the_menu(sandbox: Sandbox) -> None:
    """A node at max_calls answers without taking the call (IVR_NODE unset): the dialplan tries the
    next node; with every node full, the caller gets the menu (then the live line) with reason overload."""
    full = Node("127.0.0.2", "node-full")
    full.bridge.params.max_calls = 0
    other = Node("127.0.0.3", "node-b")

    async def main() -> tuple[list[AmiEvent], list[AmiEvent]]:
        async with running(full, other), AmiClient(sandbox.ami_settings()) as ami:
            passed_on = await _calls(sandbox, ami, f"{full.url}&{other.url}", 2)
            nowhere = await _calls(sandbox, ami, full.url, 1)
            return passed_on, nowhere

    passed_on, nowhere = asyncio.run(main())
    assert [j.variables["IVR_NODE"] for j in passed_on] == ["node-b"] * 2
    assert nowhere[0].variables["IVR_NODE"] == ""
    assert nowhere[0].variables["IVR_REASON"] == "overload"
    assert not full.took


def test_a_frozen_node_loses_the_call_to_the_next_one_after_the_start_guard(sandbox: Sandbox) -> None:
    """A node whose process is stuck still accepts connections (the kernel completes them) but never
    answers: after IVR_START_GUARD_S the dialplan's T extension takes the call to the next node, which
    runs it; the caller never sees the menu."""
    import socket
    import time

    b = Node("127.0.0.3", "node-b")
    frozen = socket.create_server(("127.0.0.2", 0), backlog=8)  # listening, never accepting: a stuck node
    frozen_url = f"agi://127.0.0.2:{frozen.getsockname()[1]}"

    async def one_call(ami: AmiClient) -> tuple[AmiEvent, float]:
        started = time.monotonic()
        call = await sandbox.originate_test_call(
            ami, [], wait_s=4, variables={"IVR_AGI": f"{frozen_url}&{b.url}", "IVR_START_GUARD_S": "2"})
        join = await ami.wait_event(
            lambda e: e.name == "QueueCallerJoin" and e.get("Uniqueid") == call.ivr_uniqueid, 30)
        taken = time.monotonic() - started
        await call.wait_ended(30)
        return join, taken

    async def main() -> list[tuple[AmiEvent, float]]:
        async with running(b), AmiClient(sandbox.ami_settings()) as ami:
            return [await one_call(ami) for _ in range(2)]  # the round robin starts one of them on the frozen node

    try:
        results = asyncio.run(main())
    finally:
        frozen.close()
    assert [join.variables["IVR_NODE"] for join, _ in results] == ["node-b"] * 2
    assert [join.variables["IVR_REASON"] for join, _ in results] == ["handoff"] * 2
    assert len(b.took) == 2
    assert max(taken for _, taken in results) >= 2  # one waited out the frozen node's start guard first
