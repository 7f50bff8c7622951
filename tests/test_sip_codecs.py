"""G.711, RTP and RFC 4733 codecs, the SIP test caller's pcap and scenario: pure, no network."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from ivr.audio import g711
from ivr.audio.pcm import FRAME_BYTES, silence
from ivr.telephony.rtp import PT_PCMA, PT_PCMU, PT_TELEPHONE_EVENT, RtpError, RtpPacket, TelephoneEvent
from ivr.testing.sipcaller import (
    Pause,
    Press,
    Speak,
    caller_packets,
    scenario_xml,
    similarity,
    speech_spans,
    write_pcap,
)


def _tone(ms: int, hz: float = 440.0, level: float = 8000.0) -> bytes:
    t = np.arange(8 * ms) / 8000
    return (np.sin(2 * np.pi * hz * t) * level).astype("<i2").tobytes()


@pytest.mark.parametrize(("law", "code", "value"), [
    # G.711 table 2a/2b: the code of zero, the largest magnitudes of each sign
    ("ulaw", 0xFF, 0), ("ulaw", 0x80, 32124), ("ulaw", 0x00, -32124),
    ("alaw", 0xD5, 8), ("alaw", 0x55, -8), ("alaw", 0xAA, 32256), ("alaw", 0x2A, -32256),
])
def test_g711_decodes_the_standard_values(law: g711.Law, code: int, value: int) -> None:
    assert struct.unpack("<h", g711.decode(bytes([code]), law))[0] == value


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_round_trip_keeps_every_code_and_the_waveform(law: g711.Law) -> None:
    codes = bytes(range(256))
    assert g711.encode(g711.decode(codes, law), law) == codes or law == "ulaw"  # u-law has two zeros
    assert g711.decode(g711.encode(g711.decode(codes, law), law), law) == g711.decode(codes, law)
    tone = _tone(200)
    back = np.frombuffer(g711.decode(g711.encode(tone, law), law), "<i2").astype(float)
    error = np.abs(back - np.frombuffer(tone, "<i2")).max()
    assert error < 8000 / 16  # within one quantisation step at that level (~3 %)


def test_rtp_round_trip_and_errors() -> None:
    packet = RtpPacket(PT_PCMU, 65535, 2**32 - 160, 0xDEADBEEF, b"\xff" * 160, marker=True)
    data = bytes(packet)
    assert data[:12].hex() == "8080ffff" "ffffff60" "deadbeef"
    assert RtpPacket.parse(data) == packet
    with pytest.raises(RtpError, match="too short: 5 bytes"):
        RtpPacket.parse(data[:5])
    with pytest.raises(RtpError, match="version 0"):
        RtpPacket.parse(b"\x00" * 12)
    padded = bytearray(bytes(RtpPacket(PT_PCMA, 1, 2, 3, b"abcd\x00\x00\x03")))
    padded[0] |= 0x20  # padding flag: the last byte counts the padding
    assert RtpPacket.parse(bytes(padded)).payload == b"abcd"


def test_telephone_event_round_trip() -> None:
    event = TelephoneEvent(event=11, end=True, volume=10, duration=960)
    assert bytes(event).hex() == "0b8a03c0"
    assert TelephoneEvent.parse(bytes(event)) == event and event.digit == "#"
    with pytest.raises(RtpError, match="too short"):
        TelephoneEvent.parse(b"\x01")


def test_caller_stream_speaks_then_presses_a_key_as_rfc4733() -> None:
    packets = [RtpPacket.parse(p) for p in caller_packets([Speak(_tone(100)), Press("5"), Pause(40)], "alaw")]
    audio = [p for p in packets if p.payload_type == PT_PCMA]
    events = [p for p in packets if p.payload_type == PT_TELEPHONE_EVENT]
    assert len(audio) == 5 + 2 and all(len(p.payload) == 160 for p in audio)
    assert [p.sequence for p in packets] == list(range(1, len(packets) + 1))
    assert len({p.ssrc for p in packets}) == 1
    decoded = [TelephoneEvent.parse(p.payload) for p in events]
    assert {d.digit for d in decoded} == {"5"}
    assert [p.marker for p in events] == [True] + [False] * (len(events) - 1)
    assert len({p.timestamp for p in events}) == 1  # one event, one timestamp: its start
    assert [d.end for d in decoded][-4:] == [False, True, True, True]  # the end packet three times
    assert audio[5].timestamp == events[0].timestamp + 6 * 160  # audio resumes after the 120 ms key
    with pytest.raises(Exception, match="'x' is not a DTMF key"):
        caller_packets([Press("x")], "ulaw")


def test_pcap_is_what_libpcap_writes(tmp_path: Path) -> None:
    packets = caller_packets([Pause(60)], "ulaw")
    write_pcap(tmp_path / "c.pcap", packets, src_port=7000, dst_port=7002)
    data = (tmp_path / "c.pcap").read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    offset, times = 24, []
    for packet in packets:
        sec, usec, caplen, length = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16: offset + 16 + caplen]
        assert frame[12:14] == b"\x08\x00" and frame[23] == 17  # IPv4, UDP
        assert struct.unpack_from("!HH", frame, 34) == (7000, 7002)
        assert frame[42:] == packet
        times.append(sec + usec / 1e6)
        offset += 16 + caplen
    assert offset == len(data)
    assert np.allclose(np.diff(times), 0.020)


def test_scenario_offers_one_law_and_telephone_events(tmp_path: Path) -> None:
    xml = scenario_xml("alaw", tmp_path / "c.pcap", listen_s=7.5, caller="+15550100")
    assert "m=audio [auto_media_port] RTP/AVP 8 101" in xml and "a=rtpmap:8 PCMA/8000" in xml
    assert "a=rtpmap:101 telephone-event/8000" in xml
    assert 'timeout="7500" ontimeout="caller_hangs_up"' in xml
    assert f'play_pcap_audio="{tmp_path / "c.pcap"}"' in xml and "sip:+15550100@" in xml


def test_similarity_finds_a_prompt_inside_what_was_heard() -> None:
    prompt = _tone(300, 300) + _tone(300, 700)
    heard = silence(500) + g711.decode(g711.encode(prompt, "ulaw"), "ulaw") + silence(200)
    assert similarity(heard, prompt) > 0.99
    assert similarity(heard, _tone(600, 1900)) < 0.3
    assert similarity(silence(100), prompt) == 0.0  # shorter than the prompt
    spans = speech_spans(silence(1000) + _tone(500) + silence(1000) + _tone(200))
    assert [(round(a, 2), round(b, 2)) for a, b in spans] == [(1.0, 1.5), (2.5, 2.7)]
    assert len(silence(20)) == FRAME_BYTES
