"""Whole conversations through a real Asterisk 22 (the sandbox) and the real pipeline.

The caller is Asterisk itself ([ivr-test-turns]): it plays fixture utterances in turn, each after
the assistant's prompt ends (or over it, for barge-in), and records what it heard. The assistant
is `ivr serve`'s handler on the bridge: VAD, ASR (Whisper for English, Vosk for Korean), NLU,
the support flow with hooks on the demo subscriber database, TTS, call records in real SQLite.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.audio.pcm import FRAME_BYTES, duration_s, read_wav, rms
from ivr.config import Settings
from ivr.demo_operator import db_path_for
from ivr.demo_operator.db import OperatorDb
from ivr.server import AmiLink, bridge_params, conversation_handler
from ivr.services import CallServices
from ivr.telephony.ami import AmiClient, AmiEvent
from ivr.telephony.bridge import Bridge
from ivr.testing.fixtures import load_manifest
from ivr.testing.sandbox import Sandbox
from ivr.testing.testcall import originate_turns

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]

CALLER = "+15550100"


def _services(tmp_path: Path) -> CallServices:
    settings = Settings()
    settings.paths.data = tmp_path  # demo subscriber DB and call records of this test only
    settings.storage.url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    return CallServices.create(settings, engine_override={"en": "whisper", "ko": "vosk"})


def _run(sandbox: Sandbox, services: CallServices, call_name: str, *, barge_in_turn: int = 0):
    """Play one manifest call through Asterisk; returns (queue join or None, call record, turns, heard)."""
    call = next(c for c in load_manifest().calls if c.name == call_name)
    services.settings.call_time = call.call_time  # the bridge places the call inside business hours
    sounds = [sandbox.install_sound(t.path, name=f"{call_name}-{i}") if t.file else f"dtmf:{t.dtmf}"
              for i, t in enumerate(call.turns)]
    record = sandbox.recording_path(call_name)
    heard_wav = sandbox.host_path(record + ".wav")

    async def main() -> AmiEvent | None:
        params = bridge_params(services.settings)
        params.agi_port, params.audiosocket_port = sandbox.info.agi_port, 0
        services.settings.ami = sandbox.ami_settings()
        link = AmiLink(services)  # as `ivr serve` with ami.enabled: events into the records, expected wait
        await link.client.connect()
        bridge = Bridge(params, conversation_handler(services, link))
        await bridge.start()
        try:
            async with AmiClient(sandbox.ami_settings()) as ami:
                joined = ami.expect_event(lambda e: e.name == "QueueCallerJoin")
                test_call = await originate_turns(ami, sounds, lang=call.lang, record=record, heard_wav=heard_wav,
                                                  caller_id=CALLER, barge_in_turn=barge_in_turn, wait_s=10)
                joined_by = lambda e: e.get("Uniqueid") == test_call.ivr_uniqueid  # noqa: E731
                await test_call.wait_ended(180)
                if joined.done() and joined_by(joined.result()):
                    return joined.result()
                joined.cancel()
                return None
        finally:
            await bridge.stop(drain_timeout_s=10)
            await asyncio.sleep(1)  # the assistant's channel hangs up just after the caller's
            await link.client.close()

    join = asyncio.run(main())
    services.close()  # writes every queued record
    store = services.records.store
    (record_row,) = store.calls()
    return join, record_row, store.turns(record_row.id), read_wav(heard_wav), store.events(record_row.id)


def test_english_balance_then_goodbye_with_whisper(sandbox: Sandbox, tmp_path: Path) -> None:
    services = _services(tmp_path)
    join, call, turns, heard, _ = _run(sandbox, services, "en_balance_then_goodbye")
    subscriber = OperatorDb(db_path_for(services.settings)).find(CALLER, "en")

    assert join is None  # served by the assistant, not the live line
    assert call.engine == "whisper" and call.lang == "en" and call.route == "completed"
    assert [t.intent for t in turns[:2]] == ["balance", "goodbye"]
    # the answer to the balance question carries the amount from the subscriber database
    answer = turns[1].prompt
    assert f"{int(subscriber.balance)}" in answer, answer
    assert all(t.latency_ms and t.latency_ms > 0 for t in turns[:2])
    # the caller heard the assistant talk for several seconds (greeting, menu, balance, goodbye)
    assert duration_s(heard) > 5 and rms(heard) > 100


def test_korean_call_with_vosk_reaches_the_queue_with_context(sandbox: Sandbox, tmp_path: Path) -> None:
    """A Korean caller asks for the balance by voice (Vosk), then presses 0: the live line's agent sees
    what the caller came for. (The 0 is a key because through Asterisk the lead-in before an utterance
    follows the call's timing, and Korean Vosk reads espeak-ng's "상담원 연결" or rejects it as that
    lead-in shifts by 60 ms: a spoken request here failed in several full runs. Spoken
    hand-offs are tested offline, where the audio is the same every run: test_call_pipeline.py.)"""
    services = _services(tmp_path)
    join, call, turns, _, events = _run(sandbox, services, "ko_balance_then_key_for_agent")

    assert call.engine == "vosk" and call.lang == "ko"
    heard_turns = [(t.transcript, t.intent, t.dtmf, t.no_match) for t in turns]
    assert [t.intent for t in turns[:2]] == ["balance", "operator"], heard_turns
    assert turns[0].transcript and turns[1].dtmf == "0", heard_turns
    assert "잔액" in turns[1].prompt  # the caller heard the balance before asking for a person
    assert join is not None, "the call did not reach the live-line queue"
    assert join.get("Queue") == "support"
    assert join.variables["IVR_ROUTE"] == "queue"
    # the agent sees what the caller came for, and that they asked for a person
    assert join.variables["IVR_INTENT"] == "balance" and join.variables["IVR_REASON"] == "caller_asked"
    summary = join.variables["IVR_SUMMARY"]  # what the assistant learned, for the agent
    assert "reason=caller_asked" in summary and "intent=balance" in summary, summary
    assert join.variables["IVR_CALL_ID"] == call.id
    assert call.status == "transferred" and call.route == "support"
    # AMI: the queue's expected wait went with the hand-off; the queue join and the hang-up of
    # the assistant's channel landed in the call record (keyed by Asterisk's Uniqueid)
    kinds = [e.kind for e in events]
    assert "expected_wait" in kinds
    assert "ami.QueueCallerJoin" in kinds and "ami.Hangup" in kinds
    join_event = next(e for e in events if e.kind == "ami.QueueCallerJoin")
    assert join_event.data["Queue"] == "support"


def _first_pause_s(pcm: bytes, pause_s: float = 1.5) -> tuple[float, float]:
    """(when the assistant first spoke, when it first fell silent for `pause_s`) in what the caller heard."""
    levels = [rms(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm) - FRAME_BYTES, FRAME_BYTES)]
    first = next(i for i, level in enumerate(levels) if level > 300)
    need, quiet = int(pause_s * 50), 0
    for i in range(first, len(levels)):
        quiet = quiet + 1 if levels[i] < 100 else 0
        if quiet >= need:
            return first / 50, (i - need + 1) / 50
    return first / 50, len(levels) / 50


def test_barge_in_stops_the_prompt_and_the_question_is_understood(sandbox: Sandbox, tmp_path: Path) -> None:
    services = _services(tmp_path)
    join, call, turns, heard, _ = _run(sandbox, services, "en_barge_in", barge_in_turn=1)

    first = turns[0]
    assert first.barge_in, "the caller's speech over the greeting did not register as barge-in"
    assert first.intent == "balance"
    # The caller waits for the assistant to make 300 ms of sound (WaitForNoise), then 3 s, then
    # plays its question (300 ms lead silence): it talks from ~3.6 s in. The prompt must stop once
    # 300 ms of speech are heard, ~4.0-4.5 s in, not play out its full length.
    prompts = services.registry.get("support", "en").prompts
    full_s = sum(duration_s(services.prompts.get_sync(prompts[p], "en")) for p in ("welcome", "main_menu"))
    spoke, paused = _first_pause_s(heard)
    assert full_s > 8
    assert paused - spoke < 5.0, (spoke, paused, full_s)
    assert call.route == "completed" and join is None


def test_ivr_call_command_presses_keys_through_asterisk(sandbox: Sandbox, tmp_path: Path) -> None:
    """`ivr call` as a tester runs it, on the running sandbox: a Russian call made of key presses only
    (no Russian speech model is needed) gets the balance, then the live line; verdict and recording."""
    out = tmp_path / "heard"
    done = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "call", "ru_keys_balance_then_operator", "--sandbox-name", sandbox.name,
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "IVR_DATA_DIR": str(tmp_path), "COLUMNS": "200"},  # rich wraps at the width
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "turn 1: keys 1 → balance" in done.stdout and "turn 2: keys 0 → operator" in done.stdout
    assert "route: support (caller_asked)" in done.stdout and "1 passed, 0 failed" in done.stdout
    heard = read_wav(out / "ru_keys_balance_then_operator.wav")
    assert duration_s(heard) > 5 and rms(heard) > 100  # the caller heard the Russian prompts
