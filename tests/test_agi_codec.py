"""Pure FastAGI codec tests over bytes (no sockets, no Asterisk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.errors import ProtocolError
from ivr.telephony.agi import (
    AgiDeadChannel,
    AgiHangupSignal,
    AgiInvalidCommand,
    AgiResponse,
    AgiResponseParser,
    AgiUsageError,
    check_response,
    format_command,
    parse_environment,
    parse_response_line,
    truncate_utf8,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_environment_handmade_fields() -> None:
    request = parse_environment((FIXTURES / "agi_env_handmade.bin").read_bytes())
    assert request.flow == "support"
    assert request.query == {"lang": "en", "retry": "2"}
    assert request.args == ["first", "with space"]
    assert request.channel == "Local/s@caller-00000001;2"
    assert request.uniqueid == "1763920000.12"
    assert request.callerid == "5551234"
    assert request.calleridname == "Jane Doe"
    assert request.get("accountcode") == ""


def test_environment_captured_from_asterisk() -> None:
    """A block written by the sandbox Asterisk 22 itself (see tests/fixtures/README.md)."""
    request = parse_environment((FIXTURES / "agi_env_asterisk22.bin").read_bytes())
    assert request.flow == "support"
    assert request.query == {"lang": "en"}
    assert request.get("network") == "yes"
    assert request.uniqueid
    assert request.channel.startswith("Local/")


def test_environment_falls_back_to_agi_request() -> None:
    request = parse_environment(b"agi_request: agi://10.0.0.1:4573/billing/v2?lang=ru\n\n")
    assert request.flow == "billing/v2"
    assert request.query == {"lang": "ru"}


def test_environment_bad_line_has_exact_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_environment(b"agi_network: yes\nGET / HTTP/1.1\n\n")
    assert str(caught.value) == (
        "AGI environment line 2 is not 'agi_<name>: <value>': 'GET / HTTP/1.1' "
        "(fix: point AGI() at this server only from Asterisk's dialplan (agi://host:port/flow))"
    )


def test_environment_without_request_is_refused() -> None:
    with pytest.raises(ProtocolError, match="neither agi_request nor agi_network_script"):
        parse_environment(b"agi_channel: SIP/1\n\n")


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        (("ANSWER",), b"ANSWER\n"),
        (("SET VARIABLE", "IVR_ROUTE", "queue"), b'SET VARIABLE "IVR_ROUTE" "queue"\n'),
        (
            ("SET VARIABLE", "IVR_SUMMARY", 'lost card, says "urgent" \\ now'),
            b'SET VARIABLE "IVR_SUMMARY" "lost card, says \\"urgent\\" \\\\ now"\n',
        ),
        (("EXEC", "AudioSocket", "u,127.0.0.1:9092"), b'EXEC "AudioSocket" "u,127.0.0.1:9092"\n'),
        (("VERBOSE", "héllo", 1), 'VERBOSE "héllo" "1"\n'.encode()),
    ],
)
def test_format_command(args: tuple, wire: bytes) -> None:
    assert format_command(*args) == wire


def test_format_command_refuses_line_breaks_and_overlong_lines() -> None:
    with pytest.raises(ProtocolError, match="line break"):
        format_command("SET VARIABLE", "X", "a\nb")
    with pytest.raises(ProtocolError, match="Asterisk reads at most 2047"):
        format_command("SET VARIABLE", "X", "x" * 3000)


def test_truncate_utf8_keeps_whole_characters() -> None:
    assert truncate_utf8("абв", 5) == "аб"
    assert truncate_utf8("abc", 10) == "abc"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=1", AgiResponse(200, "1", raw="200 result=1")),
        ("200 result=-1", AgiResponse(200, "-1", raw="200 result=-1")),
        ("200 result=1 (hello world)", AgiResponse(200, "1", "hello world", raw="200 result=1 (hello world)")),
        ("200 result=1 ((a) b)", AgiResponse(200, "1", "(a) b", raw="200 result=1 ((a) b)")),
        (
            "200 result=0 (timeout) endpos=8000",
            AgiResponse(200, "0", "timeout", 8000, raw="200 result=0 (timeout) endpos=8000"),
        ),
        ("200 result= (x)", AgiResponse(200, "", "x", raw="200 result= (x)")),
        ("510 Invalid or unknown command", AgiResponse(510, data="Invalid or unknown command",
                                                       raw="510 Invalid or unknown command")),
    ],
)
def test_parse_response_line(line: str, expected: AgiResponse) -> None:
    assert parse_response_line(line + "\n") == expected


def test_parse_response_line_garbage() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_response_line("hello")
    assert str(caught.value) == "AGI reply not understood: 'hello'"


def test_usage_block_multi_line_and_fragmented() -> None:
    data = (FIXTURES / "agi_520_handmade.bin").read_bytes() + b"200 result=1\n"
    parser = AgiResponseParser()
    items = []
    for i in range(len(data)):  # one byte at a time
        items += parser.feed(data[i : i + 1])
    assert len(items) == 2
    usage, ok = items
    assert isinstance(usage, AgiResponse) and usage.code == 520
    assert usage.usage.splitlines()[0] == " Usage: SET VARIABLE <variablename> <value>"
    assert ok == AgiResponse(200, "1", raw="200 result=1")
    with pytest.raises(AgiUsageError) as caught:
        check_response("SET VARIABLE", usage)
    assert "Sets a variable" in caught.value.usage


def test_hangup_line_is_a_signal() -> None:
    items = AgiResponseParser().feed(b"HANGUP\n200 result=-1\n")
    assert items == [AgiHangupSignal(), AgiResponse(200, "-1", raw="200 result=-1")]


def test_error_tree() -> None:
    with pytest.raises(AgiInvalidCommand):
        check_response("FOO", parse_response_line("510 Invalid or unknown command"))
    with pytest.raises(AgiDeadChannel) as caught:
        check_response("ANSWER", parse_response_line("511 Command Not Permitted on a dead channel"))
    assert str(caught.value) == "AGI command 'ANSWER': not permitted on a dead channel"


def test_real_replies_captured_from_asterisk() -> None:
    """Replies the sandbox Asterisk wrote for a scripted session (see tests/fixtures/README.md)."""
    items = AgiResponseParser().feed((FIXTURES / "agi_replies_asterisk22.bin").read_bytes())
    codes = [item.code for item in items if isinstance(item, AgiResponse)]
    assert codes == [200, 200, 200, 510, 520, 200]
    get_var = items[2]
    assert isinstance(get_var, AgiResponse) and get_var.data == 'x "quoted" \\ ünï'
    assert items[4].usage == "Sets a variable to the current channel."


@given(st.binary(max_size=300))
def test_response_parser_fuzz(data: bytes) -> None:
    """Arbitrary bytes never crash the parser with anything but ProtocolError."""
    parser = AgiResponseParser()
    try:
        for item in parser.feed(data):
            assert isinstance(item, AgiResponse | AgiHangupSignal)
    except ProtocolError:
        pass


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=200))
def test_quoting_fuzz(value: str) -> None:
    """Every printable value serializes to exactly one line whose quoted part unescapes back."""
    wire = format_command("SET VARIABLE", "V", value).decode()
    assert wire.count("\n") == 1 and wire.endswith('"\n')
    body = wire[len('SET VARIABLE "V" "') : -2]
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            i += 1
        out.append(body[i])
        i += 1
    assert "".join(out) == value


def test_captured_replies_round_trip_byte_for_byte() -> None:
    from ivr.telephony.agi import format_response

    wire = (FIXTURES / "agi_replies_asterisk22.bin").read_bytes()
    items = AgiResponseParser().feed(wire)
    assert b"".join(format_response(item) for item in items if isinstance(item, AgiResponse)) == wire


def test_captured_environment_round_trips() -> None:
    from ivr.telephony.agi import format_environment

    wire = (FIXTURES / "agi_env_asterisk22.bin").read_bytes()
    request = parse_environment(wire)
    assert format_environment(request.env) == wire


@given(
    st.sampled_from(["0", "1", "-1", "48"]),
    st.none() | st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
    st.none() | st.integers(0, 10**6),
)
def test_response_round_trip_fuzz(result: str, data: str | None, endpos: int | None) -> None:
    from ivr.telephony.agi import format_response

    response = AgiResponse(200, result, data, endpos)
    (parsed,) = AgiResponseParser().feed(format_response(response))
    assert isinstance(parsed, AgiResponse)
    assert (parsed.code, parsed.result, parsed.data, parsed.endpos) == (200, result, data, endpos)
