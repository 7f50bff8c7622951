"""Real SIP callers end to end: SIPp -> the sandbox Asterisk (asterisk/pjsip.conf, the provider
trunk on loopback) -> [from-sip] -> [ivr] -> the bridge and the real pipeline (Whisper, NLU, the
support flow, TTS, SQLite records).

What the caller says is a fixture in G.711 (ivr/sipcaller.py writes the RTP); what it hears is the
RTP Asterisk sends back, captured on the loopback interface, decoded and transcribed with Whisper.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.audio.g711 import Law
from ivr.audio.pcm import SAMPLE_RATE, read_wav
from ivr.config import Settings
from ivr.server import AmiLink, bridge_params, conversation_handler
from ivr.services import CallServices, RecordWriter
from ivr.storage.records import CallRecord, CallStore, EventRecord, TurnRecord
from ivr.telephony.ami import AmiClient, AmiEvent
from ivr.telephony.bridge import Bridge
from ivr.testing.sandbox import Sandbox, _free_port
from ivr.testing.sipcaller import (
    Pause,
    Press,
    Segment,
    SippRun,
    Speak,
    place_calls,
    register_phone,
    similarity,
    sipp_available,
    speech_spans,
)

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures"
CALLER = "+15550100"
CALL_TIME = "2026-11-23T10:00:00"  # a Monday morning: inside the support line's business hours


@pytest.fixture(autouse=True)
def _needs_sipp() -> None:
    reason = sipp_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def warm_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallServices]:
    """One set of services for the module, warmed as `ivr serve` warms them before it takes calls
    (Whisper, the prompts): loading them once keeps these tests' CI time down."""
    data = tmp_path_factory.mktemp("sip-data")
    settings = Settings(call_time=CALL_TIME)
    settings.paths.data = data  # the demo subscriber database (read only here)
    settings.storage.url = f"sqlite:///{data / 'unused.sqlite3'}"
    services = CallServices.create(settings, engine_override={"en": "whisper"})
    asyncio.run(services.warm_up(["en"]))
    yield services
    services.close()


@pytest.fixture
def services(warm_services: CallServices, tmp_path: Path) -> Iterator[CallServices]:
    """The warm services with call records of this test only."""
    if warm_services.records is not None:
        warm_services.records.close()
    warm_services.records = RecordWriter(CallStore(f"sqlite:///{tmp_path / 'calls.sqlite3'}"))
    yield warm_services


@dataclass
class Outcome:
    run: SippRun
    calls: list[CallRecord]
    turns: dict[str, list[TurnRecord]]
    events: dict[str, list[EventRecord]]
    joins: list[AmiEvent]  # QueueCallerJoin: the calls that reached the live line, with IVR_* variables

    def event(self, call_id: str, kind: str) -> EventRecord:
        return next(e for e in self.events[call_id] if e.kind == kind)


def _sip_calls(sandbox: Sandbox, services: CallServices | None, script: Sequence[Segment], tmp_path: Path, *,
               law: Law = "ulaw", calls: int = 1, listen_s: float = 14.0, bridge: bool = True,
               during: Callable[[], None] | None = None) -> Outcome:
    """Place SIPp calls; the bridge serves them as `ivr serve` runs it (AMI link included) unless
    `bridge` is False (nothing listens: the dialplan's fail-open path). `during` runs in a thread
    beside the calls (e.g. to kill a bridge mid-call)."""
    joins: list[AmiEvent] = []

    async def main() -> SippRun:
        link = server = None
        if services is not None and bridge:
            params = bridge_params(services.settings)
            params.agi_port, params.audiosocket_port = sandbox.info.agi_port, 0
            services.settings.ami = sandbox.ami_settings()
            link = AmiLink(services)
            await link.client.connect()
            server = Bridge(params, conversation_handler(services, link))
            await server.start()
        watch = AmiClient(sandbox.ami_settings(), on_event=lambda e: joins.append(e)
                          if e.name == "QueueCallerJoin" else None)
        await watch.connect()
        side = asyncio.create_task(asyncio.to_thread(during)) if during else None
        try:
            return await asyncio.to_thread(place_calls, sandbox.info.sip_port, script, tmp_path / "sipp",
                                           law=law, calls=calls, listen_s=listen_s, caller=CALLER)
        finally:
            if side is not None:
                await side
            if server is not None:
                await server.stop(drain_timeout_s=10)
            await asyncio.sleep(1)  # the AMI Hangup of the last call
            await watch.close()
            if link is not None:
                await link.client.close()

    run = asyncio.run(main())
    if services is None or services.records is None:
        return Outcome(run, [], {}, {}, joins)
    services.records.close()  # writes every queued record
    store = services.records.store
    rows = store.calls()
    return Outcome(run, rows, {c.id: store.turns(c.id) for c in rows}, {c.id: store.events(c.id) for c in rows},
                   joins)


def _speech(name: str) -> bytes:
    return read_wav(FIXTURES / "en" / name)


def _last_reply(heard: bytes) -> bytes:
    """The audio from the start of the assistant's last utterance (after the caller spoke)."""
    spans = speech_spans(heard)
    assert spans, "the caller heard nothing"
    return heard[int(spans[-1][0] * SAMPLE_RATE) * 2:]


def test_ulaw_caller_asks_for_the_balance_and_hears_it(sandbox: Sandbox, services: CallServices,
                                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ivr.calls")
    script = [Pause(4000), Speak(_speech("balance_1.wav")), Pause(14000)]
    out = _sip_calls(sandbox, services, script, tmp_path, law="ulaw")

    assert out.run.returncode == 0, out.run.stats
    (heard_call,) = out.run.calls
    assert heard_call.answered and heard_call.payload_types == {0}  # u-law only, as offered
    (call,) = out.calls
    assert call.channel.startswith("PJSIP/provider-") and call.engine == "whisper"
    assert out.turns[call.id], (call, out.events[call.id])  # (the record says how the call ended)
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
    # the operator's log: one line per call event; the reply it names is the audio the caller heard
    events = [r.call_event for r in caplog.records if hasattr(r, "call_event")]
    assert [e["event"] for e in events] == ["call.start", "call.turn", "call.end"]
    start, first, end = events
    assert start["caller"] == "****0100" and start["flow"] == "support" and start["call_id"] == call.id
    assert first["intent"] == "balance" and first["latency_ms"] > 0 and "money" in first["transcript"].lower()
    reply = services.prompts.get_sync(first["reply"], "en")
    assert similarity(heard, reply[: 2 * SAMPLE_RATE * 2]) > 0.9, first["reply"]  # its first 2 s (the caller hangs up)
    assert end["outcome"] == "contained" and end["turns"] == 1 and end["duration_s"] > 10
    # served, then the caller hung up: contained; SIPp's plain BYE recorded as normal clearing
    assert call.status == "contained" and call.handoff_reason == "caller_hung_up_after_service"
    assert out.event(call.id, "ami.Hangup").data["Cause"] == "16"


def _heard_reply(services: CallServices, heard: bytes) -> str:
    engine = services.asr_engine("en")
    assert engine is not None
    return engine.transcribe(_last_reply(heard))[0].lower()


def _music_on_hold(sandbox: Sandbox) -> bytes:
    (music,) = sandbox.host_path("moh").glob("*.wav")
    return read_wav(music)


def test_alaw_caller_asks_for_a_person_reaches_the_queue_with_context_and_hears_music(
        sandbox: Sandbox, services: CallServices, tmp_path: Path) -> None:
    # over the menu prompt (barge-in), then on hold: the transfer prompt ends ~10-15 s in on a busy machine
    script = [Pause(3000), Speak(_speech("operator_1.wav")), Pause(20000)]
    out = _sip_calls(sandbox, services, script, tmp_path, law="alaw", listen_s=20)

    assert out.run.returncode == 0, out.run.stats
    (heard_call,) = out.run.calls
    assert heard_call.payload_types == {8}  # a-law only, as offered
    (call,) = out.calls
    assert out.turns[call.id][0].intent == "operator"
    assert call.status == "transferred" and call.handoff_reason == "caller_asked"
    join = out.joins[0]  # (the sandbox's queue times out after 3 s and the menu sends the caller back)
    assert join.get("Queue") == "support" and join.get("Uniqueid") == call.id
    assert join.variables["IVR_ROUTE"] == "queue" and join.variables["IVR_REASON"] == "caller_asked"
    assert join.variables["IVR_CALL_ID"] == call.id and "reason=caller_asked" in join.variables["IVR_SUMMARY"]
    # waiting in the queue, the caller hears the music of asterisk/musiconhold.conf (its opening bars)
    music = _music_on_hold(sandbox)
    assert similarity(heard_call.audio(), music[8000 * 2: 8000 * 2 * 2]) > 0.8


def test_dtmf_rfc4733_into_the_assistant_picks_the_menu_entry(sandbox: Sandbox, services: CallServices,
                                                               tmp_path: Path) -> None:
    """Key 1 (a telephone-event in the RTP, as desk phones send it) during the greeting: the balance."""
    out = _sip_calls(sandbox, services, [Pause(3000), Press("1"), Pause(12000)], tmp_path, listen_s=12)

    assert out.run.returncode == 0, out.run.stats
    (call,) = out.calls
    first = out.turns[call.id][0]
    assert (first.dtmf, first.intent) == ("1", "balance")
    text = _heard_reply(services, out.run.calls[0].audio())
    assert "balance" in text or "gigabytes" in text, text
    assert call.status == "contained"


def test_bridge_down_the_caller_gets_the_keypad_menu_and_reaches_the_queue(sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
    """Nothing listens on the AGI port: the dialplan's push-button menu answers, key 1 (RFC 4733)
    goes to the live line, which learns why."""
    out = _sip_calls(sandbox, None, [Pause(1200), Press("1"), Pause(6000)], tmp_path, listen_s=6)

    assert out.run.returncode == 0, out.run.stats
    (join,) = out.joins
    assert join.variables["IVR_INTENT"] == "menu_1" and join.variables["IVR_REASON"] == "bridge_unreachable"
    assert join.get("Channel").startswith("PJSIP/provider-")


def test_caller_hanging_up_mid_greeting_is_abandoned_with_a_normal_clearing_cause(
        sandbox: Sandbox, services: CallServices, tmp_path: Path) -> None:
    out = _sip_calls(sandbox, services, [Pause(3000)], tmp_path, listen_s=1.5)

    assert out.run.returncode == 0, out.run.stats
    (heard_call,) = out.run.calls
    assert not heard_call.bye_from_asterisk  # the caller hung up
    assert len(heard_call.audio()) / 16000 < 3  # it did not hear the whole greeting
    (call,) = out.calls
    assert call.status == "abandoned" and call.handoff_reason == "caller_hung_up" and out.turns[call.id] == []
    hangup = out.event(call.id, "ami.Hangup").data
    assert hangup["Cause"] == "16" and "BYE" in hangup["Cause-source"]


def test_bridge_killed_mid_call_the_caller_reaches_the_menu_and_the_log_is_json(sandbox: Sandbox,
                                                                                   tmp_path: Path) -> None:
    """The real `ivr --log-json -v serve` takes the call; once it logs the caller's first turn it is
    SIGKILLed. The dialplan gives the caller the keypad menu, which (no key pressed) sends them on to
    the live line, marked bridge_lost. Every line the server logged is JSON; the call events are among them."""
    (tmp_path / "ivr.yaml").write_text("server:\n  warm_langs: [en]\n")
    env = {**os.environ, "IVR_DATA_DIR": str(tmp_path), "IVR_CALL_TIME": CALL_TIME,
           "IVR_AGI_PORT": str(sandbox.info.agi_port), "IVR_AUDIOSOCKET_PORT": str(_free_port()),
           "IVR_HEALTH_PORT": str(health := _free_port())}
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(tmp_path / "ivr.yaml"), "--log-json",
                             "-v", "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while _health(health) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-2000:]
            time.sleep(0.2)

        def kill_after_first_turn() -> None:
            until = time.monotonic() + 30
            while not any('"call.turn"' in line for line in lines) and time.monotonic() < until:
                time.sleep(0.05)
            proc.kill()

        script = [Pause(3000), Speak(_speech("balance_1.wav")), Pause(12000)]
        out = _sip_calls(sandbox, None, script, tmp_path, listen_s=15, bridge=False, during=kill_after_first_turn)
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(5)
    assert out.run.returncode == 0, out.run.stats
    records = [json.loads(line) for line in lines if line.strip()]  # every line is one JSON object
    events = {r["event"]: r for r in records if "event" in r}
    assert events["call.start"]["caller"] == "****0100" and events["call.turn"]["intent"] == "balance"
    assert "call.end" not in events  # killed mid-call
    join = out.joins[0]
    # the menu's timeout: the live line (key presses in the menu: the bridge-down test)
    assert join.variables["IVR_REASON"] == "bridge_lost" and join.variables["IVR_ROUTE"] == "queue"
    assert join.get("Uniqueid") == events["call.start"]["call_id"]


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def test_twenty_simultaneous_sip_calls_are_all_answered_heard_and_recorded(sandbox: Sandbox, services: CallServices,
                                                                             tmp_path: Path) -> None:
    """Load as behaviour: 20 SIP callers at once each ask for the balance; every call is answered, its
    caller hears an answer after speaking, and its record is written. (Timings: bench/sip_load.py.)"""
    script = [Pause(3000), Speak(_speech("balance_1.wav")), Pause(20000)]
    out = _sip_calls(sandbox, services, script, tmp_path, calls=20, listen_s=20)

    assert out.run.returncode == 0, out.run.stats
    assert len(out.run.calls) == 20 and all(c.answered for c in out.run.calls)
    for heard_call in out.run.calls:  # the caller spoke 3-5.5 s in: something answered it after that
        assert any(start > 5.5 for start, _ in speech_spans(heard_call.audio())), heard_call.call_id
    assert len(out.calls) == 20 and all(c.status != "active" for c in out.calls)
    assert sum(bool(out.turns[c.id]) and out.turns[c.id][0].intent == "balance" for c in out.calls) >= 18


def test_the_desk_phone_of_pjsip_conf_registers_with_its_password_only(sandbox: Sandbox, tmp_path: Path) -> None:
    conf = sandbox.host_path("etc/pjsip.conf").read_text()
    password = re.search(r"\[100-auth\][^\[]*?^password = (\S+)", conf, re.M | re.S)
    assert password is not None
    wrong = register_phone(sandbox.info.sip_port, "100", "not-" + password[1], tmp_path / "wrong")
    assert wrong.returncode != 0  # challenged again: refused
    assert "Avail" not in sandbox.cli("pjsip show contacts")
    ok = register_phone(sandbox.info.sip_port, "100", password[1], tmp_path / "ok")
    assert ok.returncode == 0, ok.stats
    contacts = sandbox.cli("pjsip show contacts")
    assert "100/sip:100@127.0.0.2" in contacts, contacts
