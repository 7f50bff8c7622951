"""Whole test calls through a real Asterisk: a caller who takes turns, played by Asterisk itself.

AMI Originate of `Local/s@ivr-test-turns/n` (asterisk/extensions_test_caller.conf): one half
enters [ivr] as a caller would; the other plays the caller's recorded turns, each after the
assistant's prompt ends (or over it, for barge-in), and records what the caller heard.
Used by `ivr call` and tests/test_e2e_asterisk.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from ivr.telephony.ami import AmiClient
from ivr.testing.sandbox import SandboxCall

TURNS_CALLER = "Local/s@ivr-test-turns/n"
DEFAULT_GAP_MS = 1500  # silence that tells the caller the assistant has finished its prompt


async def originate_turns(
    ami: AmiClient,
    sounds: list[str],
    *,
    flow: str = "support",
    lang: str = "en",
    record: str = "",
    heard_wav: Path | None = None,  # host Path of `record`.wav, if the caller can read it
    caller_id: str = "",
    gap_ms: int = DEFAULT_GAP_MS,
    barge_in_turn: int = 0,
    wait_s: float = 5.0,
    variables: dict[str, str] | None = None,
) -> SandboxCall:
    """Start a multi-turn test call; `sounds` are Playback names on the Asterisk host.

    `barge_in_turn` (1-based) is said over the assistant's prompt instead of after it.
    """
    call = SandboxCall(caller_uniqueid=str(uuid.uuid4()), ivr_uniqueid=str(uuid.uuid4()),
                       heard_wav=heard_wav, ami=ami)
    call._hangup = ami.expect_event(lambda e: e.name == "Hangup" and e.get("Uniqueid") == call.caller_uniqueid)
    channel_vars = {
        "IVR_FLOW": flow, "IVR_LANG": lang, "IVR_TEST_TURNS": "&".join(sounds), "IVR_TEST_RECORD": record,
        "IVR_TEST_GAP_MS": str(gap_ms), "IVR_TEST_BARGE": str(barge_in_turn),
        "IVR_TEST_WAIT": str(wait_s), **(variables or {}),
    }
    await ami.originate(TURNS_CALLER, "ivr", "s", 1, variables=channel_vars, caller_id=caller_id or None,
                        channel_id=call.ivr_uniqueid, other_channel_id=call.caller_uniqueid)
    return call
