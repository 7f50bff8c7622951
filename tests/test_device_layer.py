"""The sound-device layer below PortAudio (framing, resampling, playback buffer) and its no-device error.

The real-device round trip through a PulseAudio null sink is in tests/test_device_pulse.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.device import FrameChunker, PlaybackBuffer, StreamResampler
from ivr.audio.pcm import FRAME_BYTES, read_wav, resample
from ivr.config import PROJECT_ROOT

SPEECH = PROJECT_ROOT / "audio_fixtures" / "en" / "balance_1.wav"


def test_chunker_emits_exact_frames_and_keeps_the_rest() -> None:
    chunker = FrameChunker()
    data = bytes(range(256)) * 5  # 1280 bytes = 4 frames
    out = chunker.feed(data[:100]) + chunker.feed(data[100:700]) + chunker.feed(data[700:])
    assert [len(f) for f in out] == [FRAME_BYTES] * 4
    assert b"".join(out) == data
    assert chunker.feed(b"\x01" * 319) == [] and chunker.feed(b"\x02") == [b"\x01" * 319 + b"\x02"]


def test_playback_buffer_pads_with_silence_and_reports_empty() -> None:
    buffer = PlaybackBuffer()
    buffer.write(b"\x01\x02" * 100)
    chunk, empty = buffer.read(160)
    assert chunk == b"\x01\x02" * 80 and not empty and len(buffer) == 40
    chunk, empty = buffer.read(160)
    assert chunk == b"\x01\x02" * 20 + b"\x00" * 120 and empty
    buffer.write(b"\x05" * 50)
    assert buffer.clear() == 50 and buffer.read(4) == (b"\x00" * 4, True)


def test_playback_buffer_is_safe_across_threads() -> None:
    """A writer thread and the reader (PortAudio's role) interleave; no byte is lost or reordered."""
    buffer = PlaybackBuffer()
    payload = bytes(i % 255 + 1 for i in range(40000))  # no zero bytes: padding is recognisable
    got = bytearray()

    def writer() -> None:
        for i in range(0, len(payload), 999):
            buffer.write(payload[i : i + 999])

    thread = threading.Thread(target=writer)
    thread.start()
    for _ in range(100000):
        chunk, _ = buffer.read(320)
        got.extend(chunk.replace(b"\x00", b""))
        if len(got) >= len(payload):
            break
    thread.join(timeout=10)
    assert bytes(got) == payload


def test_stream_resampler_matches_one_shot_resampling() -> None:
    """48 kHz device blocks resampled one 20 ms block at a time = the whole signal resampled at once."""
    speech8k = np.frombuffer(read_wav(SPEECH), dtype="<i2")
    speech48k = resample(speech8k, 8000, 48000)
    stream = StreamResampler(48000, 8000)
    blocks = [speech48k[i : i + 960].tobytes() for i in range(0, len(speech48k), 960)]
    out = b"".join(stream.convert(b, last=(i == len(blocks) - 1)) for i, b in enumerate(blocks))
    streamed = np.frombuffer(out, dtype="<i2").astype(np.float64)
    reference = resample(speech48k, 48000, 8000).astype(np.float64)
    n = min(len(streamed), len(reference))
    assert abs(len(streamed) - len(reference)) <= 8
    assert np.corrcoef(streamed[:n], reference[:n])[0, 1] > 0.99
    assert StreamResampler(8000, 8000).convert(b"\x01\x02") == b"\x01\x02"


def no_device_env(tmp_path: Path) -> dict[str, str]:
    """An environment where PortAudio finds no device on a machine without a sound card.

    The only ALSA devices of such a machine are PulseAudio's; pointing libpulse at no server hides them.
    """
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path}/no-pulse", "XDG_RUNTIME_DIR": str(tmp_path)}
    probe = subprocess.run(
        [sys.executable, "-c", "import sounddevice as sd; print(len(sd.query_devices()))"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    if probe.stdout.strip() != "0":
        pytest.skip("this machine has a sound card: the no-device path cannot be shown here")
    return env


NO_DEVICE_CHILD = """
import asyncio, sys
from ivr.audio.device import SoundDevice
from ivr.errors import AudioError
async def main():
    try:
        SoundDevice().open()
    except AudioError as exc:
        print(exc)
        return 3
    return 0
sys.exit(asyncio.run(main()))
"""


def test_no_sound_device_gives_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_DEVICE_CHILD], env=no_device_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    message = proc.stdout.strip()
    assert message.startswith("no sound device found; `ivr talk` needs a microphone and speaker")
    assert "try `ivr demo` or `ivr chat`" in message
    assert "(PortAudio: Error querying device -1)" in message  # the PortAudio detail
    assert "(fix: connect a headset" in message


TALK_CHILD = """
import sys
from ivr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ivr_talk_without_device_says_so_and_fails(tmp_path: Path) -> None:
    env = no_device_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", TALK_CHILD, "talk", "--lang", "en"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "ivr talk: error: no sound device found" in proc.stderr and "ivr demo" in proc.stderr
    listing = subprocess.run(
        [sys.executable, "-c", TALK_CHILD, "talk", "--list-devices"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert listing.returncode == 1 and "no sound devices found" in listing.stdout
    bad = subprocess.run(
        [sys.executable, "-c", TALK_CHILD, "talk", "--lang", "fr"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "invalid choice: 'fr'" in bad.stderr
