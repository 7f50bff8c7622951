"""scripts/make_fixtures.py remakes the shipped fixtures byte for byte from their manifest recipes."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ivr.audio.pcm import duration_s, read_wav, rms, silence
from ivr.config import PROJECT_ROOT
from ivr.testing.fixtures import PromptsRecipe, TtsRecipe, load_manifest

SCRIPT = PROJECT_ROOT / "scripts" / "make_fixtures.py"
# one of each kind: espeak-ng English, espeak-ng Korean with noise, real Allison voice, real Russian voice, silence
SAMPLES = (
    "en/yes_1.wav",
    "ko/roaming_1.wav",
    "en/real_fifty_dollars_1.wav",
    "ru/real_goodbye_1.wav",
    "ko/silence_1.wav",
)


@pytest.fixture(scope="module")
def make_fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unavailable(make_fixtures: ModuleType, recipe: object) -> str | None:
    manifest = load_manifest()
    if isinstance(recipe, TtsRecipe):
        installed = make_fixtures.espeak_version()
        if installed != manifest.espeak_ng_version:
            return f"espeak-ng {installed or 'missing'} here, fixtures made with {manifest.espeak_ng_version}"
    if isinstance(recipe, PromptsRecipe) and not (make_fixtures.SOUNDS_ROOT / recipe.sounds).is_dir():
        return f"asterisk core sounds {recipe.sounds} not installed"
    return None


@pytest.mark.parametrize("file", SAMPLES)
def test_recipe_reproduces_the_shipped_file(make_fixtures: ModuleType, file: str) -> None:
    fixture = load_manifest().fixture(file)
    reason = unavailable(make_fixtures, fixture.recipe)
    if reason:
        pytest.skip(reason)
    audio = make_fixtures.make(fixture)
    assert make_fixtures.wav_bytes(audio) == fixture.path.read_bytes()


def test_script_writes_identical_files_elsewhere(make_fixtures: ModuleType, tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    picked = ["en/goodbye_1.wav", "ru/balance_1.wav", "ko/operator_1.wav"]
    args = [sys.executable, str(SCRIPT), "--out", str(tmp_path)] + [a for f in picked for a in ("--only", f)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.wav")) == sorted(picked)
    first = {f: (tmp_path / f).read_bytes() for f in picked}
    # espeak-ng itself is deterministic: a second run gives the same bytes, whatever its version
    subprocess.run(args, capture_output=True, timeout=60, check=True)
    assert {f: (tmp_path / f).read_bytes() for f in picked} == first
    if make_fixtures.espeak_version() == load_manifest().espeak_ng_version:
        for f in picked:
            assert first[f] == (PROJECT_ROOT / "audio_fixtures" / f).read_bytes(), f


def test_check_mode_reports_a_changed_file(tmp_path: Path) -> None:
    manifest_dir = tmp_path / "fx"
    (manifest_dir / "en").mkdir(parents=True)
    (manifest_dir / "manifest.yaml").write_text(
        "fixtures:\n"
        "  - {file: en/s.wav, lang: en, transcript: '', intent: none, source: t, recipe: {silence_ms: 500}}\n"
    )
    run = [sys.executable, str(SCRIPT), "--manifest", str(manifest_dir / "manifest.yaml")]
    subprocess.run(run, capture_output=True, timeout=60, check=True)
    ok = subprocess.run([*run, "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "ok   en/s.wav" in ok.stdout
    wav = manifest_dir / "en" / "s.wav"
    wav.write_bytes(wav.read_bytes()[:-2] + b"\x01\x00")
    bad = subprocess.run([*run, "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "DIFF en/s.wav" in bad.stdout and "1 file(s) differ" in bad.stderr


def test_noise_is_seeded_by_file_name(make_fixtures: ModuleType) -> None:
    quiet = silence(1000)
    a = make_fixtures.add_noise(quiet, -50.0, "en/x.wav")
    assert a == make_fixtures.add_noise(quiet, -50.0, "en/x.wav")
    assert a != make_fixtures.add_noise(quiet, -50.0, "en/y.wav")
    assert 80 < rms(a) < 125  # -50 dBFS RMS = 103.6 sample units


def test_trim_and_layout(make_fixtures: ModuleType) -> None:
    speech = read_wav(PROJECT_ROOT / "audio_fixtures" / "en" / "real_goodbye_1.wav", target_rate=None)
    core = make_fixtures.trim(speech)
    assert 0.3 < duration_s(core) < duration_s(speech)
    assert make_fixtures.trim(silence(200)) == b""
