"""Hostile input on the real listeners while a good call is in progress.

One real server (`run_server`: bridge + CallSession + Vosk Korean + SQLite records) on loopback.
A good fake-Asterisk call (bench/fake_asterisk.py) runs from the start; meanwhile random bytes,
slow drips (slowloris), oversized blocks and misbehaving "Asterisks" hit the FastAGI and
AudioSocket ports. Every bad connection is closed by the server within its limits, the server
keeps serving, the misbehaving calls fail open (IVR_ROUTE=dtmf_menu), and the good call gets its
reply as usual.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fake_asterisk import CallerReport, CallerScript, fake_call  # noqa: E402
from bench.harness import ThreadedServer, bench_settings, temp_data_dir  # noqa: E402
from ivr.services import CallServices  # noqa: E402
from ivr.telephony.audiosocket import HEADER, KIND_AUDIO, encode_uuid  # noqa: E402

pytestmark = pytest.mark.slow

FIRST_MESSAGE_TIMEOUT_S = 1.0
CLOSE_WITHIN_S = FIRST_MESSAGE_TIMEOUT_S + 4.0  # generous: the machine may be busy
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
KO_FIXTURE = ROOT / "audio_fixtures" / "ko" / "balance_1.wav"


def _pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


class Running:
    def __init__(self, server: ThreadedServer, good: object) -> None:
        self.server = server
        self.good = good  # concurrent.futures.Future[CallerReport]


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    config = bench_settings(temp_data_dir("ivr-fuzz-server-"), first_message_timeout_s=FIRST_MESSAGE_TIMEOUT_S)
    config.server.audiosocket_connect_timeout_s = 2.0
    services = CallServices.create(config, with_records=True)
    with ThreadedServer(config, services) as server:
        server.run(asyncio.to_thread(services.asr_engine, "ko"))  # load the model before the clock starts
        good = server.submit(fake_call("127.0.0.1", server.agi_port, CallerScript(
            pcm=_pcm(KO_FIXTURE), lang="ko", channel="Local/good-1", listen_s=1.0)))
        yield Running(server, good)


def _drain_until_closed(sock: socket.socket, within_s: float) -> bytes:
    """Read until the server closes; fails the test if it does not within `within_s`."""
    sock.settimeout(within_s)
    got = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not data:
            return got
        got += data
    raise AssertionError(f"the server kept the connection open for more than {within_s} s")


def _send_and_close(port: int, data: bytes, cuts: list[int]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        last = 0
        for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
            try:
                sock.sendall(data[last:cut])
            except (BrokenPipeError, ConnectionResetError):
                return b""  # the server already closed it: what we want
            last = cut
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # ENOTCONN: the server closed first
            return b""
        return _drain_until_closed(sock, CLOSE_WITHIN_S)


@FUZZ
@given(st.one_of(st.binary(max_size=3000), st.text(max_size=500).map(lambda t: t.encode())),
       st.lists(st.integers(0, 3000), max_size=10))
def test_garbage_on_the_agi_port_is_closed(running: Running, data: bytes, cuts: list[int]) -> None:
    reply = _send_and_close(running.server.agi_port, data, cuts)
    # a garbage block never starts a conversation (a block that happens to be valid may get ANSWER)
    assert reply in (b"",) or reply.startswith(b"ANSWER")
    assert running.server.serving


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
def test_garbage_on_the_audiosocket_port_is_closed(running: Running, data: bytes, cuts: list[int]) -> None:
    reply = _send_and_close(running.server.audiosocket_port, data, cuts)
    assert reply in (b"", b"\x00\x00\x00")  # nothing, or a hang-up message for an unknown call UUID
    assert running.server.serving


def test_slowloris_connections_are_cut_at_the_first_message_timeout(running: Running) -> None:
    async def drip(port: int, payload: bytes) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        try:
            for byte in payload:
                writer.write(bytes([byte]))
                await writer.drain()
                read = asyncio.ensure_future(reader.read(1))
                done, _ = await asyncio.wait({read}, timeout=0.2)
                if done and not read.result():
                    return time.monotonic() - started  # closed by the server
                read.cancel()
            data = await asyncio.wait_for(reader.read(), CLOSE_WITHIN_S)
            assert data in (b"",)
            return time.monotonic() - started
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        finally:
            writer.close()

    async def main() -> list[float]:
        agi = b"agi_network_script: support?lang=ko\n" * 10
        audio = encode_uuid(__import__("uuid").uuid4()) * 10
        return await asyncio.gather(*(drip(running.server.agi_port, agi) for _ in range(10)),
                                    *(drip(running.server.audiosocket_port, audio) for _ in range(10)))

    held = asyncio.run(main())
    assert max(held) < CLOSE_WITHIN_S + 1  # each drip was cut, none held a slot forever
    assert running.server.serving


def test_oversized_input_is_refused(running: Running) -> None:
    # an environment block of 200 lines * 1 KB with no blank line: over MAX_ENV_BYTES
    block = b"".join(b"agi_x%d: %s\n" % (i, b"y" * 1000) for i in range(200))
    assert _send_and_close(running.server.agi_port, block, []) == b""
    # one 200 KB line with no newline at all
    assert _send_and_close(running.server.agi_port, b"agi_x: " + b"z" * 200_000, []) == b""
    # an AudioSocket frame announcing 65535 bytes
    assert _send_and_close(running.server.audiosocket_port, HEADER.pack(KIND_AUDIO, 0xFFFF) + b"\x00" * 100, []) \
        == b""
    assert running.server.serving


def _call(running: Running, **script: object) -> CallerReport:
    pcm = _pcm(KO_FIXTURE)
    return running.server.run(fake_call("127.0.0.1", running.server.agi_port,
                                        CallerScript(pcm=pcm, lang="ko", **script)), timeout=60)


def test_asterisk_that_cannot_connect_audiosocket_fails_open(running: Running) -> None:
    report = _call(running, channel="Local/no-audio-1", misbehave="no_audiosocket")
    assert report.variables.get("IVR_ROUTE") == "dtmf_menu"
    assert report.variables.get("IVR_REASON") == "audiosocket_unreachable"


def test_garbage_agi_replies_end_the_session_without_harm(running: Running) -> None:
    report = _call(running, channel="Local/garbage-1", misbehave="garbage_reply")
    assert report.commands[:1] == ["ANSWER"]  # the server asked, got junk, and hung up the AGI session
    assert not report.audiosocket
    assert running.server.serving


def test_oversized_frame_mid_call_ends_that_call_only(running: Running) -> None:
    report = _call(running, channel="Local/oversized-1", misbehave="oversized_frame", max_call_s=30)
    assert report.audiosocket and report.hung_up_by == "server"
    assert running.server.serving


def test_the_good_call_was_not_disturbed(running: Running) -> None:
    report: CallerReport = running.good.result(timeout=90)
    assert report.ok, report.error
    assert report.greeting_s > 0 and report.latency_ms is not None and report.reply_frames > 0
    turns = running.server.taps.turns["Local/good-1"]
    assert turns and not turns[0].no_input  # the server heard the utterance and answered it
    bridge = running.server.server.bridge
    assert bridge is not None
    deadline = time.monotonic() + 10
    while bridge.calls_active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bridge.calls_active == 0
    assert running.server.serving
