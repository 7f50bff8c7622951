"""Telephone audio as this bridge carries it: 8 kHz, 16-bit signed little-endian, mono (slin).

Asterisk's AudioSocket, the ASR engines and the prompt cache all speak this one format, so
every conversion happens here, at the edge, once.
"""

from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import numpy as np
import soxr

from ivr.errors import AudioError

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2  # bytes, signed 16-bit little-endian
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH  # 320: one AudioSocket audio frame
# What a WAV file may claim, checked against its header before any sample is read: the rate is
# trusted to size the resampled audio (a file claiming 1 Hz would become hours of it)
MIN_WAV_RATE = 8000
MAX_WAV_RATE = 48000
DEFAULT_MAX_WAV_S = 600.0  # asr.max_audio_s: a caller's turn is seconds; a whole call minutes


def duration_s(pcm: bytes) -> float:
    """Length in seconds of 8 kHz slin audio."""
    return len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)


def frames(pcm: bytes, *, pad: bool = True) -> list[bytes]:
    """Split slin audio into 20 ms frames; the last one is padded with silence if `pad`."""
    out = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    if out and len(out[-1]) < FRAME_BYTES:
        if pad:
            out[-1] = out[-1] + b"\x00" * (FRAME_BYTES - len(out[-1]))
        else:
            out.pop()
    return out


def silence(ms: int) -> bytes:
    """`ms` milliseconds of digital silence."""
    return b"\x00" * (SAMPLE_RATE * SAMPLE_WIDTH * ms // 1000)


def resample(samples: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample int16 mono samples with soxr (high quality, anti-aliased)."""
    if rate_in == rate_out:
        return samples.astype(np.int16, copy=False)
    out = soxr.resample(samples.astype(np.float32) / 32768.0, rate_in, rate_out, quality="HQ")
    return np.clip(out * 32768.0, -32768, 32767).astype(np.int16)


def to_slin(samples: np.ndarray, rate: int) -> bytes:
    """int16 (or float in [-1, 1]) mono samples at `rate` -> 8 kHz slin bytes."""
    if samples.dtype.kind == "f":
        samples = np.clip(samples * 32768.0, -32768, 32767).astype(np.int16)
    return resample(samples, rate).astype("<i2").tobytes()


def read_wav(source: str | Path | bytes, *, target_rate: int | None = SAMPLE_RATE,
             max_s: float | None = DEFAULT_MAX_WAV_S) -> bytes:
    """Read a PCM WAV file (8-48 kHz, mono or stereo, 8/16/32-bit) and return slin at `target_rate`.

    With `target_rate=None` the file must already be 8 kHz 16-bit mono, else AudioError
    says so: use that where a wrong rate is a tester's mistake rather than something to fix up.
    A rate outside 8-48 kHz or audio longer than `max_s` (None: no limit) is refused from the
    header, before any sample is read; so are directories and unreadable paths (AudioError).
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        handle = wave.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), "rb")
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file", fix="check the path") from None
    except IsADirectoryError:
        raise AudioError(f"{name}: is a directory, not a WAV file",
                         fix=f"pass the files in it ({name}/*.wav)") from None
    except PermissionError:
        raise AudioError(f"{name}: permission denied", fix="make the file readable for this user") from None
    except OSError as exc:
        raise AudioError(f"{name}: cannot read ({exc.strerror or exc})", fix="check the path") from None
    except (wave.Error, EOFError) as exc:
        raise AudioError(
            f"{name}: not a readable PCM WAV file ({exc})",
            fix="convert it, e.g. `sox IN -r 8000 -c 1 -b 16 OUT.wav`",
        ) from None
    with handle:
        rate, width, channels = handle.getframerate(), handle.getsampwidth(), handle.getnchannels()
        _check_header(name, rate, width, channels, _frames_in(source, handle), max_s)
        raw = handle.readframes(handle.getnframes())
    if width not in (1, 2, 4):
        raise AudioError(f"{name}: {8 * width}-bit samples are not supported", fix="use 16-bit PCM")
    if len(raw) % (width * channels):
        raise AudioError(f"{name}: truncated audio data", fix="re-export the file")
    if target_rate is None:
        if (rate, width, channels) != (SAMPLE_RATE, SAMPLE_WIDTH, 1):
            raise AudioError(
                f"{name}: expected 8000 Hz 16-bit mono, got {rate} Hz {8 * width}-bit {channels} channel(s)",
                fix="convert with `sox IN -r 8000 -c 1 -b 16 OUT.wav`",
            )
        return raw
    dtypes: dict[int, np.dtype] = {1: np.dtype(np.uint8), 2: np.dtype("<i2"), 4: np.dtype("<i4")}
    dtype = dtypes[width]
    samples = np.frombuffer(raw, dtype=dtype)
    if width == 1:
        samples = (samples.astype(np.int16) - 128) << 8
    elif width == 4:
        samples = (samples >> 16).astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample(samples.astype(np.int16), rate, target_rate).astype("<i2").tobytes()


def _frames_in(source: str | Path | bytes, handle: wave.Wave_read) -> int:
    """Frames the file really holds: its header's count, but no more than its size allows (a header
    may claim anything)."""
    frame = max(1, handle.getsampwidth() * handle.getnchannels())
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    return min(handle.getnframes(), size // frame)


def _check_header(name: str, rate: int, width: int, channels: int, nframes: int, max_s: float | None) -> None:
    if not MIN_WAV_RATE <= rate <= MAX_WAV_RATE:
        raise AudioError(
            f"{name}: sample rate {rate} Hz is outside {MIN_WAV_RATE}-{MAX_WAV_RATE} Hz (a broken or hostile header)",
            fix="convert it, e.g. `sox IN -r 8000 -c 1 -b 16 OUT.wav`",
        )
    if not 1 <= channels <= 8:
        raise AudioError(f"{name}: {channels} channels", fix="use a mono (or stereo) WAV file")
    if max_s is not None and nframes / rate > max_s:
        raise AudioError(
            f"{name}: {nframes / rate:.0f} s of audio is longer than the {max_s:.0f} s allowed",
            fix="cut it into shorter files (e.g. `sox IN OUT.wav trim 0 60 : newfile : restart`), "
                "or raise asr.max_audio_s",
        )


def write_wav(path: str | Path, pcm: bytes, rate: int = SAMPLE_RATE) -> None:
    """Write slin bytes as a 16-bit mono WAV."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(rate)
        out.writeframes(pcm)


def rms(pcm: bytes) -> float:
    """Root-mean-square level of slin audio, in sample units (0..32768)."""
    if not pcm:
        return 0.0
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    # a dot product, not np.mean(samples * samples): 1.3 against 4.7 µs for a 20 ms frame, and the event loop
    # takes every frame of every call through here
    return math.sqrt(samples.dot(samples) / len(samples))
