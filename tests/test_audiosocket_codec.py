"""Pure AudioSocket codec tests over bytes (no sockets, no Asterisk)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.errors import ProtocolError
from ivr.telephony.audiosocket import (
    AudioIn,
    AudioSocketParser,
    DtmfIn,
    ErrorIn,
    HangupIn,
    UuidIn,
    encode,
    encode_message,
)

FIXTURES = Path(__file__).parent / "fixtures"
CALL = uuid.UUID("6a1c3d2e-0f4b-4c8a-9e1d-2b3c4d5e6f70")


def test_encode_exact_bytes() -> None:
    assert encode_message(HangupIn()) == b"\x00\x00\x00"
    assert encode_message(UuidIn(CALL)) == b"\x01\x00\x10" + CALL.bytes
    assert encode_message(DtmfIn("5")) == b"\x03\x00\x015"
    assert encode_message(ErrorIn(1)) == b"\xff\x00\x01\x01"
    # 320 bytes: the length is two bytes big-endian (0x0140), not one byte
    assert encode_message(AudioIn(b"\x01\x02" * 160))[:3] == b"\x10\x01\x40"


def test_round_trip_all_kinds() -> None:
    messages = [UuidIn(CALL), AudioIn(bytes(range(256)) + bytes(64)), DtmfIn("#"), ErrorIn(4), HangupIn()]
    wire = b"".join(encode_message(m) for m in messages)
    assert AudioSocketParser().feed(wire) == messages


def test_fragmented_feed_any_split() -> None:
    messages = [UuidIn(CALL), AudioIn(b"\x07" * 320), DtmfIn("1"), AudioIn(b"\x08" * 320), HangupIn()]
    wire = b"".join(encode_message(m) for m in messages)
    for step in (1, 2, 3, 7, 319, 321):
        parser = AudioSocketParser()
        out = []
        for i in range(0, len(wire), step):
            out += parser.feed(wire[i : i + step])
        assert out == messages, step
        assert parser.buffered == 0


def test_size_cap_has_exact_error() -> None:
    parser = AudioSocketParser(max_payload=640)
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"\x10\x10\x00")  # 4096-byte audio announced
    assert str(caught.value) == (
        "AudioSocket audio payload of 4096 bytes exceeds the cap of 640 bytes "
        "(fix: check that the peer is Asterisk's AudioSocket (slin, 20 ms frames))"
    )


def test_unknown_kind_and_bad_payloads() -> None:
    with pytest.raises(ProtocolError, match=r"^AudioSocket message kind 0x42 is unknown$"):
        AudioSocketParser().feed(b"\x42\x00\x00")
    with pytest.raises(ProtocolError, match="UUID payload must be 16 bytes, got 4"):
        AudioSocketParser().feed(b"\x01\x00\x04abcd")
    with pytest.raises(ProtocolError, match="DTMF payload must be 1 byte, got 2"):
        AudioSocketParser().feed(b"\x03\x00\x0212")


def test_capture_from_asterisk() -> None:
    """The first bytes Asterisk 22 sent on a real AudioSocket connection (tests/fixtures/README.md)."""
    messages = AudioSocketParser().feed((FIXTURES / "audiosocket_asterisk22.bin").read_bytes())
    assert isinstance(messages[0], UuidIn)
    audio = [m for m in messages if isinstance(m, AudioIn)]
    assert audio and all(len(m.pcm) == 320 for m in audio)


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_parser_fuzz(chunks: list[bytes]) -> None:
    """Arbitrary bytes either parse into typed messages or raise ProtocolError, never anything else."""
    parser = AudioSocketParser(max_payload=1024)
    try:
        for chunk in chunks:
            for message in parser.feed(chunk):
                assert isinstance(message, HangupIn | UuidIn | DtmfIn | AudioIn | ErrorIn)
    except ProtocolError:
        pass


@given(st.lists(st.sampled_from(["a", "d", "h", "e"]), max_size=15), st.integers(1, 50))
def test_round_trip_fuzz(kinds: list[str], step: int) -> None:
    factory = {"a": AudioIn(b"\x01" * 320), "d": DtmfIn("9"), "h": HangupIn(), "e": ErrorIn(2)}
    messages = [factory[k] for k in kinds]
    wire = b"".join(encode_message(m) for m in messages)
    parser = AudioSocketParser()
    out = []
    for i in range(0, len(wire), step):
        out += parser.feed(wire[i : i + step])
    assert out == messages


def test_encode_refuses_oversized_payload() -> None:
    with pytest.raises(ProtocolError, match="does not fit the 16-bit length"):
        encode(0x10, bytes(70000))
