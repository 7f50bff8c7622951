"""Whisper (faster-whisper, tiny.en int8) on real recorded telephone prompts, scored by WER.

The audio and the reference transcripts come from the Debian packages asterisk-core-sounds-en-wav
and asterisk-core-sounds-en (core-sounds-en.txt.gz): recorded by a professional voice, written
by nobody here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rapidfuzz.distance import Levenshtein

from ivr.asr.whisper import WhisperEngine
from ivr.asr.whisper_models import tiny_en_path
from ivr.audio.pcm import FRAME_BYTES, read_wav, silence
from ivr.errors import ModelNotFoundError
from ivr.testing.core_sounds import EN_SOUNDS, EN_WER_PROMPTS, transcripts, transcripts_file, words_of

SOUNDS = EN_SOUNDS
TRANSCRIPTS = transcripts_file("en")
PROMPTS = EN_WER_PROMPTS
# measured 0.051 (6 errors / 117 words, greedy decoding, tiny.en int8, 2 cores); bound with margin
MAX_WER = 0.12

pytestmark = pytest.mark.skipif(
    tiny_en_path() is None or not SOUNDS.is_dir() or not TRANSCRIPTS.is_file(),
    reason="needs ivr[whisper] and asterisk-core-sounds-en(-wav): run ./install.sh",
)


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine()


def decode(engine: WhisperEngine, pcm: bytes, phrases: list[str] | None = None):  # noqa: ANN201
    rec = engine.recognizer()
    rec.set_grammar(phrases)
    for i in range(0, len(pcm), FRAME_BYTES):
        assert rec.accept(pcm[i : i + FRAME_BYTES]) is None  # not streaming: no partials
    return rec.final()


@pytest.mark.slow
def test_wer_on_recorded_prompts(engine: WhisperEngine) -> None:
    refs = transcripts(TRANSCRIPTS)
    errors = words = 0
    for name in PROMPTS:
        result = decode(engine, read_wav(SOUNDS / f"{name}.wav", target_rate=None))
        ref, hyp = words_of(refs[name]), words_of(result.text)
        errors += Levenshtein.distance(ref, hyp)
        words += len(ref)
        assert result.is_final and result.engine == "whisper" and 0.0 < result.confidence <= 1.0
    assert words > 100
    assert errors / words <= MAX_WER, f"WER {errors / words:.3f} over {words} words"


def test_grammar_snaps_to_phrase_and_rejects_out_of_grammar(engine: WhisperEngine) -> None:
    phrases = ["thank you", "goodbye", "operator", "check my balance"]
    said = decode(engine, read_wav(SOUNDS / "privacy-thankyou.wav", target_rate=None), phrases)
    assert said.text == "thank you" and said.alternatives[0].text == "thank you"
    other = decode(engine, read_wav(SOUNDS / "conf-muted.wav", target_rate=None), phrases)
    assert other.text == "" and other.alternatives == ()
    assert other.words  # the raw transcript is kept for logs


def test_noise_does_not_hallucinate_a_phrase(engine: WhisperEngine) -> None:
    """Decoded with a phrase-list prompt, noise tends to echo the prompt ("yes, no, no, no, ...")."""
    import numpy as np

    phrases = ["thank you", "goodbye", "operator", "check my balance", "yes", "no"]
    for seed in (1, 2):
        noise = np.random.default_rng(seed).normal(0, 300 * seed, 12000).astype("<i2").tobytes()
        assert decode(engine, noise, phrases).text == ""


def test_silence_is_nothing(engine: WhisperEngine) -> None:
    assert decode(engine, silence(1500)).text == ""
    assert decode(engine, b"").text == ""


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="cannot load Whisper model") as info:
        WhisperEngine(tmp_path / "no-such-model")
    assert "asr.whisper_model" in str(info.value)


def test_domain_hints_prompt_free_form_decoding_without_snapping(engine: WhisperEngine) -> None:
    """A free-form turn with hints (the grammar's words) decodes what was said, not one of the hints;
    hints set mid-turn apply from the next turn, like a grammar."""
    rec = engine.recognizer()
    rec.set_hints(["conference", "muted", "operator", "balance"])
    pcm = read_wav(SOUNDS / "conf-muted.wav", target_rate=None)
    rec.accept(pcm)
    _pcm, prompt_words = rec.take_turn()
    assert prompt_words == ["conference", "muted", "operator", "balance"]  # what transcribe prompts with
    result = rec.result_for("you are now muted", 0.8, prompt_words)
    assert result.text == "you are now muted" and len(result.alternatives) == 1  # free-form: not snapped
    rec.accept(pcm)
    said = rec.final()  # decoded with the hints as its prompt
    assert "muted" in said.text.lower() and said.text.lower() not in ("muted", "conference")
    rec.accept(pcm[:1600])
    rec.set_hints(["x ray"])  # mid-turn: this turn keeps its hints, the next one gets the new ones
    assert rec.take_turn()[1] == ["conference", "muted", "operator", "balance"]
    assert rec.take_turn()[1] == ["x ray"]


# Single words a caller says to a menu, among Asterisk's recorded prompts (0.8-1.0 s). Decoded on the 20 s
# encoder window with this menu, none of the four is heard (tiny.en repeats them or writes "3"); short turns get
# Whisper's own 30 s window (WhisperParams.short_turn_s; bench/whisper_window.py).
SHORT_WORDS = {"pbx-transfer": "transfer", "vm-goodbye": "goodbye", "digits/3": "three", "digits/11": "eleven"}
MENU = ["transfer", "goodbye", "operator", "billing", "minutes", "balance", "yes", "no", "one", "two", "three",
        "eleven", "twelve", "twenty", "thirty", "repeat", "main menu", "help"]


def test_short_grammar_turns_are_heard_on_the_call_path(engine: WhisperEngine) -> None:
    heard = {}
    for name in SHORT_WORDS:
        recognizer = engine.recognizer()
        recognizer.set_grammar(MENU)
        recognizer.accept(read_wav(SOUNDS / f"{name}.wav", target_rate=None))
        heard[name] = engine.final_batch([recognizer])[0].text  # the call path's decode (whisper_batch)
    assert heard == SHORT_WORDS


def test_a_batch_decodes_each_turn_as_it_would_alone(engine: WhisperEngine) -> None:
    """A short turn's 30 s window is its own: the longer turn batched with it keeps the shorter window."""
    from ivr.asr.whisper_batch import decode_batch

    items = [(read_wav(SOUNDS / "digits/3.wav", target_rate=None), MENU),
             (read_wav(SOUNDS / "vm-login.wav", target_rate=None), None)]
    together = decode_batch(engine, items)
    assert together == [decode_batch(engine, [item])[0] for item in items]
    assert together[0][0].strip(",. ").lower() == "three"


def test_a_turns_window_is_judged_from_its_sample_count_as_its_features_would_give(engine: WhisperEngine) -> None:
    """decode_batch picks a turn's encoder window before computing its features (Moonshine may take it instead):
    faster-whisper's feature extractor gives n // HOP + 1 frames for n samples."""
    import numpy as np

    from ivr.asr.whisper_batch import HOP

    for n in (3200, 16000, 32000, 32080, 47999):
        assert engine.model.feature_extractor(np.zeros(n, np.float32)).shape[1] == n // HOP + 1
