"""Telephony pieces over real loopback sockets, with a scripted peer in place of Asterisk for the
cases a real Asterisk will not produce on demand (a HANGUP line mid-command, a hostile peer)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ivr.telephony.agi import AgiHangup, AgiServer, AgiServerParams, AgiSession
from ivr.telephony.ami import unescape_variable
from ivr.telephony.audiosocket import (
    AudioIn,
    AudioSocketParams,
    AudioSocketParser,
    AudioSocketServer,
    DtmfIn,
    HangupIn,
    encode_audio,
    encode_message,
    encode_uuid,
)
from ivr.telephony.bridge import HandOff
from ivr.telephony.peers import PeerAllowList
from ivr.testing.sandbox import set_option

ENV = b"agi_network: yes\nagi_network_script: billing?lang=ru\nagi_channel: PJSIP/1-0001\nagi_uniqueid: 1.1\n\n"


def test_handoff_variables_are_flattened_prefixed_and_bounded() -> None:
    handoff = HandOff(intent="lost_card", summary="line one\nline two " + "я" * 2000, queue="cards",
                      variables={"CONFIDENCE": "0.9", "IVR_LANG": "ru"})
    out = handoff.channel_variables()
    assert out["IVR_ROUTE"] == "queue" and out["IVR_QUEUE"] == "cards"
    assert out["IVR_CONFIDENCE"] == "0.9" and out["IVR_LANG"] == "ru"
    assert len(out["IVR_SUMMARY"].encode()) <= 1500
    assert out["IVR_SUMMARY"].startswith("line one line two")  # flattened: one AGI line


def test_set_option_keeps_the_ops_file() -> None:
    text = "; comment\n[general]\nport = 5038 ; default\n\n[ivr]\nsecret = change-me\nread = call\n"
    out = set_option(set_option(text, "general", "port", "6000"), "ivr", "secret", "s3")
    assert out == "; comment\n[general]\nport = 6000\n\n[ivr]\nsecret = s3\nread = call\n"
    assert "[options]\ntransmit_silence = yes" in set_option(text, "options", "transmit_silence", "yes")
    dirs = set_option("[directories]\nastetcdir => /etc/asterisk\n", "directories", "astetcdir", "/srv/x")
    assert dirs == "[directories]\nastetcdir => /srv/x\n"


def test_unescape_ami_variable() -> None:
    assert unescape_variable('say \\"hi\\" \\\\ ok') == 'say "hi" \\ ok'
    assert unescape_variable("plain") == "plain"


async def _agi_pair(script: list[bytes]) -> tuple[AgiServer, list[AgiSession | Exception], list[bytes]]:
    """An AgiServer on loopback and a fake Asterisk that sends ENV, then one reply per command."""
    sessions: list[AgiSession | Exception] = []
    received: list[bytes] = []

    async def handler(session: AgiSession) -> None:
        sessions.append(session)
        try:
            await session.set_variable("IVR_X", 'a "b"\nc')
            await session.answer()
        except Exception as exc:  # noqa: BLE001 - recorded for the test to inspect
            sessions.append(exc)

    server = AgiServer(AgiServerParams(port=0, first_message_timeout_s=0.5), routes={"billing": handler})
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(ENV)
    for reply in script:
        received.append(await reader.readline())
        writer.write(reply)
    await reader.read()  # the server closes when the handler returns
    writer.close()
    await server.stop_accepting()
    return server, sessions, received


def test_agi_session_over_socket_routes_quotes_and_hangup() -> None:
    _server, sessions, received = asyncio.run(_agi_pair([b"200 result=1\n", b"HANGUP\n511 dead\n"]))
    session, error = sessions
    assert isinstance(session, AgiSession)
    assert session.request.flow == "billing" and session.request.query == {"lang": "ru"}
    assert received == [b'SET VARIABLE "IVR_X" "a \\"b\\" c"\n', b"ANSWER\n"]
    assert isinstance(error, AgiHangup) and session.hung_up


def test_agi_server_refuses_peers_not_allowed() -> None:
    async def main() -> bytes:
        called = []
        server = AgiServer(AgiServerParams(port=0, allowed_peers=["10.9.9.9"]), default=lambda s: called.append(s))
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(ENV)
        try:
            data = await asyncio.wait_for(reader.read(), 2)
        except ConnectionResetError:  # closed with our environment unread: also a refusal
            data = b""
        writer.close()
        await server.stop_accepting()
        assert not called
        return data

    assert asyncio.run(main()) == b""  # closed without a word


def test_allowed_peers_take_networks_and_mapped_ipv4() -> None:
    peers = PeerAllowList(["10.0.0.0/24", "::1", "192.168.1.7"])
    assert peers.allows("10.0.0.200") and peers.allows("192.168.1.7") and peers.allows("::1")
    assert peers.allows("::ffff:10.0.0.9")  # a dual-stack listener reports IPv4 peers like this
    assert not peers.allows("10.0.1.1") and not peers.allows("192.168.1.8") and not peers.allows("")
    assert not peers.allows("asterisk.example")  # a peer name is never an address
    with pytest.raises(ValueError, match=r"entry 'asterisk\.local' is not an IP address or network"):
        PeerAllowList(["asterisk.local"])


@pytest.mark.parametrize(("allowed", "source", "reached"), [
    (["127.0.0.0/30"], "127.0.0.2", True),  # inside the network: the flow runs
    (["127.0.0.0/30"], "127.0.0.5", False),  # outside it: closed without a word, no flow
])
def test_agi_server_judges_peers_by_network(allowed: list[str], source: str, reached: bool) -> None:
    async def main() -> tuple[bytes, int]:
        called = []

        async def handler(session: AgiSession) -> None:
            called.append(session)

        server = AgiServer(AgiServerParams(port=0, allowed_peers=allowed), default=handler)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))
        writer.write(ENV)
        try:
            data = await asyncio.wait_for(reader.read(), 2)
        except ConnectionResetError:
            data = b""
        writer.close()
        await server.stop_accepting()
        return data, len(called)

    data, handled = asyncio.run(main())
    assert handled == int(reached)
    if not reached:
        assert data == b""


def test_agi_server_first_message_timeout() -> None:
    async def main() -> bytes:
        server = AgiServer(AgiServerParams(port=0, first_message_timeout_s=0.2), default=None)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = await asyncio.wait_for(reader.read(), 2)  # we never send the environment
        writer.close()
        await server.stop_accepting()
        return data

    assert asyncio.run(main()) == b""


async def _audiosocket_pair(params: AudioSocketParams):
    server = AudioSocketServer(port=0, params=params)
    await server.start()
    call = uuid.uuid4()
    expected = server.expect(call)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(encode_uuid(call))
    session = await asyncio.wait_for(expected, 2)
    return server, session, reader, writer


def test_audiosocket_session_events_priority_and_hangup() -> None:
    async def main() -> list:
        server, session, _reader, writer = await _audiosocket_pair(AudioSocketParams(idle_keepalive_s=0))
        writer.write(b"".join(encode_audio(bytes([i]) * 320) for i in range(5)))
        writer.write(encode_message(DtmfIn("7")) + encode_message(HangupIn()))
        await writer.drain()
        await asyncio.sleep(0.1)  # everything is queued before we start reading
        events = [event async for event in session.events()]
        await session.close()
        await server.stop()
        return events

    events = asyncio.run(main())
    # DTMF and hang-up overtake queued audio; the iterator ends at the hang-up
    assert events[0] == DtmfIn("7") and events[1] == HangupIn()
    assert len(events) == 2


def test_audiosocket_play_is_paced_and_stops_within_a_frame() -> None:
    async def main() -> tuple:
        server, session, reader, writer = await _audiosocket_pair(AudioSocketParams(idle_keepalive_s=0))
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = await session.play(b"\x01\x00" * 8000)  # 1 s = 50 frames
        elapsed = loop.time() - start
        task = asyncio.create_task(session.play(b"\x02\x00" * 8000))
        await asyncio.sleep(0.2)
        session.stop_playback()
        sent_at_stop = session.stats.frames_out
        stopped = await task
        after = session.stats.frames_out - sent_at_stop
        await session.close()
        data = b""
        while chunk := await reader.read(65536):
            data += chunk
        writer.close()
        await server.stop()
        return done, elapsed, stopped, after, AudioSocketParser().feed(data), session.stats

    done, elapsed, stopped, after, messages, stats = asyncio.run(main())
    assert done is True and stopped is False
    assert after <= 1  # at most the frame already due when stop_playback() was called
    assert elapsed >= 0.98  # paced, not sent in a burst (an upper bound would be a timing flake)
    audio = [m for m in messages if isinstance(m, AudioIn)]
    assert all(len(m.pcm) == 320 for m in audio)
    assert len(audio) == stats.frames_out and 50 < len(audio) < 70
    assert messages[-1] == HangupIn()  # close() tells Asterisk to end AudioSocket()


def test_audiosocket_idle_keepalive_sends_silence() -> None:
    async def main() -> list:
        server, session, reader, writer = await _audiosocket_pair(AudioSocketParams(idle_keepalive_s=0.05))
        await asyncio.sleep(0.3)
        await session.close()
        data = b""
        while chunk := await reader.read(65536):
            data += chunk
        writer.close()
        await server.stop()
        return AudioSocketParser().feed(data)

    messages = asyncio.run(main())
    silence = [m for m in messages if isinstance(m, AudioIn)]
    assert silence and all(m.pcm == bytes(320) for m in silence)


def test_audiosocket_unexpected_uuid_is_hung_up() -> None:
    async def main() -> bytes:
        server = AudioSocketServer(port=0)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_uuid(uuid.uuid4()))
        data = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        await server.stop()
        return data

    assert asyncio.run(main()) == b"\x00\x00\x00"


@pytest.mark.parametrize("garbage", [b"\x42\x00\x00", b"\x10\xff\xff"])
def test_audiosocket_garbage_first_message_is_closed(garbage: bytes) -> None:
    async def main() -> bytes:
        server = AudioSocketServer(port=0)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(garbage)
        data = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        await server.stop()
        return data

    assert asyncio.run(main()) == b""


def test_agi_server_survives_an_endless_line_and_serves_the_next_call() -> None:
    async def main() -> list[str]:
        flows: list[str] = []

        async def handler(session: AgiSession) -> None:
            flows.append(session.request.flow)

        server = AgiServer(AgiServerParams(port=0, first_message_timeout_s=2), default=handler)
        await server.start()
        _r, bad = await asyncio.open_connection("127.0.0.1", server.port)
        bad.write(b"agi_network: " + b"x" * 200_000)  # no newline, larger than any sane line
        await bad.drain()
        reader, good = await asyncio.open_connection("127.0.0.1", server.port)
        good.write(ENV)
        await asyncio.wait_for(reader.read(), 3)
        for writer in (bad, good):
            writer.close()
        await server.stop_accepting()
        return flows

    assert asyncio.run(main()) == ["billing"]


def test_prune_stale_removes_only_dead_sessions_leftovers(tmp_path) -> None:  # noqa: ANN001
    import os

    from ivr.testing.sandbox import prune_stale

    base = tmp_path / "srv/ivr"
    for name in ("t999999999-abc123", f"t{os.getpid()}-abc123", "default"):
        (base / name / "etc").mkdir(parents=True)
    assert prune_stale(tmp_path) == ["t999999999-abc123"]
    assert sorted(p.name for p in base.iterdir()) == sorted([f"t{os.getpid()}-abc123", "default"])


def test_audiosocket_continuous_silence_keeps_a_20ms_clock() -> None:
    """With idle_keepalive_s = one frame (as `ivr serve` runs), idle silence is a steady stream."""

    async def main() -> tuple[int, float]:
        server, session, reader, writer = await _audiosocket_pair(AudioSocketParams(idle_keepalive_s=0.02))
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(1.0)
        count = session.stats.keepalives
        elapsed = loop.time() - start
        await session.close()
        writer.close()
        await server.stop()
        return count, elapsed

    count, elapsed = asyncio.run(main())
    expected = elapsed / 0.02
    assert 0.5 * expected <= count <= expected + 2, (count, expected)  # steady, never a burst
