"""Real SIP callers end to end: SIPp -> the sandbox Asterisk (asterisk/pjsip.conf, the provider
trunk on loopback) -> [from-sip] -> [ivr] -> the bridge and the real pipeline (Whisper, NLU, the
support flow, TTS, SQLite records).

What the caller says is a fixture in G.711 (ivr/sipcaller.py writes the RTP); what it hears is the
RTP Asterisk sends back, captured on the loopback interface, decoded and transcribed with Whisper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.audio.g711 import Law
from ivr.audio.pcm import SAMPLE_RATE, read_wav
from ivr.config import Settings
from ivr.server import AmiLink, bridge_params, conversation_handler
from ivr.services import CallServices
from ivr.sipcaller import Pause, Segment, SippRun, Speak, place_calls, similarity, sipp_available, speech_spans
from ivr.storage.records import CallRecord, EventRecord, TurnRecord
from ivr.telephony.bridge import Bridge
from ivr.testing.sandbox import Sandbox

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures"
CALLER = "+15550100"
CALL_TIME = "2026-11-23T10:00:00"  # a Monday morning: inside the support line's business hours


@pytest.fixture(autouse=True)
def _needs_sipp() -> None:
    reason = sipp_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[CallServices]:
    settings = Settings(call_time=CALL_TIME)
    settings.paths.data = tmp_path  # the demo subscriber DB and the call records of this test only
    settings.storage.url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    services = CallServices.create(settings, engine_override={"en": "whisper"})
    yield services
    services.close()


@dataclass
class Outcome:
    run: SippRun
    calls: list[CallRecord]
    turns: dict[str, list[TurnRecord]]
    events: dict[str, list[EventRecord]]


def _sip_calls(sandbox: Sandbox, services: CallServices, script: Sequence[Segment], tmp_path: Path, *,
               law: Law = "ulaw", calls: int = 1, listen_s: float = 14.0) -> Outcome:
    """Serve SIPp's calls with the bridge as `ivr serve` runs it (AMI link included)."""

    async def main() -> SippRun:
        params = bridge_params(services.settings)
        params.agi_port, params.audiosocket_port = sandbox.info.agi_port, 0
        services.settings.ami = sandbox.ami_settings()
        link = AmiLink(services)
        await link.client.connect()
        bridge = Bridge(params, conversation_handler(services, link))
        await bridge.start()
        try:
            return await asyncio.to_thread(place_calls, sandbox.info.sip_port, script, tmp_path / "sipp",
                                           law=law, calls=calls, listen_s=listen_s, caller=CALLER)
        finally:
            await bridge.stop(drain_timeout_s=10)
            await asyncio.sleep(1)  # the AMI Hangup of the last call
            await link.client.close()

    run = asyncio.run(main())
    assert services.records is not None
    services.records.close()  # writes every queued record
    store = services.records.store
    rows = store.calls()
    return Outcome(run, rows, {c.id: store.turns(c.id) for c in rows}, {c.id: store.events(c.id) for c in rows})


def _speech(name: str) -> bytes:
    return read_wav(FIXTURES / "en" / name)


def _last_reply(heard: bytes) -> bytes:
    """The audio from the start of the assistant's last utterance (after the caller spoke)."""
    spans = speech_spans(heard)
    assert spans, "the caller heard nothing"
    return heard[int(spans[-1][0] * SAMPLE_RATE) * 2:]


def test_ulaw_caller_asks_for_the_balance_and_hears_it(sandbox: Sandbox, services: CallServices,
                                                       tmp_path: Path) -> None:
    script = [Pause(4000), Speak(_speech("balance_1.wav")), Pause(14000)]
    out = _sip_calls(sandbox, services, script, tmp_path, law="ulaw")

    assert out.run.returncode == 0, out.run.stats
    (heard_call,) = out.run.calls
    assert heard_call.answered and heard_call.payload_types == {0}  # u-law only, as offered
    (call,) = out.calls
    assert call.channel.startswith("PJSIP/provider-") and call.engine == "whisper"
    assert out.turns[call.id][0].intent == "balance"
    # what the caller heard: the very audio of the greeting the record says it played (found in the
    # RTP stream), then the answer about the balance, as Whisper understands it
    heard = heard_call.audio()
    prompts = services.registry.get("support", "en").prompts
    welcome = prompts["welcome"]
    assert out.turns[call.id][0].prompt.startswith(welcome)
    assert similarity(heard, services.prompts.get_sync(welcome, "en")) > 0.9
    engine = services.asr_engine("en")
    assert engine is not None
    text, _ = engine.transcribe(_last_reply(heard))
    assert "balance" in text.lower() or "gigabytes" in text.lower(), text
