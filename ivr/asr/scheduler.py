"""One ASR pool per process: earliest-deadline-first across calls, batched finals, a bounded queue.

Every recognizer call of every call (feed a chunk, start a turn, decode the final) is a job with
a deadline; worker threads always run the job whose deadline is nearest. A final is due
`FINAL_BUDGET_S` after the end of speech was decided, a chunk feeding partial results
`PARTIAL_BUDGET_S` after it was queued, so finals overtake partial work, and a chunk that has waited
long enough overtakes new finals in turn (EDF never starves anything). A call queues one job at a
time (its ASR worker awaits each), plus at most one early final, so the queue holds at most two
jobs per call.

Early finals: an engine that decodes only at the end (Whisper) gets the turn's final queued when
the caller has been quiet `ASR_TRAILING_SILENCE_MS` (ivr/call.py), while the endpointer still waits
out the rest of its silence. It is due when the final would be if the end of speech is decided as
expected, so it is ordered among the other finals as the real one would be, only queued earlier.
If the caller speaks again it is cancelled (or, already decoding, its result is dropped) and the
turn's final is decoded at the real end.

Batching: an engine that can decode several finals at once (`final_batch`, Whisper) gets every
final of the same engine that is queued when a worker picks one up, up to `max_batch`; when the
engine is busy (another final arrived within the last second), the worker first waits
`batch_window_s` for more to arrive, so the batch size follows the queue. An engine with several
model replicas (`parallel`, Whisper's `asr.whisper_replicas`) gets the queue shared out among its
idle replicas, one batch each, so finals decode side by side.

Bound: when more than `max_queue` jobs wait, the queue is over its bound and `overloaded` is true;
the call pipeline then does not decode new speech (see ivr/call.py: the turn becomes a no-match at
once, whose re-prompt offers the keys) instead of leaving every caller in silence.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# a final should be decoded this soon after the end of speech was decided (the compute goal, 150 ms)
FINAL_BUDGET_S = 0.15
# partial decoding (chunks while the caller talks) may wait this long: nothing waits on partials
PARTIAL_BUDGET_S = 1.0
# finals of a batching engine that arrive within this window are decoded together (tens of ms:
# short against the 800 ms of end-of-speech silence the caller has already waited)
DEFAULT_BATCH_WINDOW_S = 0.03
DEFAULT_MAX_BATCH = 1  # asr.max_batch: a batch's results all come at its end (10-caller burst p95 3.9 s vs 1.9 s)
# jobs waiting before new speech is refused: 2 cores decode ~30 Vosk finals or ~10 Whisper ones a
# second, so 64 waiting jobs are seconds of backlog already
DEFAULT_MAX_QUEUE = 64
# Worker threads: one per core. Vosk decodes in the worker thread itself (the GIL released), so every worker
# beyond the cores only time-slices the same cores, and the event loop and Silero get a smaller share of them:
# with 4 per core (8 on 2 cores) a 50-caller Vosk burst kept all 8 runnable for its whole 3 s of speech and the
# loop waited 30-40 ms of every 100 on the run queue. 2026-12-05, 2-core AMD EPYC VM, alternating: compute p95
# 17, 20 ms with 8 against 9, 6 with 2 and 11, 7 with 3 (`bench/concurrency.py --calls 50 --engine vosk`), ten
# English callers' heard p95 1554, 1475 ms with 8 against 1440, 1410 with 2 and 1531, 1479 with 3. (Before the
# second opinion's Whisper moved to its own thread, ivr/asr/second_opinion.py, a worker waited for its slot and
# 2 workers were too few: Korean Poisson traffic 963 ms against 140 with 8.) Whisper's own CPU is CTranslate2's
# threads (the worker waits for them), so one worker per core still keeps the cores busy with one job each.
DEFAULT_WORKERS = os.cpu_count() or 2
# ...at a lower CPU priority than the event loop, whose 20 ms frame pacing must not wait for a decode
WORKER_NICENESS = 5
# an engine counts as busy for batching when another final reached it this recently
BUSY_WINDOW_S = 1.0


class BatchDecoder(Protocol):
    """An engine that decodes the finals of several recognizers in one go (Whisper)."""

    def final_batch(self, recognizers: Sequence[Any], queued: float | None = None,
                    due: float | None = None) -> list[Any]: ...

    # `queued`, `due` (time.monotonic): when the batch's last final was queued and when its first is due. A decoder
    # with a faster, rougher way may take it when the queue, not the decode, would make a final late (Whisper's).

    # optional `parallel: int`: how many batches it decodes at the same time (model replicas)


@dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    func: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    batch: BatchDecoder | None = field(default=None, compare=False)  # set on batchable finals
    queued_at: float = field(default=0.0, compare=False)
    lane: object = field(default=None, compare=False)  # whose job (a call): `expedite` finds its queued jobs


@dataclass
class JobTrace:
    """One job as it went through the pool (`AsrScheduler.trace`, for `bench/concurrency.py --trace`):
    time.monotonic() stamps and the worker thread's CPU seconds."""

    kind: str  # the function run: accept, close_segment, _timed_final, final_batch[N] (N finals decoded together)
    lane: str  # whose (a call's id), "" for none
    queued: float
    deadline: float  # as it stood when the job started (expedite may have moved it)
    started: float = 0.0
    ended: float = 0.0
    cpu_s: float = 0.0


@dataclass
class SchedulerStats:
    """Counters the benchmark reads (decode time is thread CPU time, queue time is wall time)."""

    jobs: int = 0
    finals: int = 0
    batches: int = 0
    batched_finals: int = 0
    max_batch: int = 0
    rejected: int = 0  # utterances refused while over the bound
    max_queue: int = 0
    early_finals: int = 0  # finals started during the endpointer's trailing silence
    early_discarded: int = 0  # ...of which the caller resumed speaking (decoded again at the real end)


class AsrScheduler:
    """The process-wide ASR pool (`CallServices.asr`)."""

    def __init__(self, workers: int = DEFAULT_WORKERS, max_queue: int = DEFAULT_MAX_QUEUE,
                 batch_window_s: float = DEFAULT_BATCH_WINDOW_S, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.max_queue = max_queue
        self.batch_window_s = batch_window_s
        self.max_batch = max(1, max_batch)
        self.stats = SchedulerStats()
        self.trace: list[JobTrace] | None = None  # set to a list to have every job run recorded in it
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._last_final: dict[int, float] = {}  # id(batch decoder) -> when its last final was queued
        self._decoding: dict[int, int] = {}  # id(batch decoder) -> batches being gathered or decoded
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"asr-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # ---- submitting -----------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._heap)

    @property
    def overloaded(self) -> bool:
        """More jobs wait than the bound: new speech should not be decoded now."""
        return len(self._heap) > self.max_queue

    def refuse(self) -> None:
        """Count an utterance turned away because the queue was over its bound."""
        self.stats.rejected += 1

    async def run(self, func: Callable[..., T], *args: Any, deadline: float | None = None, lane: object = None) -> T:
        """Run a blocking recognizer call on the pool; `deadline` (time.monotonic) orders the queue;
        `lane` names whose job it is (a call), so that `expedite` can make it more urgent while it waits."""
        deadline = deadline if deadline is not None else partial_deadline()
        return await self._submit(func, args, deadline, None, lane)

    def expedite(self, lane: object, deadline: float) -> None:
        """The jobs of `lane` still queued are due by `deadline` at the latest. A call queues a chunk with a
        partial's second; once its caller goes quiet, that chunk stands between the caller and the answer.
        (Burst of 50 callers: such chunks, queued before the silence began, waited up to 600 ms behind
        other callers' closing segments due earlier, and the answer came 100-160 ms after its deadline.)"""
        with self._cond:
            hurried = False
            for job in self._heap:
                if lane is not None and job.lane == lane and job.deadline > deadline:
                    job.deadline = deadline
                    hurried = True
            if hurried:
                heapq.heapify(self._heap)

    async def final(self, recognizer: Any, batch: BatchDecoder | None, deadline: float) -> tuple[Any, float]:
        """(`recognizer.final()`, seconds its decode took), batched with other finals of `batch` (the
        engine) when given; the rest of the wait was the queue."""
        self.stats.finals += 1
        return await self._submit(_timed_final, (recognizer,), deadline, batch)  # type: ignore[no-any-return]

    def early_final(self, turn: Any, batch: BatchDecoder | None, deadline: float) -> asyncio.Future[tuple[Any, float]]:
        """Queue the final of a turn whose end of speech is not decided yet (see ivr/call.py); the
        future is cancelled (`discard_early`) when the caller resumes speaking. `deadline`: when the
        final would be due if the end of speech is decided as expected, so it competes with the
        finals decided by then as one of them."""
        self.stats.early_finals += 1
        return self._submit(_timed_final, (turn,), deadline, batch)

    def discard_early(self, future: asyncio.Future[Any]) -> None:
        """The caller spoke again: not queued yet, it is dropped; in progress, its result is ignored."""
        if not future.done():
            self.stats.early_discarded += 1
            future.cancel()
        elif not future.cancelled():
            self.stats.early_discarded += 1
            future.exception()  # retrieved: an engine fault of a discarded decode is nobody's error

    def _submit(self, func: Callable[..., Any], args: tuple[Any, ...], deadline: float,
                batch: BatchDecoder | None, lane: object = None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        now = time.monotonic()
        job = _Job(deadline, next(self._seq), func, args, future, loop, batch, now, lane)
        with self._cond:
            if self._closed:
                raise RuntimeError("the ASR pool is closed")
            heapq.heappush(self._heap, job)
            self.stats.jobs += 1
            self.stats.max_queue = max(self.stats.max_queue, len(self._heap))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._heap = self._heap, []
            self._cond.notify_all()
        for job in pending:
            job.loop.call_soon_threadsafe(_cancel, job.future)

    # ---- workers --------------------------------------------------------------------------------
    def _work(self) -> None:
        _lower_priority()
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = heapq.heappop(self._heap)
            if job.batch is None:
                self._run_one(job)
            else:
                self._run_batch(job)

    def _run_one(self, job: _Job) -> None:
        if job.future.cancelled():
            return
        trace = self.trace
        if trace is not None:
            record = JobTrace(getattr(job.func, "__name__", type(job.func).__name__), str(job.lane or ""),
                              job.queued_at, job.deadline, time.monotonic())
            cpu = time.thread_time()
        hand_over: Callable[[asyncio.Future[Any], Any], None]
        try:
            hand_over, outcome = _set_result, job.func(*job.args)
        except BaseException as exc:  # handed to the awaiting call, which fails open
            hand_over, outcome = _set_exception, exc
        if trace is not None:  # recorded before the caller hears back: whoever awaited the job finds it traced
            record.ended, record.cpu_s = time.monotonic(), time.thread_time() - cpu
            trace.append(record)  # list.append is atomic: the workers share the list safely
        job.loop.call_soon_threadsafe(hand_over, job.future, outcome)

    def _run_batch(self, first: _Job) -> None:
        decoder = first.batch
        assert decoder is not None
        key = id(decoder)
        busy = first.queued_at - self._last_final.get(key, -BUSY_WINDOW_S) < BUSY_WINDOW_S
        self._last_final[key] = first.queued_at
        replicas = max(1, getattr(decoder, "parallel", 1))
        with self._cond:
            self._decoding[key] = self._decoding.get(key, 0) + 1
        try:
            jobs = [first, *self._take_same(key, self.max_batch - 1, replicas)]
            if busy and len(jobs) < self.max_batch and self.batch_window_s > 0:
                time.sleep(self.batch_window_s)
                jobs += self._take_same(key, self.max_batch - len(jobs), replicas, len(jobs))
            self._decode_batch(decoder, [j for j in jobs if not j.future.cancelled()])
        finally:
            with self._cond:
                self._decoding[key] -= 1

    def _decode_batch(self, decoder: BatchDecoder, jobs: list[_Job]) -> None:
        if not jobs:
            return
        self.stats.batches += 1
        self.stats.batched_finals += len(jobs)
        self.stats.max_batch = max(self.stats.max_batch, len(jobs))
        started, began = time.perf_counter(), time.monotonic()
        try:
            results = decoder.final_batch([j.args[0] for j in jobs], queued=max(j.queued_at for j in jobs),
                                          due=min(j.deadline for j in jobs))
        except BaseException as exc:
            for job in jobs:
                job.loop.call_soon_threadsafe(_set_exception, job.future, exc)
            return
        took = time.perf_counter() - started
        trace = self.trace
        if trace is not None:  # the decode's CPU is the engine's own threads (CTranslate2): not counted here
            trace.extend(JobTrace(f"final_batch[{len(jobs)}]", str(j.lane or ""), j.queued_at, j.deadline, began,
                                  time.monotonic()) for j in jobs)
        for job, result in zip(jobs, results, strict=True):
            job.loop.call_soon_threadsafe(_set_result, job.future, (result, took))

    def _take_same(self, key: int, limit: int, replicas: int = 1, taken: int = 1) -> list[_Job]:
        """Remove and return up to `limit` queued finals of the same batch decoder (earliest first).
        A decoder with several replicas decoding at once (`parallel`) puts in this batch (which has
        `taken` already) only its share of the queue among the idle replicas: other workers hand the rest
        to them, and two finals decode side by side instead of one after the other."""
        with self._cond:
            same = sorted(j for j in self._heap if j.batch is not None and id(j.batch) == key)
            ways = 1 + max(0, replicas - self._decoding.get(key, 0))
            share = -(-(len(same) + taken) // ways) - taken
            same = same[: max(0, min(limit, share))]
            if same:
                chosen = {id(j) for j in same}
                self._heap = [j for j in self._heap if id(j) not in chosen]
                heapq.heapify(self._heap)
                self._last_final[key] = max(j.queued_at for j in same)
        return same


def _timed_final(recognizer: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = recognizer.final()
    return result, time.perf_counter() - started


def final_deadline(decided_at: float) -> float:
    """Deadline of a final whose end of speech was decided at `decided_at` (time.monotonic)."""
    return decided_at + FINAL_BUDGET_S


def partial_deadline() -> float:
    return time.monotonic() + PARTIAL_BUDGET_S


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.cancel()


def _lower_priority() -> None:
    """Linux schedules threads separately, so this nices only the calling worker thread."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: decode at normal priority
        pass
