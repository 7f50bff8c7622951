"""Hostile and awkward audio input is refused with a clear error before anything large is allocated;
long audio decodes in windows; paths that are not files and busy ports give one-line errors.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from ivr.audio.pcm import read_wav, silence, write_wav
from ivr.errors import AudioError

ROOT = Path(__file__).resolve().parents[1]
SOUNDS = Path("/usr/share/asterisk/sounds/en")


def lying_wav(rate: int, data_bytes: int, claimed_frames: int | None = None) -> bytes:
    """A 16-bit mono WAV whose header claims `rate` (and `claimed_frames`, default: the truth)."""
    frames = data_bytes // 2 if claimed_frames is None else claimed_frames
    header = b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", 2 * frames)
    return header + b"\x01\x00" * (data_bytes // 2)


def run_ivr(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "IVR_DATA_DIR": str(cwd / "data")})


@pytest.mark.parametrize("rate", [1, 100, 7999, 48001, 1_000_000])
def test_a_header_rate_outside_8_to_48_khz_is_refused_before_reading(rate: int) -> None:
    data = lying_wav(rate, 100_000)  # at 1 Hz: 50 000 s, which became 1.3 GB and a MemoryError
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=rf"sample rate {rate} Hz is outside 8000-48000 Hz"):
            read_wav(data)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # the header only: not one sample was read or resampled


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_rates_in_range_are_read(rate: int) -> None:
    assert len(read_wav(lying_wav(rate, 2 * rate))) == 16000  # one second at 8 kHz slin


def test_audio_longer_than_the_maximum_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_wav(path, silence(3000))
    with pytest.raises(AudioError, match=r"long\.wav: 3 s of audio is longer than the 2 s allowed.*asr\.max_audio_s"):
        read_wav(path, max_s=2)
    assert len(read_wav(path, max_s=3)) == 48000
    # a header claiming hours over a few bytes of data is judged by the data there is
    assert len(read_wav(lying_wav(8000, 1600, claimed_frames=8000 * 3600), max_s=2)) == 1600


def test_paths_that_are_not_wav_files_give_clean_errors(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(AudioError, match=r"is a directory, not a WAV file"):
        read_wav(tmp_path)
    with pytest.raises(AudioError, match=r"cannot read \(Not a directory\)"):
        read_wav(tmp_path / "plain.txt" / "x.wav")
    with pytest.raises(AudioError, match=r"not a readable PCM WAV file"):
        read_wav(tmp_path / "plain.txt")


def test_ivr_transcribe_and_replay_refuse_hostile_files_in_one_line(tmp_path: Path) -> None:
    hostile = tmp_path / "one-hertz.wav"
    hostile.write_bytes(lying_wav(1, 8000))
    done = run_ivr("transcribe", "--engine", "vosk", "--lang", "ko", "--resample", str(tmp_path), str(hostile),
                   cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"ivr transcribe: {tmp_path}: is a directory, not a WAV file" in done.stderr
    assert f"{hostile}: sample rate 1 Hz is outside 8000-48000 Hz" in done.stderr

    done = run_ivr("replay", "--lang", "ko", "--json", str(hostile), cwd=tmp_path)
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    assert "sample rate 1 Hz is outside 8000-48000 Hz" in done.stdout


def test_ivr_serve_on_a_busy_port_says_which_setting_to_change(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_ivr("serve", "--agi-port", str(port), "--audiosocket-port", "0", "--health-port", "0",
                       cwd=tmp_path)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "ivr serve" in line]
    assert lines == [f"ivr serve: error: FastAGI cannot listen on 127.0.0.1:{port}: the port is in use (another "
                     f"`ivr serve`, or another program) (fix: stop it (`ss -ltnp 'sport = :{port}'` shows who), "
                     f"or set server.agi_port (--agi-port))"], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_whisper_decodes_a_minute_of_speech_in_windows() -> None:
    from ivr.asr.whisper import WhisperEngine, WhisperParams
    from ivr.asr.whisper_models import tiny_en_path

    if tiny_en_path() is None or not SOUNDS.is_dir():
        pytest.skip("needs ivr[whisper] and asterisk-core-sounds-en-wav: run ./install.sh")
    first, last = read_wav(SOUNDS / "hello-world.wav"), read_wav(SOUNDS / "all-circuits-busy-now.wav")
    middle = b"".join(read_wav(SOUNDS / f"{name}.wav") + silence(500) for name in
                      ("vm-login", "privacy-thankyou", "to-extension", "vm-nomore", "dir-nomore", "conf-muted") * 4)
    pad = silence(max(0, 56_000 - round(len(first + middle) / 16)))  # the last prompt starts ~57 s in
    pcm = first + silence(500) + middle + pad + last  # ~60 s: Whisper failed from ~55 s before
    assert 55 < len(pcm) / 16000 < 75
    text, confidence = WhisperEngine(params=WhisperParams()).transcribe(pcm)
    words = text.lower()
    assert "hello" in words and "busy" in words, text  # the first window and the last were both heard
    assert confidence > 0
    with pytest.raises(AudioError, match=r"more than Whisper decodes at once \(30 s\)"):
        WhisperEngine(params=WhisperParams(max_audio_s=30)).transcribe(pcm)
