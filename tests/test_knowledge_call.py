"""A whole call through the real pipeline (simulated line, VAD, Whisper on the caller's speech, NLU,
the support flow and its hooks, TTS, records) where the caller asks a knowledge-base question in the
middle of a top-up, hears the answer, then finishes the top-up; the record names the entry."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from ivr.config import Settings
from ivr.metrics import IvrMetrics
from ivr.report import build_report
from ivr.services import CallServices
from ivr.storage.records import FAQ_ANSWERED, CallStore
from ivr.testing.replay import run_call
from ivr.testing.simline import CallerTurn
from ivr.tts.engine import TtsEngine

OPEN = datetime(2026, 11, 23, 10, 0)  # a Monday morning
QUESTION = "What payment methods do you accept?"
# a recording ends with a pause, as the fixtures do: the caller waits for the answer instead of pressing
# the next keys while the endpointer is still deciding that the question is over
SILENCE_AFTER = 16_000  # 1 s of 8 kHz slin


@pytest.mark.slow
def test_question_mid_top_up_is_answered_and_the_call_goes_on(tmp_path: Path) -> None:
    settings = Settings()
    settings.paths.data = tmp_path
    settings.storage.url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    settings.call_time = OPEN
    with TtsEngine() as voice:  # the caller's voice: espeak-ng, as a tester would record it
        question = voice.synthesize_sync(QUESTION, "en") + bytes(SILENCE_AFTER)
    turns = [CallerTurn(dtmf="2"), CallerTurn(pcm=question), CallerTurn(dtmf="20#"), CallerTurn(dtmf="1"),
             CallerTurn(dtmf="2"), CallerTurn(dtmf="5")]
    services = CallServices.create(settings, engine_override={"en": "whisper"})
    services.metrics = metrics = IvrMetrics()  # what `ivr serve` exports
    try:
        result, line = asyncio.run(run_call(services, "en", turns, caller_id="+15550100"))
    finally:
        services.close()

    asked = result.turns[1]
    assert asked.intent == "faq.payment_methods", (asked.transcript, asked.intent, asked.score)
    assert asked.reply.startswith("You can pay by bank card")
    # then the state the caller was in asked again, and the top-up went through
    assert result.turns[2].prompt.endswith("How much would you like to add to your account?")
    confirmed = next(t for t in result.turns if t.dtmf == "#")  # keys arrive one per turn: 2, 0, #
    assert "20 dollars" in confirmed.reply and result.route == "completed" and result.survey_score == 5
    assert result.answered == ["payment_methods"]
    assert metrics.registry.get_sample_value("ivr_kb_answers_total", {"entry": "payment_methods"}) == 1

    store = CallStore(settings.storage_url)
    (call,) = store.calls()
    assert call.status == "contained" and call.intent == "top_up"  # the main request: the first
    assert [t.intent for t in store.turns(call.id)][:2] == ["top_up", "faq.payment_methods"]
    (event,) = [e for e in store.events(call.id) if e.kind == FAQ_ANSWERED]
    assert event.data == {"entry": "payment_methods", "topic": "billing", "state": "top_up_amount"}
    report = build_report(store)
    store.close()
    assert report.faq == {"payment_methods": {"topic": "billing", "calls": 1, "contained": 1, "transferred": 0,
                                              "containment_rate": 1.0}}
