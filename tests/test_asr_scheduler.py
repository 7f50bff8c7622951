"""The process-wide ASR pool: earliest deadline first, batched finals, a bounded queue, errors to the caller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ivr.asr.scheduler import AsrScheduler, final_deadline
from ivr.audio.pcm import read_wav

FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures"


class Gate:
    """Holds the single worker busy until released, so the test can fill the queue behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def hold(self) -> str:
        self.entered.set()
        self.release.wait(10)
        return "held"


async def behind_a_busy_worker(queue: Callable[[AsrScheduler, float], list[Awaitable[Any]]],
                               meanwhile: Callable[[AsrScheduler], None] = lambda pool: None) -> None:
    """Hold the pool's only worker, queue the jobs `queue` makes (given the pool and the time), call `meanwhile`,
    then let the worker go and wait for every job."""
    pool = AsrScheduler(workers=1)
    gate = Gate()
    busy = asyncio.ensure_future(pool.run(gate.hold))
    await asyncio.to_thread(gate.entered.wait, 5)
    tasks = [asyncio.ensure_future(job) for job in queue(pool, time.monotonic())]
    await asyncio.sleep(0.05)
    meanwhile(pool)
    gate.release.set()
    await asyncio.gather(busy, *tasks)
    pool.close()


def test_jobs_run_earliest_deadline_first_whatever_the_arrival_order() -> None:
    order: list[str] = []
    asyncio.run(behind_a_busy_worker(lambda pool, now: [
        pool.run(order.append, name, deadline=now + due)
        for name, due in [("partial-late", 1.0), ("final", 0.15), ("partial-old", 0.05), ("other", 0.5)]]))
    assert order == ["partial-old", "final", "other", "partial-late"]


def test_a_call_going_quiet_hurries_its_chunk_already_waiting_on_the_pool() -> None:
    """A chunk queued while the caller talked waits with a partial's second; once the caller goes quiet the
    call's answer waits behind it, so `expedite` makes it as urgent as the call's final (and no one else's)."""
    def caller_a_goes_quiet(pool: AsrScheduler) -> None:
        pool.expedite("A", final_deadline(time.monotonic()))  # call A's answer is due in 150 ms
        pool.expedite("C", time.monotonic() + 2.0)  # a later deadline never delays a job

    order: list[str] = []
    asyncio.run(behind_a_busy_worker(lambda pool, now: [
        pool.run(order.append, name, deadline=now + due, lane=lane)
        for name, due, lane in [("chunk of call A", 1.0, "A"), ("final of call B", 0.5, "B"),
                                ("chunk of call C", 0.9, "C")]], caller_a_goes_quiet))
    assert order == ["chunk of call A", "final of call B", "chunk of call C"]


def test_the_trace_records_each_job_with_its_call_wait_and_cpu() -> None:
    """`bench/concurrency.py --trace` reads this: what ran, whose, how long it waited and what it cost."""
    def spin(seconds: float) -> None:
        until = time.thread_time() + seconds
        while time.thread_time() < until:
            pass

    async def scenario() -> list:  # type: ignore[type-arg]
        pool = AsrScheduler(workers=1)
        pool.trace = []
        await pool.run(spin, 0.02, lane="call-1")
        await pool.run(len, "untraced?", deadline=None)
        pool.close()
        return pool.trace

    spun, counted = asyncio.run(scenario())
    assert (spun.kind, spun.lane, counted.kind, counted.lane) == ("spin", "call-1", "len", "")
    assert spun.cpu_s >= 0.02 and spun.queued <= spun.started <= spun.ended
    assert spun.ended - spun.started >= 0.02


class CountingDecoder:
    """A batch decoder recording the batches it was given (the real Whisper one is tested below)."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.timings: list[tuple[float | None, float | None]] = []  # (queued, due) of each batch

    def final_batch(self, recognizers: Sequence[object], queued: float | None = None,
                    due: float | None = None) -> list[str]:
        self.batches.append(len(recognizers))
        self.timings.append((queued, due))
        return [f"text of {r}" for r in recognizers]


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def final(self) -> str:  # the unbatched path
        return f"single {self.name}"

    def __str__(self) -> str:
        return self.name


def test_finals_queued_together_are_decoded_in_one_batch_and_each_gets_its_own_result() -> None:
    async def scenario() -> tuple[list[tuple[str, float]], CountingDecoder, int, float, float, float]:
        pool = AsrScheduler(workers=1, max_batch=3)
        gate, decoder = Gate(), CountingDecoder()
        busy = asyncio.ensure_future(pool.run(gate.hold))
        await asyncio.to_thread(gate.entered.wait, 5)
        due = final_deadline(time.monotonic())
        before = time.monotonic()
        finals = [asyncio.ensure_future(pool.final(Named(f"c{i}"), decoder, due + i / 1000)) for i in range(5)]
        await asyncio.sleep(0.05)
        after = time.monotonic()
        gate.release.set()
        results = await asyncio.gather(*finals)
        await busy
        pool.close()
        return results, decoder, pool.stats.max_batch, due, before, after

    results, decoder, max_batch, due, before, after = asyncio.run(scenario())
    assert [text for text, _ in results] == [f"text of c{i}" for i in range(5)]
    assert decoder.batches == [3, 2] and max_batch == 3  # the batch follows the queue, up to max_batch
    # the decoder hears when each batch's finals were queued (the last of them) and when the first is due
    assert [d for _q, d in decoder.timings] == [due, due + 3 / 1000]
    assert all(q is not None and before <= q <= after for q, _d in decoder.timings)


def test_over_the_bound_the_pool_says_so_and_an_engine_error_reaches_the_caller() -> None:
    async def scenario() -> tuple[bool, bool, str]:
        pool = AsrScheduler(workers=1, max_queue=2)
        gate = Gate()
        busy = asyncio.ensure_future(pool.run(gate.hold))
        await asyncio.to_thread(gate.entered.wait, 5)
        waiting = [asyncio.ensure_future(pool.run(time.sleep, 0)) for _ in range(2)]
        await asyncio.sleep(0.01)
        at_bound = pool.overloaded
        waiting.append(asyncio.ensure_future(pool.run(time.sleep, 0)))
        await asyncio.sleep(0.01)
        over = pool.overloaded
        gate.release.set()
        await asyncio.gather(busy, *waiting)

        def broken() -> None:
            raise RuntimeError("decoder fault")

        try:
            await pool.run(broken)
            error = ""
        except RuntimeError as exc:
            error = str(exc)
        pool.close()
        return at_bound, over, error

    at_bound, over, error = asyncio.run(scenario())
    assert (at_bound, over, error) == (False, True, "decoder fault")


@pytest.mark.slow
def test_whisper_batch_gives_each_call_its_own_transcript() -> None:
    pytest.importorskip("faster_whisper")
    from ivr.asr.whisper import WhisperEngine, whisper_available

    if not whisper_available():
        pytest.skip("no Whisper weights installed")
    engine = WhisperEngine()
    recognizers = []
    grammar = ["what is my balance", "let me talk to a real person"]
    for name, phrases in [("balance_1", None), ("operator_1", grammar), ("yes_1", None)]:
        recognizer = engine.recognizer()
        recognizer.set_grammar(phrases)
        recognizer.accept(read_wav(FIXTURES / "en" / f"{name}.wav"))
        recognizers.append(recognizer)
    results = engine.final_batch(recognizers)
    assert results[0].text.lower().startswith("how much money is left on my account")
    # snapped onto its own phrase list (a prompt group of its own)
    assert results[1].text == "let me talk to a real person"
    assert results[2].text.lower().startswith("yes")
    assert all(not r._buffer for r in recognizers)  # each is ready for its next turn


def test_a_call_over_the_bound_hears_the_no_match_reprompt_at_once_and_keys_still_work(tmp_path: Path) -> None:
    from ivr.config import Settings
    from ivr.services import CallServices
    from ivr.testing.replay import run_call
    from ivr.testing.simline import CallerTurn

    settings = Settings()
    settings.paths.data = tmp_path
    settings.call_time = datetime(2026, 11, 23, 10, 0)
    services = CallServices.create(settings, with_records=False, engine_override={"ko": "vosk"})
    services.asr.close()
    services.asr = AsrScheduler(max_queue=-1)  # always over its bound: no speech is decoded
    speech = CallerTurn(pcm=read_wav(FIXTURES / "ko" / "balance_2.wav"))
    try:
        result, _ = asyncio.run(run_call(services, "ko", [speech, CallerTurn(dtmf="1")], caller_id="+15550100"))
    finally:
        services.close()
    refused, keyed = result.turns[0], result.turns[1]
    assert refused.transcript == "" and refused.intent == "none" and not refused.no_input
    assert refused.asr_ms == 0 and refused.reply  # answered (the no-match re-prompt), not left in silence
    assert services.asr.stats.rejected == 1
    assert keyed.dtmf == "1" and keyed.reply


class TwoReplicaDecoder:
    """A batch decoder with two model replicas: records how many batches it decoded at the same time."""

    parallel = 2

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()

    def final_batch(self, recognizers: Sequence[object], queued: float | None = None,
                    due: float | None = None) -> list[str]:
        with self.lock:
            self.batches.append(len(recognizers))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.2)  # a decode: long enough for the other worker to start its own
        with self.lock:
            self.running -= 1
        return [f"text of {r}" for r in recognizers]


def test_finals_queued_for_an_engine_with_two_replicas_are_shared_out_and_decode_side_by_side() -> None:
    async def scenario() -> tuple[list[str], TwoReplicaDecoder]:
        pool = AsrScheduler(workers=2, max_batch=8)
        gates, decoder = [Gate(), Gate()], TwoReplicaDecoder()
        held = [asyncio.ensure_future(pool.run(gate.hold)) for gate in gates]
        for gate in gates:  # both workers busy: the finals queue up behind them
            await asyncio.to_thread(gate.entered.wait, 5)
        due = final_deadline(time.monotonic())
        finals = [asyncio.ensure_future(pool.final(Named(f"c{i}"), decoder, due + i / 1000)) for i in range(4)]
        await asyncio.sleep(0.05)
        for gate in gates:
            gate.release.set()
        results = await asyncio.gather(*finals)
        await asyncio.gather(*held)
        pool.close()
        return [text for text, _ in results], decoder

    texts, decoder = asyncio.run(scenario())
    assert texts == [f"text of c{i}" for i in range(4)]
    assert len(decoder.batches) == 2 and sum(decoder.batches) == 4  # one batch per replica, not one of 4
    assert decoder.most_at_once == 2


def test_a_call_server_runs_numpy_matrix_products_on_one_thread() -> None:
    """OpenBLAS's own threads spin after each product (a Whisper final's mel filter bank): a serving process
    keeps one, so decodes do not burn the cores the other calls need (ivr/services.py one_blas_thread)."""
    import numpy as np  # noqa: F401  (loads the BLAS threadpoolctl inspects)
    from threadpoolctl import threadpool_info

    from ivr.config import Settings
    from ivr.services import CallServices

    services = CallServices.create(Settings(), with_records=False)
    try:
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(pool["num_threads"] == 1 for pool in blas)
    finally:
        services.close()
