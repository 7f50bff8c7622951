"""A hand-off that cannot be cut short: hostile hook values and names, one variable that fails.

Codec checks are pure; the session checks run over loopback with a scripted Asterisk (which can
refuse one command on demand); the last test runs a call through the real sandbox Asterisk.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from ivr.telephony.agi import (
    MAX_COMMAND_BYTES,
    AgiServer,
    AgiServerParams,
    AgiSession,
    format_command,
    safe_variable_name,
    truncate_escaped,
)
from ivr.telephony.bridge import MAX_VALUE_BYTES, Bridge, BridgeParams, HandOff

ENV = b"agi_network: yes\nagi_network_script: support\nagi_channel: PJSIP/1-0001\nagi_uniqueid: 1.1\n\n"
QUOTES = '"' * 1200  # 1200 bytes raw, 2400 escaped: over the 2047-byte line if cut before escaping
BACKSLASHES = "\\" * 1100


class Unprintable:
    """A hook value whose text form raises (what a careless hook can return)."""

    def __str__(self) -> str:
        raise ValueError("no text for this value")


def hostile_handoff() -> HandOff:
    return HandOff(route="queue", queue="support-staffed", intent="lost_card", reason="caller_asked",
                   summary=QUOTES, variables={"account-id": "A-1", "NOTE": BACKSLASHES, "bad": Unprintable(),
                                              "ROUTE": "end", "***": "x", "SLOT_PIN": 'a"b\\c'})  # type: ignore[dict-item]


def test_values_are_bounded_after_escaping() -> None:
    for value in (QUOTES, BACKSLASHES, "я" * 2000, 'x"' * 900):
        cut = truncate_escaped(value, MAX_VALUE_BYTES)
        line = format_command("SET VARIABLE", "IVR_SUMMARY", cut)
        assert len(line) <= MAX_COMMAND_BYTES
        assert len(line) >= MAX_VALUE_BYTES  # cut to the limit, not emptied
        assert value.startswith(cut)
    # an escape pair is never split: 1499 bytes hold 749 quotes (1498 escaped), not 749.5
    assert truncate_escaped(QUOTES, 1499) == '"' * 749


def test_names_are_made_safe() -> None:
    assert safe_variable_name("account-id") == "ACCOUNT_ID"
    assert safe_variable_name("Kontó nr.") == "KONT_NR"
    assert safe_variable_name("***") == ""


def test_route_and_reason_come_first_and_bad_names_are_mapped_or_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        out = hostile_handoff().channel_variables()
    names = list(out)
    assert names[:3] == ["IVR_ROUTE", "IVR_REASON", "IVR_QUEUE"]
    assert out["IVR_ROUTE"] == "queue"  # a hook's ROUTE cannot redirect the call
    assert out["IVR_ACCOUNT_ID"] == "A-1" and out["IVR_SLOT_PIN"] == 'a"b\\c'
    assert "IVR_BAD" not in out and "IVR_" not in out
    assert all(len(format_command("SET VARIABLE", n, v)) <= MAX_COMMAND_BYTES for n, v in out.items())
    assert "would replace IVR_ROUTE" in caplog.text and "cannot be turned into text" in caplog.text


async def _finish_against(replies: dict[str, bytes], handoff: HandOff) -> list[bytes]:
    """Run Bridge._finish on a real AGI session whose scripted Asterisk answers each command with
    `replies[<variable name>]` (default 200 result=1); return the command lines it received."""
    bridge = Bridge(BridgeParams(agi_port=0, audiosocket_port=0), handler=lambda call: asyncio.sleep(0))
    received: list[bytes] = []

    async def handler(session: AgiSession) -> None:
        await bridge._finish(session, handoff)

    server = AgiServer(AgiServerParams(port=0), default=handler)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(ENV)
    while line := await reader.readline():
        received.append(line)
        name = line.split(b'"')[1].decode() if line.startswith(b"SET VARIABLE") else ""
        writer.write(replies.get(name, b"200 result=1\n"))
    writer.close()
    await server.stop_accepting()
    return received


def test_one_failed_variable_does_not_stop_the_hand_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        received = asyncio.run(_finish_against({"IVR_SUMMARY": b"520 Invalid command syntax.\n"}, hostile_handoff()))
    sent = [line.split(b'"')[1].decode() for line in received if line.startswith(b"SET VARIABLE")]
    assert sent[:3] == ["IVR_ROUTE", "IVR_REASON", "IVR_QUEUE"]
    assert "IVR_SUMMARY" in sent and "IVR_ACCOUNT_ID" in sent and "IVR_NOTE" in sent  # after the refused one
    assert all(len(line) <= MAX_COMMAND_BYTES for line in received)
    assert received[-1].startswith(b"VERBOSE")
    assert "could not set IVR_SUMMARY" in caplog.text and "went without IVR_SUMMARY" in caplog.text


@pytest.mark.asterisk
@pytest.mark.slow
def test_hostile_hook_values_still_reach_the_right_queue_on_asterisk(sandbox) -> None:  # type: ignore[no-untyped-def]
    from ivr.telephony.ami import AmiClient, AmiEvent
    from ivr.telephony.bridge import TelephonyCall

    async def handler(call: TelephonyCall) -> HandOff | None:
        async for _event in call.audio.events():
            break
        return hostile_handoff()

    async def main() -> AmiEvent:
        bridge = Bridge(BridgeParams(agi_port=sandbox.info.agi_port, audiosocket_port=0), handler)
        await bridge.start()
        try:
            async with AmiClient(sandbox.ami_settings()) as ami:
                call = await sandbox.originate_test_call(ami, [], record_as="hostile-handoff", wait_s=4)
                join = await ami.wait_event(
                    lambda e: e.name == "QueueCallerJoin" and e.get("Uniqueid") == call.ivr_uniqueid, 30)
                await call.wait_ended(30)
                return join
        finally:
            await bridge.stop(drain_timeout_s=5)

    join = asyncio.run(main())
    assert join.get("Queue") == "support-staffed"
    assert join.variables["IVR_REASON"] == "caller_asked"
    assert join.variables["IVR_ROUTE"] == "queue" and join.variables["IVR_INTENT"] == "lost_card"
    assert join.variables["IVR_SUMMARY"] == truncate_escaped(QUOTES, MAX_VALUE_BYTES)


def test_handoff_redaction_is_an_ops_setting() -> None:
    from ivr.config import Settings

    said = "my card is 4, 5, 3, 9 1, 4, 8, 8 0, 3, 4, 3 6, 4, 6, 7"
    handoff = HandOff(summary=f"reason=caller_asked; last said: '{said}'", variables={
        "IVR_SLOT_ACCOUNT": "4081 7810 0999 1000 4312", "IVR_LANG": "en", "CALL_ID": "1234567"})
    assert not Settings().server.redact_handoff  # agents see what the caller said unless ops say otherwise
    assert Settings.model_validate({"server": {"redact_handoff": True}}).server.redact_handoff
    masked = handoff.redacted().channel_variables()
    assert masked["IVR_SUMMARY"] == "reason=caller_asked; last said: 'my card is [CARD]'"
    assert masked["IVR_SLOT_ACCOUNT"] == "[ACCOUNT]"
    assert masked["IVR_CALL_ID"] == "1234567" and masked["IVR_LANG"] == "en"  # not caller data: kept
    assert handoff.channel_variables()["IVR_SLOT_ACCOUNT"] == "4081 7810 0999 1000 4312"
