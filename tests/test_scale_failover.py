"""Three `ivr serve` nodes behind the sandbox Asterisk, one PostgreSQL for their call records, and
nodes lost under load: one killed (`kill -9`), one stopped (SIGTERM) while callers talk to them.

Everything is real: the shipped dialplan spreads the calls (IVR_AGI lists the three nodes), each node
is the `ivr serve` process ops run (Whisper, the support flow, TTS) on its own loopback address, the
callers are Asterisk Local channels saying recorded utterances in turn ([ivr-test-turns]).

Who closes the killed node's records: the survivors, once its lease in the shared database runs out
(`server.node_lease_s`, 3 s here; ivr/storage/nodes.py). No restart of the dead node is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from ivr.storage.records import CallStore, StoreParams
from ivr.telephony.ami import AmiClient, AmiEvent
from ivr.testing.fixtures import load_manifest
from ivr.testing.pgserver import TempPostgres, find_pg_bin
from ivr.testing.sandbox import Sandbox, SandboxCall, _free_port
from ivr.testing.testcall import originate_turns

pytestmark = [pytest.mark.asterisk, pytest.mark.postgres, pytest.mark.slow]

LEASE_S = 3.0
CALLER = "+15550100"  # a subscriber of the demo database
LONG_CALL = "en_balance_then_goodbye"  # two turns: long enough to be in progress when a node goes
SHORT_CALL = "en_operator_handoff"  # one turn, then the live line


@dataclass
class ServeNode:
    name: str
    host: str
    process: subprocess.Popen[str]
    agi_port: int
    health_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"agi://{self.host}:{self.agi_port}"

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.health_port}/healthz", timeout=10) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # 503 while draining: the body still says why
            return json.loads(exc.read())


def _start_node(name: str, host: str, storage_url: str, tmp_path: Path) -> ServeNode:
    data = tmp_path / name
    data.mkdir()
    agi_port, health_port = _free_port(host), _free_port(host)
    config = {
        "server": {"node": name, "host": host, "agi_port": agi_port, "audiosocket_port": _free_port(host),
                   "health_port": health_port, "allowed_peers": ["127.0.0.0/8"], "node_lease_s": LEASE_S,
                   "drain_timeout_s": 120, "warm_langs": ["en"]},
        "storage": {"url": storage_url},
        "paths": {"data": str(data)},
        "call_time": load_manifest().call_time,
    }
    (data / "ivr.yaml").write_text(yaml.safe_dump(config))
    log = data / "serve.log"
    env = {**os.environ, "IVR_CONFIG": str(data / "ivr.yaml")}
    process = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], stdout=subprocess.PIPE,
                               stderr=log.open("w"), text=True, env=env)
    return ServeNode(name, host, process, agi_port, health_port, log)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    server = TempPostgres()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def nodes(postgres_url: str, tmp_path: Path) -> Iterator[list[ServeNode]]:
    started = [_start_node(f"node-{c}", f"127.0.0.{i}", postgres_url, tmp_path)
               for i, c in ((2, "a"), (3, "b"), (4, "c"))]
    try:
        for node in started:
            assert node.process.stdout is not None
            line = node.process.stdout.readline()  # printed once its listeners are up
            assert f"node {node.name}" in line, (line, node.log.read_text()[-2000:])
        yield started
    finally:
        for node in started:
            if node.process.poll() is None:
                node.process.kill()
            node.process.wait()


async def _until(predicate, timeout_s: float, what: str) -> None:  # noqa: ANN001 - a no-argument callable
    """Poll a blocking `predicate` (HTTP, SQL) in a thread, so AMI events keep flowing meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_a_node_killed_and_a_node_stopped_under_load(sandbox: Sandbox, nodes: list[ServeNode],
                                                      postgres_url: str) -> None:
    a, b, c = nodes
    agi = "&".join(n.url for n in nodes)
    manifest = {call.name: call for call in load_manifest().calls}
    sounds = {name: [sandbox.install_sound(turn.path, name=f"scale-{name}-{i}")
                     for i, turn in enumerate(manifest[name].turns)] for name in (LONG_CALL, SHORT_CALL)}
    joins: dict[str, AmiEvent] = {}
    killed_at: list[datetime] = []

    def on_event(event: AmiEvent) -> None:
        if event.name == "QueueCallerJoin":
            joins.setdefault(event.get("Uniqueid"), event)

    async def call(ami: AmiClient, name: str) -> SandboxCall:
        return await originate_turns(ami, sounds[name], caller_id=CALLER, wait_s=2, variables={"IVR_AGI": agi})

    def active(node: ServeNode) -> int:
        return int(node.health()["calls_active"])

    watcher = CallStore(postgres_url, StoreParams(spool=False, background_retry=False))

    def records_of(node: str) -> int:
        return sum(1 for r in watcher.calls() if r.node == node)

    async def main() -> dict[str, list[SandboxCall]]:
        async with AmiClient(sandbox.ami_settings(), on_event) as ami:
            # load: long conversations on every node
            loaded = [await call(ami, LONG_CALL) for _ in range(4)]
            # in conversation on node-a and node-b, their records written (a node killed within milliseconds
            # of taking a call, before its record's first write, leaves no record of it: docs/scaling.md)
            await _until(lambda: active(a) >= 1 and active(b) >= 1 and records_of("node-a") >= active(a), 60,
                         "calls in progress on node-a and node-b")
            a.process.send_signal(signal.SIGKILL)  # as the OOM killer would
            killed_at.append(datetime.now(UTC))
            # new calls right after the death: the survivors take them, nobody hears the menu
            after_kill = [await call(ami, SHORT_CALL) for _ in range(2)]
            b.process.send_signal(signal.SIGTERM)  # drain: its calls finish, new ones go elsewhere
            await _until(lambda: b.health()["status"] == "draining", 10, "node-b draining")
            while_draining = [await call(ami, SHORT_CALL) for _ in range(2)]
            for test_call in loaded + after_kill + while_draining:
                await test_call.wait_ended(150)
            return {"loaded": loaded, "after_kill": after_kill, "while_draining": while_draining}

    try:
        calls = asyncio.run(main())
    finally:
        watcher.close()
    assert b.process.wait(timeout=60) == 0  # drained and exited cleanly
    assert c.process.poll() is None

    # every call has one record in the shared database, none left active: node-a's are closed by a
    # survivor once node-a's lease ran out
    store = CallStore(postgres_url, StoreParams(spool=False, background_retry=False))
    everyone = [tc for group in calls.values() for tc in group]

    def all_closed() -> bool:
        found = [store.call(tc.ivr_uniqueid) for tc in everyone]
        return all(r is not None and r.status != "active" and r.ended_at is not None for r in found)

    try:
        asyncio.run(_until(all_closed, 4 * LEASE_S + 10, "every record closed"))
    except AssertionError:
        still = {tc.ivr_uniqueid: store.call(tc.ivr_uniqueid) for tc in everyone}
        details = {k: (r.node, r.status) if r else None for k, r in still.items()
                   if r is None or r.status == "active"}
        raise AssertionError(f"records not closed: {details}; node-c log: {c.log.read_text()[-3000:]}") from None
    records = {tc.ivr_uniqueid: store.call(tc.ivr_uniqueid) for tc in everyone}
    store.close()

    def node_of(tc: SandboxCall) -> str:
        return records[tc.ivr_uniqueid].node  # type: ignore[union-attr]

    # the killed node's callers went to the menu and on to the live line (fail-open, no hang-up), and
    # their records say so
    lost = [tc for tc in calls["loaded"] if node_of(tc) == "node-a"]
    assert lost, "no call was in progress on the killed node"
    for tc in lost:
        assert joins[tc.ivr_uniqueid].variables["IVR_REASON"] == "bridge_lost"
        assert records[tc.ivr_uniqueid].handoff_reason == "bridge_lost"  # type: ignore[union-attr]
    # node-b's calls in progress at SIGTERM finished their conversation (not cut short, not lost)
    drained = [tc for tc in calls["loaded"] if node_of(tc) == "node-b"]
    assert drained
    for tc in drained:
        assert records[tc.ivr_uniqueid].handoff_reason not in ("cancelled", "bridge_lost"), records[tc.ivr_uniqueid]
        assert joins.get(tc.ivr_uniqueid) is None or joins[tc.ivr_uniqueid].variables["IVR_REASON"] != "shutdown"
    # calls placed after the kill were taken by survivors; while node-b drained, by node-c alone
    assert {node_of(tc) for tc in calls["after_kill"]} <= {"node-b", "node-c"}
    assert {node_of(tc) for tc in calls["while_draining"]} == {"node-c"}
    # `ivr report` on the shared database sees every node's calls, none still active
    report = json.loads(subprocess.run([sys.executable, "-m", "ivr.cli", "report", "--db", postgres_url, "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    assert report["calls"] == len(everyone) and report["outcomes"]["active"] == 0
    assert sum(report["nodes"].values()) == len(everyone) and report["nodes"]["node-a"] == len(lost)
    # ...at once: the first one's conversation began (AGI, AudioSocket, record opened) within 1 s of the kill
    first = min(records[tc.ivr_uniqueid].started_at for tc in calls["after_kill"])  # type: ignore[union-attr]
    assert (first - killed_at[0]).total_seconds() < 1.0
