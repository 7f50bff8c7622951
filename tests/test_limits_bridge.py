"""The bridge's limits on the real server: first-message timeout, frame-size cap, max concurrent
calls (clean refusal that fails open to the DTMF menu) and max call length.

One real server (`run_server`, Vosk Korean, SQLite records) with small limits; the callers are fake
Asterisk channels (bench/fake_asterisk.py) speaking FastAGI + AudioSocket on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fake_asterisk import CallerReport, CallerScript, fake_call  # noqa: E402
from bench.harness import ThreadedServer, bench_settings, temp_data_dir  # noqa: E402
from ivr.errors import ProtocolError  # noqa: E402
from ivr.services import CallServices  # noqa: E402
from ivr.telephony.audiosocket import DEFAULT_MAX_PAYLOAD, HEADER, KIND_AUDIO, AudioSocketParser  # noqa: E402

pytestmark = pytest.mark.slow

FIRST_MESSAGE_TIMEOUT_S = 1.0
MAX_CALLS = 2
MAX_CALL_S = 3
SLACK_S = 5.0  # scheduling slack on a busy 2-core machine; limits are checked as upper bounds
SILENCE = b"\x00" * 3200


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    config = bench_settings(temp_data_dir("ivr-limits-"), max_calls=MAX_CALLS, max_call_s=MAX_CALL_S,
                            first_message_timeout_s=FIRST_MESSAGE_TIMEOUT_S)
    services = CallServices.create(config, with_records=True)
    with ThreadedServer(config, services) as running:
        running.run(asyncio.to_thread(services.asr_engine, "ko"))  # load the model before the clocks start
        yield running


def _held_open_for(port: int) -> float:
    """Connect, send nothing, and time how long the server keeps the connection."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=FIRST_MESSAGE_TIMEOUT_S + SLACK_S) as sock:
        assert sock.recv(100) == b""
    return time.monotonic() - started


@pytest.mark.parametrize("listener", ["agi", "audiosocket"])
def test_first_message_timeout_closes_a_silent_connection(server: ThreadedServer, listener: str) -> None:
    port = server.agi_port if listener == "agi" else server.audiosocket_port
    held = _held_open_for(port)
    assert FIRST_MESSAGE_TIMEOUT_S * 0.9 <= held < FIRST_MESSAGE_TIMEOUT_S + SLACK_S


def test_frame_size_cap_boundary() -> None:
    parser = AudioSocketParser()
    (frame,) = parser.feed(HEADER.pack(KIND_AUDIO, DEFAULT_MAX_PAYLOAD) + b"\x00" * DEFAULT_MAX_PAYLOAD)
    assert len(frame.pcm) == DEFAULT_MAX_PAYLOAD
    with pytest.raises(ProtocolError, match="exceeds the cap"):
        AudioSocketParser().feed(HEADER.pack(KIND_AUDIO, DEFAULT_MAX_PAYLOAD + 1))


def test_frame_over_the_cap_mid_call_ends_only_that_call(server: ThreadedServer) -> None:
    report = server.run(fake_call("127.0.0.1", server.agi_port, CallerScript(
        pcm=SILENCE, lang="ko", channel="Local/oversized-2", misbehave="oversized_frame", max_call_s=20)))
    assert report.audiosocket and report.hung_up_by == "server"
    # cut at the bad frame (1 s in) as a hang-up, not later by max_call_s (which would set IVR_REASON=timeout)
    # no hand-off (the dialplan's bridge_lost); IVR_NODE only says which node took the call
    assert not [k for k in report.variables if k.startswith("IVR_") and k != "IVR_NODE"]
    assert report.variables["TIMEOUT(absolute)"] == "103"  # the dialplan guard: max_call_s 3 + bridge grace 10 + 90 s
    assert server.serving


def _silent_call(server: ThreadedServer, name: str) -> Future[CallerReport]:
    return server.submit(fake_call("127.0.0.1", server.agi_port, CallerScript(
        pcm=SILENCE, lang="ko", channel=name, speak=False, max_call_s=MAX_CALL_S + 20)))


def test_max_calls_refuses_cleanly_and_fails_open_then_max_call_length_ends_the_held_calls(
        server: ThreadedServer) -> None:
    bridge = server.server.bridge
    assert bridge is not None
    held = [_silent_call(server, f"Local/held-{i}") for i in range(MAX_CALLS)]
    deadline = time.monotonic() + SLACK_S
    while bridge.calls_active < MAX_CALLS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bridge.calls_active == MAX_CALLS

    started = time.monotonic()
    refused = server.run(fake_call("127.0.0.1", server.agi_port, CallerScript(
        pcm=SILENCE, lang="ko", channel="Local/over-limit")))
    # refused at once, without media, and sent to the push-button menu (not dropped)
    assert time.monotonic() - started < SLACK_S
    assert not refused.audiosocket and "EXEC" not in refused.commands
    assert refused.variables["IVR_ROUTE"] == "dtmf_menu"
    assert refused.variables["IVR_REASON"] == "overload"

    # max call length: the held calls are ended by the server and handed back to the dialplan
    for future in held:
        report = future.result(timeout=MAX_CALL_S + 3 * SLACK_S)
        assert report.hung_up_by == "server"
        assert report.duration_s < MAX_CALL_S + SLACK_S
        # the call's own timer fires first (the bridge allows a grace period): the caller goes to
        # the live queue with the reason, never to silence
        route, reason = report.variables.get("IVR_ROUTE"), report.variables.get("IVR_REASON")
        assert (route, reason) == ("queue", "max_call_length"), report.variables

    # capacity is back: the next call is served normally
    assert bridge.calls_active == 0
    again = _silent_call(server, "Local/after-limit").result(timeout=MAX_CALL_S + 3 * SLACK_S)
    assert again.audiosocket and again.variables.get("IVR_REASON") != "overload"


def test_a_call_cut_at_max_call_length_has_its_record_closed(server: ThreadedServer) -> None:
    from ivr.storage.records import CallStore

    report = _silent_call(server, "Local/record-cut").result(timeout=MAX_CALL_S + 3 * SLACK_S)
    assert report.hung_up_by == "server"
    store = CallStore(server.server.settings.storage_url)
    try:
        deadline = time.monotonic() + SLACK_S
        while time.monotonic() < deadline:
            mine = [c for c in store.calls() if c.channel == "Local/record-cut"]
            if mine and mine[0].ended_at is not None:
                break
            time.sleep(0.2)
    finally:
        store.close()
    assert mine, "no record at all for the call"
    assert mine[0].ended_at is not None and mine[0].status != "active"
