"""Vosk's acoustic chunk size through a model overlay (ivr/asr/vosk_chunking.py), on the real Korean model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ivr.asr.models import find_model
from ivr.asr.vosk import VoskEngine
from ivr.asr.vosk_chunking import chunked_model_dir
from ivr.audio.pcm import read_wav
from ivr.config import Settings
from ivr.errors import ConfigError

DATA = Path(__file__).parent / "data" / "asr"
PHRASES = ["잔액 확인", "요금제 변경", "상담원 연결", "데이터 추가", "네", "아니요"]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    found = find_model("ko", Settings())
    assert found is not None
    return found.path


def test_the_overlay_links_the_model_and_sets_only_the_chunk_size(model_dir: Path, tmp_path: Path) -> None:
    overlay = chunked_model_dir(model_dir, 51, tmp_path)
    assert overlay.parent == tmp_path
    own = (model_dir / "conf" / "model.conf").read_text(encoding="utf-8").splitlines()
    conf = (overlay / "conf" / "model.conf").read_text(encoding="utf-8").splitlines()
    assert conf == [*own, "--frames-per-chunk=51"]
    for part in model_dir.iterdir():  # every other part is the model's own, not a copy
        if part.name != "conf":
            assert (overlay / part.name).resolve() == part.resolve()
    assert (overlay / "conf" / "mfcc.conf").resolve() == (model_dir / "conf" / "mfcc.conf").resolve()
    assert chunked_model_dir(model_dir, 51, tmp_path) == overlay  # made once, then reused
    assert chunked_model_dir(model_dir, 99, tmp_path) != overlay
    assert chunked_model_dir(model_dir, 0, tmp_path) == model_dir  # 0: the model as it is


def test_a_chunk_that_is_not_a_multiple_of_the_subsampling_is_refused_with_the_fix(
    model_dir: Path, tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as raised:
        chunked_model_dir(model_dir, 50, tmp_path)
    assert "multiple of 3" in str(raised.value) and "51" in raised.value.fix


def test_a_model_without_its_own_conf_and_an_unwritable_cache_are_used_as_they_are(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    old_layout = tmp_path / "old-model"
    old_layout.mkdir()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="ivr.asr.vosk_chunking"):
        assert chunked_model_dir(old_layout, 51, tmp_path / "cache") == old_layout
        assert chunked_model_dir(model_dir, 51, blocked) == model_dir  # the cache cannot be made: no overlay
    assert "no conf/model.conf" in caplog.text and "cannot write" in caplog.text


def test_larger_chunks_still_recognise_the_phrase(model_dir: Path, tmp_path: Path) -> None:
    engine = VoskEngine(model_dir, frames_per_chunk=51, chunking_dir=tmp_path)
    assert engine.model_path == model_dir  # messages name the model, not the overlay
    rec = engine.recognizer()
    rec.set_grammar(PHRASES)
    pcm = read_wav(DATA / "ko_sangdamwon_yeongyeol.wav", target_rate=None)
    for start in range(0, len(pcm), 1600):  # 100 ms pieces, as a call feeds them
        rec.accept(pcm[start : start + 1600])
    assert rec.final().text == "상담원 연결"
