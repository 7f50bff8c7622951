#!/usr/bin/env python3
"""Regenerate the caller-audio fixtures in audio_fixtures/ from the recipes in its manifest.yaml.

Each fixture's `recipe` says how to make it:
  {tts: VOICE, rate, pitch}     espeak-ng speech (`espeak-ng -v VOICE -s RATE -p PITCH -w ...`)
  {prompts: [...], sounds: V}   real recordings from the Debian asterisk-core-sounds-* packages
  {silence_ms: N}               the caller says nothing
then everything becomes 8 kHz 16-bit mono with `lead_ms`/`trail_ms` of silence around the speech and,
if `noise_dbfs` is set, white noise from a generator seeded by the file name. Same tools, same bytes:
espeak-ng 1.51 and soxr are deterministic, so a re-run reproduces every file exactly
(`--check` verifies that without touching audio_fixtures/).

Usage:
  python3 scripts/make_fixtures.py                 # (re)make every fixture that has a recipe
  python3 scripts/make_fixtures.py --only 'en/*'   # only matching files
  python3 scripts/make_fixtures.py --out /tmp/fx   # write elsewhere
  python3 scripts/make_fixtures.py --check         # regenerate in memory, compare with the files
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.audio import pcm  # noqa: E402
from ivr.errors import AudioError, IvrError  # noqa: E402
from ivr.testing.fixtures import Fixture, PromptsRecipe, SilenceRecipe, TtsRecipe, load_manifest  # noqa: E402

SOUNDS_ROOT = Path("/usr/share/asterisk/sounds")
TRIM_THRESHOLD = 200  # sample magnitude under which a prompt's leading/trailing samples count as silence
ESPEAK = "espeak-ng"


def espeak_version() -> str:
    """The installed espeak-ng version ("1.51"), or "" if it is missing."""
    exe = shutil.which(ESPEAK)
    if not exe:
        return ""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return out.split(":", 1)[1].split()[0] if ":" in out else ""


def synthesize(text: str, voice: str, rate: int, pitch: int) -> bytes:
    """espeak-ng speech as 8 kHz slin."""
    exe = shutil.which(ESPEAK)
    if not exe:
        raise AudioError("espeak-ng is not installed", fix="apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tts.wav"
        proc = subprocess.run(
            [exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(out), text],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise AudioError(
                f"espeak-ng failed for voice {voice!r}: {proc.stderr.strip()}",
                fix="check the voice name with `espeak-ng --voices`",
            )
        return pcm.read_wav(out)


def trim(audio: bytes, threshold: int = TRIM_THRESHOLD) -> bytes:
    """Drop leading and trailing near-silence (prompts carry some of their own)."""
    samples = np.frombuffer(audio, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return b""
    return samples[loud[0] : loud[-1] + 1].tobytes()


def add_noise(audio: bytes, dbfs: float, seed_key: str) -> bytes:
    """White noise at `dbfs` RMS from a generator seeded by `seed_key` (reproducible)."""
    rng = np.random.default_rng(zlib.crc32(seed_key.encode()))
    samples = np.frombuffer(audio, dtype="<i2").astype(np.float64)
    noise = rng.normal(0.0, 32768.0 * 10 ** (dbfs / 20), samples.size)
    return np.clip(np.round(samples + noise), -32768, 32767).astype("<i2").tobytes()


def make(fixture: Fixture, sounds_root: Path = SOUNDS_ROOT) -> bytes:
    """The 8 kHz slin audio of one fixture, made from its recipe."""
    recipe = fixture.recipe
    if isinstance(recipe, SilenceRecipe):
        audio = pcm.silence(recipe.silence_ms)
    elif isinstance(recipe, TtsRecipe):
        speech = trim(synthesize(recipe.text or fixture.transcript, recipe.tts, recipe.rate, recipe.pitch), 1)
        audio = pcm.silence(recipe.lead_ms) + speech + pcm.silence(recipe.trail_ms)
    elif isinstance(recipe, PromptsRecipe):
        parts = []
        for name in recipe.prompts:
            wav = sounds_root / recipe.sounds / f"{name}.wav"
            if not wav.exists():
                raise AudioError(
                    f"{fixture.file}: prompt {wav} is not installed",
                    fix="apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-ru-wav",
                )
            parts.append(trim(pcm.read_wav(wav)))
        audio = pcm.silence(recipe.lead_ms) + pcm.silence(recipe.gap_ms).join(parts) + pcm.silence(recipe.trail_ms)
    else:
        raise AudioError(f"{fixture.file}: no recipe", fix="add a `recipe:` to its manifest entry")
    if recipe.noise_dbfs is not None:
        audio = add_noise(audio, recipe.noise_dbfs, fixture.file)
    return audio


def wav_bytes(audio: bytes) -> bytes:
    """The exact bytes `pcm.write_wav` puts in a file, for comparisons."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.wav"
        pcm.write_wav(out, audio)
        return out.read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_manifest = Path(__file__).resolve().parent.parent / "audio_fixtures" / "manifest.yaml"
    parser.add_argument("--manifest", type=Path, default=default_manifest)
    parser.add_argument("--out", type=Path, help="output folder (default: the manifest's folder)")
    parser.add_argument("--only", action="append", help="glob over fixture files, e.g. 'ko/*' (repeatable)")
    parser.add_argument("--check", action="store_true", help="compare regenerated audio with the files")
    parser.add_argument("--sounds", type=Path, default=SOUNDS_ROOT, help="Asterisk sounds folder")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.manifest, check_files=False)
        out_root = args.out or manifest.root
        todo = [
            f
            for f in manifest.fixtures
            if f.recipe is not None and (not args.only or any(fnmatch.fnmatch(f.file, g) for g in args.only))
        ]
        print(f"espeak-ng {espeak_version() or '(missing)'}; {len(todo)} fixture(s)", file=sys.stderr)
        differ = 0
        for fixture in todo:
            audio = make(fixture, args.sounds)
            target = out_root / fixture.file
            if args.check:
                same = target.exists() and target.read_bytes() == wav_bytes(audio)
                differ += not same
                print(f"{'ok  ' if same else 'DIFF'} {fixture.file}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            pcm.write_wav(target, audio)
            print(f"{fixture.file}  {pcm.duration_s(audio):.2f} s")
    except IvrError as exc:
        print(f"make_fixtures: error: {exc}", file=sys.stderr)
        return 1
    if args.check and differ:
        print(f"{differ} file(s) differ from their recipe", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
