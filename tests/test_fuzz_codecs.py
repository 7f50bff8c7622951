"""Fuzzing the wire codecs (hypothesis): AGI and AudioSocket.

Whatever bytes arrive, in whatever fragment sizes, a codec either returns clean results or raises
ProtocolError with a message; never another exception, never unbounded buffering.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.errors import ProtocolError
from ivr.telephony.agi import (
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_RESPONSE_LINE_BYTES,
    AgiHangupSignal,
    AgiRequest,
    AgiResponse,
    AgiResponseParser,
    format_command,
    parse_environment,
    read_environment,
)
from ivr.telephony.audiosocket import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    KIND_AUDIO,
    AudioIn,
    AudioSocketParser,
    DtmfIn,
    ErrorIn,
    HangupIn,
    UuidIn,
    encode,
    encode_message,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (sorted, deduplicated, within range)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points + [len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


# ------------------------------------------------------------------------------------- AudioSocket

messages = st.one_of(
    st.binary(max_size=640).map(AudioIn),
    st.sampled_from("0123456789*#ABCD").map(DtmfIn),
    st.just(HangupIn()),
    st.uuids().map(UuidIn),
    st.integers(0, 255).map(ErrorIn),
)


@FUZZ
@given(st.lists(messages, max_size=20), st.lists(st.integers(0, 10_000), max_size=30))
def test_audiosocket_any_fragmentation_gives_the_same_messages(sent: list, cuts: list[int]) -> None:
    wire = b"".join(encode_message(m) for m in sent)
    parser = AudioSocketParser()
    got = [m for piece in _split(wire, cuts) for m in parser.feed(piece)]
    assert got == sent
    assert parser.buffered == 0


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(0, 5000), max_size=20))
def test_audiosocket_random_bytes_give_messages_or_protocol_error(data: bytes, cuts: list[int]) -> None:
    parser = AudioSocketParser()
    try:
        for piece in _split(data, cuts):
            for message in parser.feed(piece):
                assert isinstance(message, AudioIn | DtmfIn | HangupIn | UuidIn | ErrorIn)
    except ProtocolError as exc:
        assert "AudioSocket" in str(exc)
    # never more buffered than one header + the largest allowed payload
    assert parser.buffered <= HEADER.size + DEFAULT_MAX_PAYLOAD + len(data)


@FUZZ
@given(st.integers(DEFAULT_MAX_PAYLOAD + 1, 0xFFFF), st.binary(max_size=64))
def test_audiosocket_oversized_length_is_refused_before_the_payload(length: int, tail: bytes) -> None:
    parser = AudioSocketParser()
    try:
        parser.feed(HEADER.pack(KIND_AUDIO, length) + tail)
    except ProtocolError as exc:
        assert "exceeds the cap" in str(exc) and "fix:" in str(exc)
    else:
        raise AssertionError("an oversized frame was accepted")


@FUZZ
@given(st.sampled_from([0x01, 0x03]), st.binary(max_size=40))
def test_audiosocket_bad_uuid_and_dtmf_sizes(kind: int, payload: bytes) -> None:
    parser = AudioSocketParser()
    wire = encode(kind, payload)
    try:
        (message,) = parser.feed(wire)
    except ProtocolError as exc:
        assert "payload must be" in str(exc)
        assert len(payload) != (16 if kind == 0x01 else 1)
    else:
        assert isinstance(message, UuidIn if kind == 0x01 else DtmfIn)


# --------------------------------------------------------------------------------------------- AGI

env_lines = st.lists(
    st.one_of(
        st.tuples(st.from_regex(r"agi_[a-z_]{1,12}", fullmatch=True), st.text(max_size=40)).map(
            lambda kv: f"{kv[0]}: {kv[1]}".replace("\n", " ").replace("\r", " ")
        ),
        st.text(max_size=60),
    ),
    max_size=25,
)


@FUZZ
@given(env_lines)
def test_agi_environment_lines_parse_or_raise_protocol_error(lines: list[str]) -> None:
    block = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    try:
        request = parse_environment(block)
    except ProtocolError as exc:
        assert "AGI environment" in str(exc)
    else:
        assert isinstance(request, AgiRequest)
        assert "agi_request" in request.env or "agi_network_script" in request.env
        assert "/" not in request.flow[:1]


@FUZZ
@given(st.binary(max_size=2048))
def test_agi_environment_random_bytes(data: bytes) -> None:
    try:
        parse_environment(data)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=20))
def test_agi_environment_reader_with_fragments(data: bytes, cuts: list[int]) -> None:
    async def read() -> AgiRequest | None:
        reader = asyncio.StreamReader()
        for piece in _split(data, cuts):
            reader.feed_data(piece)
        reader.feed_eof()
        try:
            return await read_environment(reader)
        except ProtocolError:
            return None

    result = asyncio.run(read())
    assert result is None or isinstance(result, AgiRequest)


def test_agi_environment_reader_caps_the_block() -> None:
    async def read() -> str:
        reader = asyncio.StreamReader()
        reader.feed_data(b"agi_x: " + b"y" * 100 + b"\n")
        for _ in range(MAX_ENV_BYTES // 100 + 10):
            reader.feed_data(b"agi_x: " + b"y" * 100 + b"\n")
        try:
            await read_environment(reader)
        except ProtocolError as exc:
            return str(exc)
        return ""

    assert "larger than" in asyncio.run(read())


REPLY_DATA = st.characters(blacklist_characters="\r\n()", blacklist_categories=("Cs",))  # no surrogates
reply_lines = st.one_of(
    st.builds(lambda r, d: f"200 result={r}" + (f" ({d})" if d else ""), st.integers(-1, 300),
              st.text(alphabet=REPLY_DATA, max_size=20)),
    st.sampled_from(["HANGUP", "510 Invalid or unknown command", "511 Command Not Permitted on a dead channel",
                     "520-Invalid command syntax.  Proper usage follows:", "Usage: EXEC <app>",
                     "520 End of proper usage.", ""]),
    st.text(max_size=50).map(lambda t: t.replace("\n", " ")),
)


@FUZZ
@given(st.lists(reply_lines, max_size=15), st.lists(st.integers(0, 2000), max_size=20))
def test_agi_reply_parser_fragments(lines: list[str], cuts: list[int]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    parser = AgiResponseParser()
    try:
        for piece in _split(data, cuts):
            for item in parser.feed(piece):
                assert isinstance(item, AgiResponse | AgiHangupSignal)
    except ProtocolError as exc:
        assert "AGI reply" in str(exc)


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(0, 4096), max_size=20))
def test_agi_reply_parser_random_bytes(data: bytes, cuts: list[int]) -> None:
    parser = AgiResponseParser()
    try:
        for piece in _split(data, cuts):
            parser.feed(piece)
    except ProtocolError:
        pass


def test_agi_reply_parser_refuses_an_endless_line() -> None:
    parser = AgiResponseParser()
    try:
        for _ in range(MAX_RESPONSE_LINE_BYTES // 4096 + 2):
            parser.feed(b"2" * 4096)
    except ProtocolError as exc:
        assert "longer than" in str(exc)
    else:
        raise AssertionError("an endless reply line was buffered")


@FUZZ
@given(st.from_regex(r"[A-Z_]{1,20}", fullmatch=True), st.text(max_size=3000))
def test_agi_command_round_trips_through_a_quote_aware_split(name: str, value: str) -> None:
    """What we send is read back by res_agi's quote rules (shlex POSIX is the same for \\ and ")."""
    try:
        line = format_command("SET VARIABLE", name, value)
    except ProtocolError as exc:
        assert any(c in value for c in "\r\n\x00") or len(value.encode("utf-8", "surrogatepass")) > 1000
        assert "fix:" in str(exc)
        return
    assert len(line) <= MAX_COMMAND_BYTES and line.endswith(b"\n") and line.count(b"\n") == 1
    assert shlex.split(line.decode()) == ["SET", "VARIABLE", name, value]


def test_uuid_message_round_trip() -> None:
    value = uuid.uuid4()
    assert AudioSocketParser().feed(encode_message(UuidIn(value))) == [UuidIn(value)]
