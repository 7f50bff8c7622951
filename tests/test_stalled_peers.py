"""A peer that stops reading cannot hold a call: every socket write and drain is bounded.

Real loopback sockets: the bridge on one side, a scripted Asterisk on the other that answers AGI
but stops reading its AudioSocket connection (a tiny receive buffer, so the stall shows at once).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import socket
import time
import uuid

import pytest

from ivr.telephony.audiosocket import AudioSocketParams, HangupIn, encode_audio, encode_uuid
from ivr.telephony.bridge import Bridge, BridgeParams, HandOff, TelephonyCall
from ivr.telephony.streams import WriteStalled, close_writer, drain

WRITE_TIMEOUT_S = 1.0
ENV = b"agi_network: yes\nagi_network_script: support\nagi_channel: Local/stalled-1\nagi_uniqueid: 9.1\n\n"
AUDIO = b"\x10\x00" * 8000 * 60  # a minute, played over and over while the peer takes it
# 400 ms frames every 2 ms (4 MB/s): the kernel's send buffer (up to 4 MB here) fills in a second or two
FAST = {"frame_bytes": 6400, "frame_s": 0.002}
FRAME = b"\x00" * 320


async def _tiny_buffer_connection(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: fixes the window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


async def _stalled_media(target: str, call_uuid: str) -> float:
    """Connect as Asterisk's AudioSocket, keep sending caller frames, never read; return how long the
    server kept the connection."""
    host, _, port = target.rpartition(":")
    _reader, writer = await _tiny_buffer_connection(host, int(port))
    writer.write(encode_uuid(uuid.UUID(call_uuid)))
    started = time.monotonic()
    try:
        while not writer.transport.is_closing() and time.monotonic() - started < 60:
            writer.write(encode_audio(FRAME))
            await writer.drain()
            await asyncio.sleep(0.02)
    except (ConnectionError, OSError):
        pass  # the server dropped us: what Asterisk's AudioSocket() sees as the end of the call
    writer.transport.abort()
    return time.monotonic() - started


async def _call_with_stalled_media(agi_port: int) -> tuple[dict[str, str], float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_port)
    writer.write(ENV)
    variables: dict[str, str] = {}
    held = -1.0
    while line := await reader.readline():
        words = shlex.split(line.decode())
        if words[:2] == ["SET", "VARIABLE"]:
            variables[words[2]] = words[3]
            writer.write(b"200 result=1\n")
        elif words[:2] == ["EXEC", "AudioSocket"]:
            call_uuid, _, target = words[2].partition(",")
            held = await _stalled_media(target, call_uuid)
            writer.write(b"200 result=-1\n")  # AudioSocket() returns when its connection dies
        else:
            writer.write(b"200 result=0\n")
    writer.close()
    return variables, held


def test_a_peer_that_stops_reading_ends_its_call_fail_open(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(call: TelephonyCall) -> HandOff | None:
        while await call.audio.play(AUDIO):
            pass
        async for event in call.audio.events():
            if isinstance(event, HangupIn):
                return None
        return HandOff(reason="completed")

    async def main() -> tuple[dict[str, str], float, float, int]:
        audio = AudioSocketParams(**FAST, write_timeout_s=WRITE_TIMEOUT_S, idle_keepalive_s=0.02)
        bridge = Bridge(BridgeParams(agi_port=0, audiosocket_port=0, audio=audio), handler)
        await bridge.start()
        started = time.monotonic()
        try:
            variables, held = await asyncio.wait_for(_call_with_stalled_media(bridge.agi_port), 90)
            return variables, held, time.monotonic() - started, bridge.calls_active
        finally:
            await bridge.stop(drain_timeout_s=1)

    with caplog.at_level(logging.WARNING):
        variables, held, whole, active = asyncio.run(main())
    # the call goes back to the dialplan's menu with the reason, and its AGI leg is freed
    assert variables["IVR_ROUTE"] == "dtmf_menu" and variables["IVR_REASON"] == "audio_stalled"
    assert active == 0
    # seconds, not for as long as the playback goes on (forever, before)
    print(f"stalled AudioSocket: connection held {held:.1f} s, whole call {whole:.1f} s")
    assert 0 < held < 15 and whole < 20, (held, whole)
    assert "read nothing for 1 s" in caplog.text and "ending the call (fail-open" in caplog.text


def test_drain_and_close_are_bounded_against_a_peer_that_never_reads() -> None:
    async def main() -> tuple[type[BaseException] | None, bool]:
        accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

        async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _peer_reader, peer_writer = await _tiny_buffer_connection("127.0.0.1", port)  # never reads
        writer = await accepted
        raised: type[BaseException] | None = None
        try:
            for _ in range(1000):  # far more than the socket buffers hold
                writer.write(b"\x00" * 65536)
                await drain(writer, 0.5)
        except WriteStalled as exc:
            raised = type(exc)
        closed_cleanly = await close_writer(writer, 0.5)
        peer_writer.transport.abort()
        server.close()
        return raised, closed_cleanly

    raised, _closed = asyncio.run(asyncio.wait_for(main(), 30))
    assert raised is WriteStalled
