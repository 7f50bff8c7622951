"""Non-speech sounds a phone line carries, generated with sox: noise, DTMF, call-progress tones, music.

These are what a caller's side of the line sends while the assistant talks or waits, and none of
it may count as speech (a false barge-in cuts the prompt; a false start makes a turn of nothing).
Each signal is preceded by a quiet line (-66 dBFS hiss) so an adaptive noise floor has settled on
silence when the sound begins, as it would be on a real call.

    python bench/line_signals.py OUT_DIR     # writes the WAVs (8 kHz 16-bit mono) for listening
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ivr.audio.pcm import SAMPLE_RATE, read_wav

SOX_FORMAT = ["-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer"]
QUIET_LEAD_S = 1.5
# US call-progress tones (ITU-T E.180 / Bellcore): ringback 440+480 Hz 2 s on 4 s off, busy
# 480+620 Hz 0.5 s on 0.5 s off; DTMF row/column pairs, 100 ms keys with 100 ms gaps and longer holds
DTMF_PAIRS = {"1": (697, 1209), "5": (770, 1336), "9": (852, 1477), "0": (941, 1336), "#": (941, 1477)}
MELODY = ["C4", "E4", "G4", "C5", "A3", "F4", "A4", "C5", "G3", "B3", "D4", "G4", "E4", "C4"]

# name -> sox synth arguments after `-n FORMAT OUT synth` (or a callable building the file)
SYNTH: dict[str, list[str]] = {
    "pink_noise_-20dBFS": ["6", "pinknoise", "vol", "0.1"],
    "pink_noise_-10dBFS": ["6", "pinknoise", "vol", "0.3"],
    "white_noise_-25dBFS": ["6", "whitenoise", "vol", "0.056"],
    "brown_noise_-12dBFS": ["6", "brownnoise", "vol", "0.5"],
    "ringback": ["2", "sine", "440", "sine", "480", "remix", "-", "vol", "0.3", "pad", "0", "4", "repeat", "1"],
    "busy_tone": ["0.5", "sine", "480", "sine", "620", "remix", "-", "vol", "0.3", "pad", "0", "0.5", "repeat", "7"],
}


def require_sox() -> str:
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError("sox is not installed: apt-get install sox")
    return sox


def _sox(*args: str) -> None:
    # -R: repeatable (seeded) noise, so runs and before/after comparisons hear the same sounds
    subprocess.run([require_sox(), "-R", *args], check=True, capture_output=True)


def _dtmf(out: Path, tmp: Path) -> None:
    parts = []
    for i, (low, high) in enumerate(DTMF_PAIRS.values()):
        hold = "0.1" if i % 2 == 0 else "0.4"  # short presses and held keys
        part = tmp / f"dtmf_{i}.wav"
        _sox("-n", *SOX_FORMAT, str(part), "synth", hold, "sine", str(low), "sine", str(high), "remix", "-",
             "vol", "0.4", "pad", "0", "0.1")
        parts.append(str(part))
    _sox(*parts, str(out), "repeat", "3")


def _music(out: Path, tmp: Path) -> None:
    """Music on hold: a plucked two-voice melody with reverb (instrumental, as most hold music is)."""
    notes = []
    for i, note in enumerate(MELODY):
        part = tmp / f"note_{i:02d}.wav"
        _sox("-n", *SOX_FORMAT, str(part), "synth", "0.35", "pluck", note, "pluck", note, "remix", "-", "vol", "0.5")
        notes.append(str(part))
    _sox(*notes, str(out), "repeat", "2", "reverb", "30")


def line_signals(directory: Path | None = None) -> dict[str, bytes]:
    """name -> 8 kHz slin: a quiet lead, then the sound. Written under `directory` when given."""
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = {}
        for name, synth in SYNTH.items():
            files[name] = tmp / f"{name}.wav"
            _sox("-n", *SOX_FORMAT, str(files[name]), "synth", *synth)
        files["dtmf"] = tmp / "dtmf.wav"
        _dtmf(files["dtmf"], tmp)
        files["music_on_hold"] = tmp / "music_on_hold.wav"
        _music(files["music_on_hold"], tmp)
        for name, path in files.items():
            out[name] = quiet_line(QUIET_LEAD_S) + read_wav(path)
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, directory / path.name)
    return out


def quiet_line(seconds: float, seed: int = 1) -> bytes:
    """A quiet line: white hiss at about -66 dBFS (a digital line is never exact zeros)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 16, int(seconds * SAMPLE_RATE))).astype("<i2").tobytes()


def without_lead(signal: bytes) -> bytes:
    """The sound of a `line_signals()` entry without its quiet lead: what to mix under speech (mixed with
    its lead, a noise would only begin QUIET_LEAD_S into the speech)."""
    return signal[int(QUIET_LEAD_S * SAMPLE_RATE) * 2 :]


def mix_at_snr(speech: bytes, noise: bytes, snr_db: float) -> bytes:
    """`speech` with `noise` (looped or cut to its length) added at `snr_db` (RMS over the voiced part).
    `noise` must be the sound from its first sample (`without_lead`)."""
    s = np.frombuffer(speech, dtype="<i2").astype(np.float64)
    n = np.frombuffer(noise, dtype="<i2").astype(np.float64)
    n = np.resize(n, s.size)
    voiced = s[np.abs(s) > 200]
    speech_rms = np.sqrt(np.mean(voiced**2)) if voiced.size else 1.0
    noise_rms = np.sqrt(np.mean(n**2)) or 1.0
    mixed = s + n * (speech_rms / noise_rms) / (10 ** (snr_db / 20))
    return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "line_signals")
    for name, pcm in line_signals(target).items():
        print(f"{target / name}.wav  {len(pcm) / 2 / SAMPLE_RATE:.1f} s (with {QUIET_LEAD_S} s quiet lead)")
