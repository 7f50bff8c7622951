"""The local sound device (microphone + speaker) through sounddevice/PortAudio, for `ivr talk`.

The pipeline speaks 8 kHz slin in 20 ms frames whatever the line; this module adapts a sound
card to that: it opens an input and an output stream (at 8 kHz if the device takes it, else at
the device's own rate with soxr resampling), delivers the microphone as 320-byte frames on an
asyncio queue, and plays slin bytes until they are done or `stop_playback()` cuts them (barge-in).

PortAudio calls our callbacks on its own thread. They only move bytes: the input callback hands
a copy of the block to the event loop (`call_soon_threadsafe`), the output callback reads from a
locked buffer. Resampling and framing run on the loop thread, in the pure helpers below.

Use headphones: with a laptop speaker the microphone hears the prompts and barges in on them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import soxr

from ivr.audio.pcm import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, SAMPLE_WIDTH, resample
from ivr.errors import AudioError
from ivr.frames import AudioIn, HangupIn, LineEvent

DEFAULT_MAX_QUEUED_FRAMES = 250  # 5 s of microphone audio (model loads stall the reader); then the oldest go
DEFAULT_LATENCY = "low"
NO_DEVICE_MESSAGE = (
    "no sound device found; `ivr talk` needs a microphone and speaker — try `ivr demo` or `ivr chat`"
)
NO_DEVICE_FIX = "connect a headset (check `python3 -m sounddevice` lists input and output devices)"


@dataclass(frozen=True)
class DeviceParams:
    """Which devices to open and how."""

    input_device: int | str | None = None  # index or name substring; None: PortAudio's default
    output_device: int | str | None = None
    sample_rate: int | None = None  # None: 8000 if the device takes it, else the device's default rate
    max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES
    latency: str | float = DEFAULT_LATENCY  # PortAudio latency hint: "low", "high" or seconds


# ---- pure helpers (no I/O) ------------------------------------------------------------------------
class FrameChunker:
    """Cut a byte stream into exact 20 ms frames (320 bytes), keeping the remainder for next time."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Append `data`; return every whole frame now available, oldest first."""
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self.frame_bytes
        out = [bytes(self._pending[i : i + self.frame_bytes]) for i in range(0, whole, self.frame_bytes)]
        del self._pending[:whole]
        return out


class StreamResampler:
    """Streaming int16 mono resampler (soxr keeps filter state across blocks: no clicks at edges)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self._stream = None if rate_in == rate_out else soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16")

    def convert(self, data: bytes, *, last: bool = False) -> bytes:
        """Resample one block of slin bytes (at `rate_in`) to `rate_out`."""
        if self._stream is None:
            return data
        samples = np.frombuffer(data, dtype="<i2")
        return self._stream.resample_chunk(samples, last=last).astype("<i2").tobytes()


class PlaybackBuffer:
    """Thread-safe FIFO of output bytes; the audio thread reads it, padding with silence."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._data += data

    def read(self, size: int) -> tuple[bytes, bool]:
        """Up to `size` bytes padded with silence, and whether the buffer is now empty."""
        with self._lock:
            chunk = bytes(self._data[:size])
            del self._data[:size]
            empty = not self._data
        return chunk + b"\x00" * (size - len(chunk)), empty

    def clear(self) -> int:
        """Drop everything queued; return how many bytes were dropped."""
        with self._lock:
            dropped = len(self._data)
            self._data.clear()
        return dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


# ---- PortAudio glue -------------------------------------------------------------------------------
def _sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio library into a clear AudioError."""
    try:
        import sounddevice
    except OSError as exc:  # raised at import when libportaudio is missing
        raise AudioError(
            f"{NO_DEVICE_MESSAGE} (PortAudio: {exc})", fix="install PortAudio: apt-get install libportaudio2"
        ) from None
    return sounddevice


def list_devices() -> str:
    """PortAudio's device list as `python3 -m sounddevice` prints it ("" with no devices)."""
    return str(_sounddevice().query_devices())


def _pick_rate(sd: ModuleType, device: Any, kind: str, wanted: int | None) -> int:
    """8 kHz if the device accepts it (PulseAudio and most USB headsets do), else its default rate."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device, samplerate=wanted or SAMPLE_RATE, channels=1, dtype="int16")
        return wanted or SAMPLE_RATE
    except (sd.PortAudioError, ValueError):  # the rate is not supported
        pass
    if wanted:
        raise AudioError(
            f"the {kind} device does not support {wanted} Hz mono 16-bit",
            fix="leave --rate unset to use the device's own rate",
        )
    return int(sd.query_devices(device, kind)["default_samplerate"])


class SoundDevice:
    """A full-duplex local audio line: microphone frames in (`frames()`), speaker out (`play`).

    Open with `async with SoundDevice(params) as dev:` or `dev.open()` / `dev.close()`.
    `frames()`, `play()` and `stop_playback()` match what `ivr.call.run_local_call` takes.
    """

    def __init__(self, params: DeviceParams | None = None) -> None:
        self.params = params or DeviceParams()
        self.input_rate = self.output_rate = SAMPLE_RATE
        self.dropped_frames = 0  # microphone frames lost because the consumer lagged
        self.status_flags = 0  # PortAudio over/underflows seen (count)
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chunker = FrameChunker()
        self._in_resampler: StreamResampler | None = None
        self._out = PlaybackBuffer()
        self._idle: asyncio.Event | None = None
        self._stopped = False
        self._streams: list[Any] = []
        self.input_name = self.output_name = ""

    # -- life cycle --
    def open(self) -> SoundDevice:
        """Open and start both streams; AudioError if there is no usable device. Call from the loop."""
        sd = _sounddevice()
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        p = self.params
        try:
            in_info = sd.query_devices(p.input_device, "input")
            out_info = sd.query_devices(p.output_device, "output")
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioError(f"{NO_DEVICE_MESSAGE} (PortAudio: {exc})", fix=NO_DEVICE_FIX) from None
        self.input_name, self.output_name = in_info["name"], out_info["name"]
        try:
            self.input_rate = _pick_rate(sd, p.input_device, "input", p.sample_rate)
            self.output_rate = _pick_rate(sd, p.output_device, "output", p.sample_rate)
            self._in_resampler = StreamResampler(self.input_rate, SAMPLE_RATE)
            inp = sd.RawInputStream(
                samplerate=self.input_rate,
                blocksize=self.input_rate * FRAME_MS // 1000,
                device=p.input_device,
                channels=1,
                dtype="int16",
                latency=p.latency,
                callback=self._input_callback,
            )
            out = sd.RawOutputStream(
                samplerate=self.output_rate,
                blocksize=self.output_rate * FRAME_MS // 1000,
                device=p.output_device,
                channels=1,
                dtype="int16",
                latency=p.latency,
                callback=self._output_callback,
            )
            self._streams = [inp, out]
            for stream in self._streams:
                stream.start()
        except sd.PortAudioError as exc:
            self.close()
            raise AudioError(
                f"cannot open the sound device ({in_info['name']} / {out_info['name']}): {exc}",
                fix="pick another device with --input/--output (see `ivr talk --list-devices`)",
            ) from None
        return self

    def close(self) -> None:
        """Stop and close the streams; `frames()` ends."""
        for stream in self._streams:
            try:
                stream.abort()
                stream.close()
            except Exception:  # closing a half-opened stream must not mask the original error
                pass
        self._streams = []
        self.stop_playback()
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def __aenter__(self) -> SoundDevice:
        return self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- PortAudio thread --
    def _input_callback(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        if status:
            self.status_flags += 1
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_input, bytes(indata))

    def _output_callback(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        if status:
            self.status_flags += 1
        chunk, empty = self._out.read(len(outdata))
        outdata[:] = chunk
        if empty and self._loop is not None and self._idle is not None and not self._idle.is_set():
            self._loop.call_soon_threadsafe(self._on_drained)

    # -- event loop --
    def _on_input(self, block: bytes) -> None:
        assert self._queue is not None and self._in_resampler is not None
        for frame in self._chunker.feed(self._in_resampler.convert(block)):
            if self._queue.qsize() >= self.params.max_queued_frames:
                self._queue.get_nowait()  # keep the newest audio: drop the oldest frame
                self.dropped_frames += 1
            self._queue.put_nowait(frame)

    def _on_drained(self) -> None:
        # re-checked on the loop: a play() may have queued more since the audio thread looked
        if self._idle is not None and not len(self._out):
            self._idle.set()

    async def frames(self) -> AsyncIterator[bytes]:
        """Microphone audio as 20 ms frames of 8 kHz slin (320 bytes), until `close()`."""
        if self._queue is None:
            raise AudioError("the sound device is not open", fix="call open() or use `async with`")
        while (frame := await self._queue.get()) is not None:
            yield frame

    async def events(self) -> AsyncIterator[LineEvent]:
        """The microphone as `ivr.frames` line events: AudioIn frames, then HangupIn at close."""
        async for frame in self.frames():
            yield AudioIn(frame)
        yield HangupIn()

    async def play(self, pcm: bytes) -> bool:
        """Play 8 kHz slin; return when it has been handed to the device, False if stopped first."""
        if self._idle is None:
            raise AudioError("the sound device is not open", fix="call open() or use `async with`")
        if len(pcm) % SAMPLE_WIDTH:
            pcm = pcm[:-1]
        if self.output_rate != SAMPLE_RATE:
            samples = resample(np.frombuffer(pcm, dtype="<i2"), SAMPLE_RATE, self.output_rate)
            pcm = samples.astype("<i2").tobytes()
        self._stopped = False
        self._idle.clear()
        self._out.write(pcm)
        await self._idle.wait()
        return not self._stopped

    def stop_playback(self) -> None:
        """Cut what is playing now (barge-in): the next output block is silence."""
        if self._out.clear() or (self._idle is not None and not self._idle.is_set()):
            self._stopped = True
        if self._idle is not None:
            self._idle.set()
