"""Whole calls through the real pipeline on a simulated line (no Asterisk): VAD, ASR with real
models on real audio, NLU, the support flow with its hooks on the demo database, TTS, records."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from ivr.asr.scheduler import FINAL_BUDGET_S, PARTIAL_BUDGET_S
from ivr.audio.pcm import FRAME_BYTES, read_wav
from ivr.audio.vad import DEFAULT_END_SILENCE_MS
from ivr.call import ASR_CHUNK_FRAMES, ASR_TRAILING_SILENCE_MS, PREROLL_FRAMES
from ivr.config import Settings
from ivr.errors import EngineError
from ivr.services import CallServices
from ivr.storage.records import NBEST_EVENT, CallStore
from ivr.testing.fixtures import load_manifest
from ivr.testing.replay import caller_turns, run_call
from ivr.testing.simline import CallerTurn
from ivr.tts.cache import PromptCache
from ivr.tts.engine import TtsEngine, TtsParams

FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures"
CALLER = "+15550100"
OPEN = datetime(2026, 11, 23, 10, 0)  # a Monday morning: the demo line is open
CLOSED = datetime(2026, 11, 23, 21, 30)  # the same Monday after 20:00


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings()
    s.paths.data = tmp_path
    s.storage.url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    s.call_time = OPEN  # routes must not depend on the hour the suite runs at
    return s


def _call(services: CallServices, lang: str, turns: list[CallerTurn], call_time: datetime | None = None):
    try:
        return asyncio.run(run_call(services, lang, turns, caller_id=CALLER, call_time=call_time))
    finally:
        services.close()


def _manifest_call(name: str):
    return next(c for c in load_manifest().calls if c.name == name)


@pytest.mark.slow
def test_english_balance_then_goodbye_is_answered_from_the_database_and_recorded(settings: Settings) -> None:
    services = CallServices.create(settings, engine_override={"en": "whisper"})
    result, line = _call(services, "en", caller_turns(_manifest_call("en_balance_then_goodbye")))

    assert result.engine == "whisper"
    assert [t.intent for t in result.turns] == ["balance", "goodbye"]
    assert "12 dollars and 50 cents" in result.turns[0].reply  # +15550100's balance in the demo DB
    assert result.route == "completed"
    turn = result.turns[0]
    assert turn.latency_ms > 0 and turn.asr_ms > 0 and turn.endpoint_ms == 800
    assert len(line.heard) > 8000 * 2 * 5  # the caller heard more than 5 s of prompts
    # the call record was written as the call went, transcript and all
    store = CallStore(settings.storage_url)
    (call,) = store.calls()
    assert call.id == result.call_id and call.status == "contained" and call.lang == "en"
    assert [t.intent for t in store.turns(call.id)] == ["balance", "goodbye"]


def test_korean_roaming_is_heard_through_the_main_menu_grammar(settings: Settings) -> None:
    """Korean Vosk with the state's phrase list: "해외 로밍" at the main menu is `roaming`."""
    services = CallServices.create(settings, with_records=False, engine_override={"ko": "vosk"})
    pcm = read_wav(FIXTURES / "ko/roaming_1.wav")
    result, _ = _call(services, "ko", [CallerTurn(pcm=pcm)])
    assert result.engine == "vosk"
    assert result.turns[0].transcript == "해외 로밍"
    assert result.turns[0].intent == "roaming"
    assert "로밍" in result.turns[0].reply
    # decided on the event loop: the closing segment had decoded the turn, no final went to the ASR pool
    assert services.asr.stats.finals == 0


def test_once_the_caller_goes_quiet_the_work_ahead_of_the_final_is_as_urgent_as_the_final(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The closing segment (Vosk decodes what it has 300 ms into the silence) is queued with the final's
    expected deadline, not a partial's second: across calls, a caller about to be answered goes first."""
    services = CallServices.create(settings, with_records=False, engine_override={"ko": "vosk"})
    asked: list[tuple[str, float]] = []
    run_asr = services.run_asr

    async def recording(func, *args, deadline=None, lane=None):  # type: ignore[no-untyped-def]
        asked.append((getattr(func, "__name__", ""), deadline - time.monotonic() if deadline else 0.0))
        return await run_asr(func, *args, deadline=deadline, lane=lane)

    monkeypatch.setattr(services, "run_asr", recording)
    turns = [CallerTurn(pcm=read_wav(FIXTURES / "ko/roaming_1.wav"), barge_in_after_ms=500)]  # over the greeting
    try:  # in real time: on the audio clock the end of speech is decided before the segment's job runs
        result, _ = asyncio.run(run_call(services, "ko", turns, caller_id=CALLER, realtime=True))
    finally:
        services.close()
    assert result.turns[0].intent == "roaming"
    closing = [left for name, left in asked if name == "close_segment"]
    assert len(closing) == 1
    # due when the endpointer decides (800 - 300 ms from now) plus the final's budget; a partial: in 1 s
    assert closing[0] <= (DEFAULT_END_SILENCE_MS - ASR_TRAILING_SILENCE_MS) / 1000 + FINAL_BUDGET_S
    assert max(left for name, left in asked if name == "accept") > PARTIAL_BUDGET_S - 0.1  # speech still waits


def test_speech_that_arrives_while_the_pool_is_busy_is_fed_in_one_job_not_one_per_chunk(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call whose decoding is behind catches up in one trip to the ASR pool: the 100 ms chunks flushed while
    its feed job waits join that job, in order, and nothing is lost (the turn is still understood)."""
    settings.asr.workers = 1
    services = CallServices.create(settings, with_records=False, engine_override={"ko": "vosk"})
    fed: list[int] = []
    run_asr = services.run_asr
    release = threading.Event()
    held: list[asyncio.Future[bool]] = []

    async def recording(func, *args, deadline=None, lane=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name == "recognizer":  # the call begins: its only worker is kept busy for the next 2 s
            held.append(asyncio.ensure_future(services.asr.run(release.wait, 10)))
            threading.Timer(2.0, release.set).start()
        elif name == "accept":
            fed.append(len(args[0]))
        return await run_asr(func, *args, deadline=deadline, lane=lane)

    monkeypatch.setattr(services, "run_asr", recording)
    pcm = read_wav(FIXTURES / "ko/roaming_1.wav")
    try:
        result, _ = asyncio.run(run_call(services, "ko", [CallerTurn(pcm=pcm, barge_in_after_ms=500)],
                                         caller_id=CALLER, realtime=True))
    finally:
        services.close()
    assert result.turns[0].intent == "roaming" and held[0].result() is True
    # chunk by chunk, the first job would be the pre-roll and one chunk, every other one chunk; the speech of the
    # busy seconds (from 0.5 s into the greeting, less the detector's onset) went in one job
    one_chunk, preroll = ASR_CHUNK_FRAMES * FRAME_BYTES, PREROLL_FRAMES * FRAME_BYTES
    assert max(fed) >= preroll + 5 * one_chunk


@pytest.mark.slow
def test_a_buffering_recognizer_takes_the_callers_audio_on_the_loop_not_behind_other_calls_decodes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whisper's accept is a byte append: through the pool, a call's last chunk waited behind other calls'
    Whisper decodes holding every worker, and its early final was queued late. Only decodes go to the pool."""
    services = CallServices.create(settings, with_records=False, engine_override={"en": "whisper"})
    pooled: list[str] = []
    run_asr = services.run_asr

    async def recording(func, *args, deadline=None, lane=None):  # type: ignore[no-untyped-def]
        pooled.append(getattr(func, "__name__", ""))
        return await run_asr(func, *args, deadline=deadline, lane=lane)

    monkeypatch.setattr(services, "run_asr", recording)
    turns = [CallerTurn(pcm=read_wav(FIXTURES / "en/balance_1.wav"), barge_in_after_ms=500)]
    try:
        result, _ = asyncio.run(run_call(services, "en", turns, caller_id=CALLER, realtime=True))
    finally:
        services.close()
    assert result.turns[0].intent == "balance"
    assert pooled == ["recognizer"]  # no accept, no turn start on the pool (the early final has its own queue)
    assert services.asr.stats.early_finals >= 1


def test_keys_work_without_any_speech_model(settings: Settings) -> None:
    """Russian has no speech model on this machine: the call still works by keys (fail open)."""
    services = CallServices.create(settings, with_records=False)
    services._engines["ru"] = None  # as when no Russian model is installed (true here anyway)
    result, _ = _call(services, "ru", [CallerTurn(dtmf="1"), CallerTurn(dtmf="0")])
    assert result.engine == "none"
    assert [t.dtmf for t in result.turns[:2]] == ["1", "0"]
    assert result.turns[0].reply  # the balance was read out
    assert result.handed_off and result.route == "support"


def test_after_hours_the_same_keys_offer_a_callback_then_reach_the_after_hours_line(settings: Settings) -> None:
    """The call's time decides the route: "0" after hours offers a callback, "2" then transfers to
    the flow's after_hours_route instead of the day queue."""
    services = CallServices.create(settings, with_records=False)
    services._engines["en"] = None  # keys only: no speech model needed
    result, _ = _call(services, "en", [CallerTurn(dtmf="0"), CallerTurn(dtmf="2")], call_time=CLOSED)
    assert "call you back" in result.turns[0].reply
    assert result.handed_off and result.route == "support-afterhours" and result.reason == "after_hours"


def test_speech_without_a_model_is_a_no_match_and_keys_still_work(settings: Settings) -> None:
    """Speech in a language with no model is not silence: the caller hears "sorry" at once, then keys work."""
    services = CallServices.create(settings, with_records=False)
    services._engines["en"] = None
    speech = CallerTurn(pcm=read_wav(FIXTURES / "en/balance_1.wav"))
    result, _ = _call(services, "en", [speech, CallerTurn(dtmf="1")])
    assert result.turns[0].transcript == "" and result.turns[0].intent == "none" and not result.turns[0].no_input
    assert result.turns[0].latency_ms < 2000  # answered, not left waiting for the no-input timeout
    assert result.turns[1].dtmf == "1" and "12 dollars" in result.turns[1].reply


def test_silence_escalates_to_the_live_line(settings: Settings) -> None:
    services = CallServices.create(settings, with_records=False, engine_override={"ko": "vosk"})
    silence = CallerTurn(pcm=read_wav(FIXTURES / "ko/silence_1.wav"))  # 6 s of line noise, no speech
    result, _ = _call(services, "ko", [silence, silence, silence])
    assert [t.no_input for t in result.turns] == [True, True, True]
    assert result.handed_off and result.reason == "no_input"


@pytest.mark.slow
def test_barge_in_over_the_greeting_stops_it_and_the_question_is_understood(settings: Settings) -> None:
    services = CallServices.create(settings, with_records=False, engine_override={"en": "whisper"})
    turns = caller_turns(_manifest_call("en_barge_in"))
    result, line = _call(services, "en", turns)
    first = result.turns[0]
    assert first.barge_in and line.barged >= 1
    assert first.intent == "balance" and "12 dollars" in first.reply
    # greeting + menu last about 10 s; the caller started talking 3 s in (after its recording's lead
    # silence): playback stopped once 300 ms of speech were heard (barge_in_min_speech_ms), within
    # one 20 ms frame, not seconds later
    samples = np.abs(np.frombuffer(turns[0].pcm, "<i2").astype(np.int32))
    onset_s = 3.0 + int(np.argmax(samples > 1000)) / 8000  # loud speech begins (the VAD hears it a bit sooner)
    cut_s = line.cut_at[0] / (8000 * 2)
    assert 0.2 <= cut_s - onset_s <= 0.3 + 0.1 + 0.02, (onset_s, cut_s)


def test_a_broken_voice_does_not_silence_the_call(settings: Settings, tmp_path: Path) -> None:
    """No TTS voice for the language and no earlier renderings: the caller could not hear the menu,
    so the call goes to the live line at once, with the reason in the record and the agent's summary."""
    prompts = tmp_path / "prompts"
    shutil.copytree(settings.paths.prompts, prompts, ignore=shutil.ignore_patterns("cache"))
    services = CallServices.create(settings)
    services.prompts = PromptCache(prompts, TtsEngine(TtsParams(voices={"en": "no-such-voice"})))
    services._engines["en"] = None
    result, line = _call(services, "en", [CallerTurn(dtmf="1")])
    assert line.heard == b""  # nothing could be rendered
    assert result.handed_off and result.route == "support" and result.reason == "tts_failed"
    assert "could not speak" in result.summary and "no-such-voice" in result.summary
    assert result.turns == []  # the caller was not kept waiting for a menu they never heard
    (record,) = CallStore(settings.storage_url).calls()
    # the caller reached a human, but the assistant failed
    assert record.status == "failed" and record.handoff_reason == "tts_failed"


def test_a_voice_lost_mid_call_hands_off_with_what_the_caller_said(settings: Settings, tmp_path: Path) -> None:
    """The greeting and menu were rendered before; the balance answer (a dynamic text) cannot be:
    the caller, who pressed 1, reaches the live line with that key in the summary."""
    prompts = tmp_path / "prompts"
    shutil.copytree(settings.paths.prompts, prompts, ignore=shutil.ignore_patterns("cache"))
    services = CallServices.create(settings, with_records=False)
    services._engines["en"] = None
    real = services.prompts

    class BalanceAnswerFails:  # the shipped cache for everything but the one dynamic answer
        async def get(self, text: str, lang: str) -> bytes:
            if "dollars" in text:
                raise EngineError("espeak-ng exited with status 1")
            return await real.get(text, lang)

        def close(self) -> None:
            real.close()

    services.prompts = BalanceAnswerFails()
    result, line = _call(services, "en", [CallerTurn(dtmf="1")])
    assert len(line.heard) > 0  # the greeting and menu played
    assert result.handed_off and result.reason == "tts_failed"
    assert result.turns[0].dtmf == "1" and "key 1" in result.summary


@pytest.mark.parametrize("min_speech_ms, stops", [(None, True), (60000, False)])
def test_a_states_endpoint_settings_apply_to_barge_in_over_its_own_prompt(
        settings: Settings, tmp_path: Path, min_speech_ms: int | None, stops: bool) -> None:
    """The main menu with `endpoint: {barge_in_min_speech_ms: 60000}` cannot be talked over: the
    caller's speech 3 s into the greeting no longer stops it (the default 300 ms does)."""
    if min_speech_ms is not None:
        flows = tmp_path / "flows"
        shutil.copytree(settings.paths.flows, flows)
        text = (flows / "support.yaml").read_text()
        menu = "  main_menu:\n    say: main_menu\n"
        assert menu in text
        (flows / "support.yaml").write_text(
            text.replace(menu, menu + f"    endpoint: {{barge_in_min_speech_ms: {min_speech_ms}}}\n"))
        settings.paths.flows = flows
    services = CallServices.create(settings, with_records=False)
    services._engines["en"] = None  # the endpointer decides barge-in; no decoding needed
    speech = CallerTurn(pcm=read_wav(FIXTURES / "en/long_balance_1.wav"), barge_in_after_ms=3000)
    result, line = _call(services, "en", [speech, CallerTurn(dtmf="1")])
    assert (line.barged >= 1) is stops
    assert result.turns[0].dtmf == "" and result.turns[1].dtmf == "1"  # the speech was still a turn


def test_metrics_follow_a_real_call(settings: Settings) -> None:
    """What `ivr serve` exports, fed by a whole Korean call (real Vosk on real audio): two turns with
    ASR confidences and stage timings, a hand-off by reason, the call counted by route, none active."""
    from ivr.metrics import IvrMetrics

    services = CallServices.create(settings, with_records=False, engine_override={"ko": "vosk"})
    services.metrics = metrics = IvrMetrics()
    turns = caller_turns(_manifest_call("ko_operator_handoff"))
    result, _ = _call(services, "ko", turns)
    assert result.handed_off
    value = metrics.registry.get_sample_value
    assert value("ivr_turns_total") == 2
    assert value("ivr_asr_confidence_count") == 2
    assert value("ivr_turn_latency_seconds_count") == 2
    assert value("ivr_stage_latency_seconds_count", {"stage": "asr"}) == 2
    assert value("ivr_handoffs_total", {"reason": "caller_asked"}) == 1
    assert value("ivr_calls_total", {"route": "support"}) == 1
    assert value("ivr_calls_active") == 0
    assert b"ivr_turns_total 2.0" in metrics.exposition()


def test_a_key_pressed_over_the_greeting_stops_it_at_once_and_is_the_answer(settings: Settings) -> None:
    """DTMF barge-in: "1" pressed 2 s into the greeting cuts the prompt within a frame and is taken
    as the menu choice (the balance), without waiting for the menu to be read out."""
    services = CallServices.create(settings, with_records=False)
    services._engines["en"] = None  # keys only
    result, line = _call(services, "en", [CallerTurn(dtmf="1", barge_in_after_ms=2000), CallerTurn(dtmf="0")])
    assert line.barged >= 1
    cut_s = line.cut_at[0] / (8000 * 2)
    assert 2.0 <= cut_s <= 2.0 + 0.06, cut_s  # stopped within a frame or two of the key
    first = result.turns[0]
    assert first.dtmf == "1" and first.barge_in and first.intent == "balance"
    assert "12 dollars" in first.reply


def test_the_record_keeps_the_nbest_and_the_reading_chosen(settings: Settings) -> None:
    """The NLU fuses the recognizer's readings (n-best); the record keeps them all and the one chosen."""
    services = CallServices.create(settings, engine_override={"ko": "vosk"})
    result, _ = _call(services, "ko", [CallerTurn(pcm=read_wav(FIXTURES / "ko/roaming_1.wav"))])
    assert result.turns[0].intent == "roaming"
    store = CallStore(settings.storage_url)
    (call,) = store.calls()
    (event,) = [e for e in store.events(call.id) if e.kind == NBEST_EVENT]
    assert event.data["turn"] == 1 and event.data["intent"] == "roaming"
    readings = [text for text, _conf in event.data["nbest"]]
    assert readings and event.data["reading"] in readings and "해외 로밍" in readings
    assert all(0.0 <= conf <= 1.0 for _text, conf in event.data["nbest"])
