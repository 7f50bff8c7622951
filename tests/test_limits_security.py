"""Security defaults: every listener on loopback, peers outside `allowed_peers` refused, the AMI user
least-privileged (asterisk/manager.conf), secrets never in reprs.

The server is the real one (`run_server` with default settings, only the ports set to 0 = free);
the refused peer is a client socket bound to 127.0.0.2 (still loopback, but not an allowed peer).
"""

from __future__ import annotations

import asyncio
import configparser
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fake_asterisk import CallerScript, environment_block, fake_call  # noqa: E402
from bench.harness import ThreadedServer, temp_data_dir  # noqa: E402
from ivr.config import Settings, load_settings  # noqa: E402
from ivr.services import CallServices  # noqa: E402
from ivr.telephony.audiosocket import encode_uuid  # noqa: E402

OTHER_LOOPBACK = "127.0.0.2"  # routed to lo on Linux, but not in the default allowed_peers
TCP_LISTEN = "0A"


def _listening_sockets() -> dict[str, str]:
    """inode -> local address of every TCP socket this process listens on (/proc/net/tcp{,6} x our fds)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    found: dict[str, str] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == TCP_LISTEN and inode in ours:
                hex_addr = local.split(":")[0]
                raw = bytes.fromhex(hex_addr)
                if width == 8:
                    found[inode] = socket.inet_ntop(socket.AF_INET, raw[::-1])
                else:  # 4 little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found[inode] = socket.inet_ntop(socket.AF_INET6, words)
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    config = load_settings(env={})  # the defaults, as `ivr serve` without a config file
    config.server.agi_port = config.server.audiosocket_port = config.server.health_port = 0
    config.paths.data = temp_data_dir("ivr-security-")
    config.storage.url = f"sqlite:///{config.paths.data / 'calls.sqlite3'}"
    services = CallServices.create(config, with_records=True, with_metrics=True)  # + the /metrics listener
    before = _listening_sockets()  # other tests of this session may listen too: only ours count
    with ThreadedServer(config, services) as running:
        running.preexisting = set(before)  # type: ignore[attr-defined]
        yield running


def test_defaults_are_loopback() -> None:
    defaults = Settings()
    assert defaults.server.host == "127.0.0.1"
    assert defaults.ami.host == "127.0.0.1"
    assert set(defaults.server.allowed_peers) == {"127.0.0.1", "::1"}


def test_every_listener_of_the_running_server_is_on_loopback(server: ThreadedServer) -> None:
    ours = {inode: address for inode, address in _listening_sockets().items()
            if inode not in server.preexisting}  # type: ignore[attr-defined]
    # FastAGI, AudioSocket and /metrics (at least three listeners), all on loopback
    assert len(ours) >= 3, ours
    assert set(ours.values()) <= {"127.0.0.1", "::1"}, ours


def test_fastagi_from_a_peer_not_allowed_is_refused(server: ThreadedServer) -> None:
    bridge = server.server.bridge
    assert bridge is not None
    calls_before = bridge.calls_total
    script = CallerScript(pcm=b"\x00" * 3200, lang="ko", channel="Local/intruder")
    report = server.run(fake_call("127.0.0.1", server.agi_port, script, source_host=OTHER_LOOPBACK))
    assert report.commands == []  # closed before any AGI command: no ANSWER, no EXEC
    assert not report.audiosocket
    assert bridge.calls_total == calls_before  # the conversation handler never ran

    # the same block from an allowed peer does reach the bridge (the refusal was about the peer)
    with socket.create_connection(("127.0.0.1", server.agi_port), timeout=5) as sock:
        sock.sendall(environment_block(script, server.agi_port, "sec.1"))
        assert sock.recv(100).startswith(b"ANSWER")


def test_audiosocket_from_a_peer_not_allowed_is_refused(server: ThreadedServer) -> None:
    async def knock() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.audiosocket_port,
                                                       local_addr=(OTHER_LOOPBACK, 0))
        writer.write(encode_uuid(uuid.uuid4()))
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:  # closed with our UUID unread: refused all the same
            data = b""
        writer.close()
        return data

    assert asyncio.run(knock()) == b""  # closed without even the hang-up message


def test_ami_user_is_least_privileged() -> None:
    """asterisk/manager.conf: loopback only, and only the classes the bridge needs."""
    conf = configparser.ConfigParser(inline_comment_prefixes=(";",), strict=False)
    conf.read(ROOT / "asterisk" / "manager.conf")
    assert conf["general"]["bindaddr"] == "127.0.0.1"
    user = conf["ivr"]
    assert set(user["read"].replace(" ", "").split(",")) == {"call", "agent"}
    assert set(user["write"].replace(" ", "").split(",")) == {"originate", "reporting"}
    assert "0.0.0.0/0.0.0.0" in user["deny"] and user["permit"].startswith("127.0.0.1/")
    # never the classes that run shell commands or rewrite the configuration
    granted = set(user["read"].replace(" ", "").split(",")) | set(user["write"].replace(" ", "").split(","))
    assert not granted & {"system", "command", "config", "all", "dialplan"}


def test_secrets_stay_out_of_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(env={"IVR_AMI_SECRET": "s3cret-value-42"})
    assert settings.ami.resolved_secret() == "s3cret-value-42"
    assert "s3cret-value-42" not in repr(settings) and "s3cret-value-42" not in str(settings.model_dump())
