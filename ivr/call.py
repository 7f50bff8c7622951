"""One call: caller audio in -> VAD -> ASR -> NLU -> dialog -> actions -> audio out.

`CallSession` is transport-agnostic: it talks to a `Line` (ivr/frames.py), which is an
AudioSocket connection behind Asterisk, the simulated line of `ivr demo`/`ivr replay`, or the
sound device of `ivr talk`. Data flows one way:

    line.events() --> _on_audio: Endpointer --> ASR worker (ASR executor) --> inbox
    inbox --> listen: NLU --> ConversationDriver: DialogRuntime.handle --> actions --> speak: prompt cache
          --> line.play

The dialog loop is ivr/dialog/driver.py, shared with `ivr chat`; CallSession is its phone-call adapter
(speak, listen, run_hook, ...).

Three tasks per call: the line reader (never blocks on decoding), the ASR worker (one decode at
a time per call, on the ASR threads), and the dialog loop (run()). Barge-in: the reader stops
playback the moment the endpointer reports enough speech, or a key is pressed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from ivr.asr.base import AsrEngine, AsrResult, Recognizer
from ivr.asr.scheduler import final_deadline, partial_deadline
from ivr.audio.vad import BargeIn, Endpointer, EndpointParams, NoInputTimeout, SpeechEnded, SpeechStarted
from ivr.config import Settings
from ivr.dialog import events as ev
from ivr.dialog.driver import ConversationDriver
from ivr.dialog.hooks import run_hook
from ivr.errors import IvrError
from ivr.frames import AudioIn, DtmfIn, HangupIn, Line
from ivr.nlu.types import NONE_INTENT, Understanding
from ivr.results import CallResult, TurnLog
from ivr.services import CallServices
from ivr.storage.records import FAQ_ANSWERED, NBEST_EVENT

log = logging.getLogger(__name__)
T = TypeVar("T")

# Audio kept from before the endpointer decides that speech started (after speech_start_ms of it), so the
# first syllable reaches ASR with some silence ahead of it. 300 ms was enough with the energy detector;
# Silero decides ~140 ms later on a clean onset (a window late, and the network needs it), and Vosk then
# got a clipped lead-in: ko/operator_1.wav came out as "안 방법 연결". Korean replay (Silero, Vosk):
# 11 of 27 checks with 300 ms, 13 with 400, 15 with 500, 14-15 with 600-800, 14 with 1000 ms;
# English replay (Whisper) 52 of 53 with 300 and 500 ms alike.
PREROLL_FRAMES = 25
ASR_CHUNK_FRAMES = 5  # feed the recognizer every 100 ms of speech: partials without a thread hop per frame
# Trailing silence the recognizer gets after the last word: enough for its own end of word; the
# rest of the endpointer's 800 ms is not decoded. Once this much silence has passed, what is pending
# is fed and a streaming recognizer finishes its segment (Vosk `close_segment`), or the final of a
# buffered one (Whisper) is queued on the ASR pool, while the endpointer still waits: at the end of
# speech the final is done or under way. If the caller speaks again, the Whisper final is dropped
# and decoded again at the real end.
ASR_TRAILING_SILENCE_MS = 300
# audio of a pause past ASR_TRAILING_SILENCE_MS kept so that speech which resumes reaches ASR with
# its onset (the frames before the endpointer counts it as speech again)
RESUME_PREROLL_FRAMES = 15
# when frames stop arriving (a line without transmit_silence), the wall clock ends the wait instead
LISTEN_WALL_CLOCK_SLACK_S = 5.0


class _VoiceLost(Exception):
    """A prompt could not be rendered (no recording, no TTS voice): the call leaves for the live line."""


@dataclass(frozen=True)
class _CallerInput:
    """One decided caller input, as the reader and the ASR worker hand it to the dialog loop."""

    kind: str  # "speech" | "dtmf" | "noinput" | "hangup"
    at: float = 0.0  # perf_counter() when the input was decided (end of speech, key, timeout)
    result: AsrResult | None = None
    digit: str = ""
    endpoint_ms: float = 0.0
    asr_ms: float = 0.0  # end of speech decided -> ASR final ready (includes queued chunks)
    asr_decode_ms: float = 0.0  # of which the final's own decode (the rest waited in the ASR queue)
    barge_in: bool = False


class CallSession:
    """Runs one conversation on one line until goodbye, hand-off or hang-up."""

    def __init__(
        self,
        services: CallServices,
        line: Line,
        *,
        lang: str,
        flow: str = "support",
        caller_id: str = "",
        call_id: str | None = None,
        channel: str = "",
        on_turn: Callable[[TurnLog], None] | None = None,
        on_say: Callable[[str], None] | None = None,
        call_time: datetime | None = None,
    ) -> None:
        self.services = services
        self.call_time = call_time  # the time the dialog sees (business hours); None: settings' call_time or the clock
        self.line = line
        self.lang = lang
        self.flow_name = flow
        self.caller_id = caller_id
        self.call_id = call_id or str(uuid.uuid4())
        self.channel = channel
        self.on_turn = on_turn
        self.on_say = on_say
        self.listening = asyncio.Event()  # set while waiting for the caller (the simulated line watches it)
        self.playing = False
        self.turns: list[TurnLog] = []
        self.answered: list[str] = []  # knowledge-base entries answered so far

        self._loaded = services.registry.get(flow, lang)
        self._engine: AsrEngine | None = services.asr_engine(lang)
        self._recognizer: Recognizer | None = None  # made by the ASR worker: building one takes ~70 ms
        # an engine that decodes several calls' finals at once (Whisper) gets them batched by the ASR pool
        self._batch_decoder: Any = self._engine if hasattr(self._engine, "final_batch") else None
        self._base_params: EndpointParams = services.endpoint_params
        # between turns the endpointer only watches for barge-in: no-input counts while listening
        self._between_turns = self._base_params.with_overrides({"no_input_ms": 0})
        # a simulated line on the audio clock (`ivr replay`, tests) feeds frames faster than real time: wall-clock
        # deadlines say nothing about how long its caller waits
        self._realtime: bool = getattr(line, "realtime", True)
        self._endpointer = Endpointer(self._between_turns, services.speech_detector(realtime=self._realtime))
        self._inbox: asyncio.Queue[_CallerInput] = asyncio.Queue()
        self._asr_jobs: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._preroll: collections.deque[bytes] = collections.deque(maxlen=PREROLL_FRAMES)
        self._speech: list[bytes] = []
        # the audio of the feed job at the tail of _asr_jobs: speech flushed while it waits joins it, so a call
        # whose decoding is behind catches up in one job instead of one per 100 ms chunk
        self._unfed: list[bytes] | None = None
        self._pause: collections.deque[bytes] = collections.deque(maxlen=RESUME_PREROLL_FRAMES)
        # a buffered recognizer's final started before the end of speech was decided, and the turn it decodes
        self._early: asyncio.Future[tuple[AsrResult, float]] | None = None
        self._early_turn: Any = None
        self._in_speech = False
        self._barged = False  # the caller cut the current prompt short: skip the rest until Listen
        self._say_barge_in = True
        self._listen: ev.Listen | None = None  # the Listen in force or coming next (for its phrases)
        self._speech_barge = False  # the utterance in progress began over a prompt
        self._refused = False  # the utterance in progress is not decoded: the ASR queue was over its bound
        self._segment_closed = False  # the recognizer was asked to finish what it has (trailing silence)
        self._final_due: float | None = None  # deadline of the final queued behind this call's chunks
        # from the trailing silence on: when the final will be due if the endpointer decides as expected;
        # the chunks and the closing segment ahead of it are that urgent (a partial may wait a second)
        self._segment_due: float | None = None
        self._open_turn: TurnLog | None = None  # decided but not yet answered
        self._reply_to: TurnLog | None = None  # the caller turn the next prompt answers (for its latency)
        self._said = ""  # everything said since the caller last spoke (the next turn's prompt)
        self._decided_at = 0.0
        self._deciding = False  # an input was decided and is on its way to the dialog

    # ---- public -------------------------------------------------------------------------------
    @property
    def awaiting_caller(self) -> bool:
        """True while the assistant waits for the caller and has nothing decided yet."""
        return self.listening.is_set() and not self._deciding

    async def run(self) -> CallResult:
        """Run the conversation; never raises: errors end in a hand-off to the live line."""
        services = self.services
        services.metrics_call_started()
        services.record_open(self)
        reader = asyncio.create_task(self._read_line(), name=f"line-{self.call_id[:8]}")
        asr = asyncio.create_task(self._asr_worker(), name=f"asr-{self.call_id[:8]}")
        try:
            async with asyncio.timeout(services.settings.server.max_call_s):
                result = await self._converse()
        except TimeoutError:
            result = self._handoff_result(ev.Transfer(route=self._live_queue(), reason="max_call_length"))
        except asyncio.CancelledError:  # the bridge gave up on the call (shutdown past its drain time)
            result = self._handoff_result(ev.Transfer(route=self._live_queue(), reason="cancelled"))
            self._finish(result)
            raise
        except Exception as exc:  # fail open: the caller reaches a human, the record says why
            log.exception("call %s failed; handing off to the live line", self.call_id)
            services.metrics_error(type(exc).__name__)
            result = self._handoff_result(ev.Transfer(route=self._live_queue(), reason="error", summary=str(exc)))
        finally:
            reader.cancel()
            asr.cancel()
            await asyncio.gather(reader, asr, return_exceptions=True)
        self._finish(result)
        return result

    def _finish(self, result: CallResult) -> None:
        """The call's record and metrics are closed exactly once, however the call ended."""
        result.turns = self.turns
        self.services.release_detector(self._endpointer.detector)
        close = getattr(self._recognizer, "close", None)
        if close is not None:  # off the loop: it waits for a decode of this call still in flight
            asyncio.get_running_loop().run_in_executor(None, close)
        result.answered = self.answered
        self.services.record_close(self, result)
        self.services.metrics_call_ended(result)

    # ---- dialog loop --------------------------------------------------------------------------
    async def _converse(self) -> CallResult:
        driver = ConversationDriver(self._loaded.runtime, self)
        now_iso = self.services.settings.call_start_iso(self.call_time)
        try:
            ending = await driver.run(caller_id=self.caller_id, now_iso=now_iso)
        except _VoiceLost as exc:
            self._close_turn()  # the turn the unspoken answer was for goes into the record and summary
            heard = "; ".join(t.transcript or f"key {t.dtmf}" for t in self.turns if t.transcript or t.dtmf)
            intent = driver.state.intent if driver.state is not None else ""
            result = self._handoff_result(ev.Transfer(
                route=self._live_queue(), reason="tts_failed", intent=intent or self._last_intent(),
                summary=f"the assistant could not speak ({exc}); caller said: {heard or 'nothing yet'}"))
            result.survey_score = driver.survey
            return result
        finally:
            self._close_turn()
        if ending.transfer is not None:
            result = self._handoff_result(ending.transfer)
            result.survey_score = ending.survey
            return result
        if ending.kind == "caller_hung_up":
            if ending.served:  # heard their answer, or in the survey: contained
                return self._end_result("completed", "caller_hung_up_after_service", ending.survey, ending.state.intent)
            return self._end_result("hangup", "caller_hung_up", ending.survey, ending.state.intent)
        return self._end_result("completed", ending.reason, ending.survey, ending.state.intent)

    # ---- the driver's adapter: how a phone call performs the dialog's actions ----------------
    async def speak(self, action: ev.Say, next_listen: ev.Listen | None) -> None:
        if self._barged:  # the caller cut the prompts short: the rest of them until Listen is skipped
            return
        self._listen = next_listen or self._listen
        self._said = await self._say(action, self._reply_to, self._said)

    async def listen(self, action: ev.Listen) -> ev.Event:
        self._close_turn()
        self._barged = False
        self._listen = action
        event, self._reply_to = await self._listen_once(action, prompt=self._said)
        self._said = ""
        return event

    def answered_in(self, dialog_ms: float) -> None:
        if self._reply_to is not None:
            self._reply_to.dialog_ms = dialog_ms

    async def run_hook(self, action: ev.RunHook) -> ev.HookDone:
        return await asyncio.to_thread(run_hook, action, self._hook_context())

    def survey_score(self, action: ev.RecordSurvey) -> None:
        self.services.record_event(self, "survey", {"score": action.score})

    def knowledge_answer(self, action: ev.AnsweredFromKnowledge) -> None:
        self.answered.append(action.entry)
        self.services.metrics_kb_answer(action.entry)
        self.services.record_event(self, FAQ_ANSWERED, {
            "entry": action.entry, "topic": action.topic, "state": action.state})

    async def _say(self, action: ev.Say, reply_to: TurnLog | None, said: str) -> str:
        """Render and play one prompt; returns everything said since the caller last spoke."""
        started = time.perf_counter()
        try:
            pcm = await self.services.prompt_audio(action.text, self.lang)
        except IvrError as exc:
            # No recording and no voice: a caller who hears nothing cannot use the menu either, so
            # the call goes to a human at once (the dialplan plays its own recorded prompts).
            log.error("call %s: cannot render prompt %r: %s; handing off to the live line",
                      self.call_id, action.prompt_id, exc)
            self.services.metrics_error("tts")
            raise _VoiceLost(f"prompt {action.prompt_id or action.text[:40]!r} could not be spoken: {exc}") from None
        if reply_to is not None and self._open_turn is reply_to:
            reply_to.tts_ms = _ms_since(started)
            reply_to.latency_ms = _ms_since(self._decided_at)
            reply_to.reply = action.text
            self._close_turn()
        if self.on_say:
            self.on_say(action.text)
        if pcm and action.barge_in and self._in_speech:
            self._barged = True  # the caller is talking already: do not start a prompt over them
        elif pcm:
            self._say_barge_in = action.barge_in
            if not self._in_speech:  # the state this prompt belongs to decides barge-in over it
                self._endpointer.reset(self._prompt_params())
            self.playing = True
            try:
                completed = await self.line.play(pcm)
            finally:
                self.playing = False
            if not completed:
                self._barged = True
        return (said + " " + action.text).strip()

    async def _listen_once(self, action: ev.Listen, prompt: str) -> tuple[ev.Event, TurnLog]:
        """Wait for speech, a key, silence or hang-up; returns the dialog event and the turn's log."""
        params = self._base_params.with_overrides(action.endpoint)
        self._deciding = not self._inbox.empty()
        if not self._in_speech:
            self._endpointer.reset(params)
        wall_clock_s = (params.no_input_ms + params.max_utterance_ms) / 1000 + LISTEN_WALL_CLOCK_SLACK_S
        self.listening.set()
        try:
            got = await asyncio.wait_for(self._inbox.get(), timeout=wall_clock_s)
        except TimeoutError:
            got = _CallerInput("noinput", time.perf_counter())
        finally:
            self.listening.clear()
        turn = TurnLog(index=len(self.turns) + 1, prompt=prompt, barge_in=got.barge_in)
        self._decided_at = got.at
        if got.kind == "hangup":
            return ev.HungUp(), turn
        self._open_turn = turn
        if got.kind == "noinput":
            turn.no_input = True
            return ev.NoInput(), turn
        if got.kind == "dtmf":
            turn.dtmf = got.digit
            turn.intent = action.dtmf.get(got.digit, "")  # what the key means here, for records and reports
            return ev.Pressed(got.digit), turn
        result = got.result or AsrResult("", 0.0, True)
        turn.endpoint_ms, turn.asr_ms, turn.asr_decode_ms = got.endpoint_ms, got.asr_ms, got.asr_decode_ms
        turn.transcript, turn.confidence = result.text, result.confidence
        started = time.perf_counter()
        if result.text:
            alternatives = [(alt.text, alt.confidence) for alt in result.nbest]
            nlu, expected = self._loaded.nlu, action.expected_intents or None
            if nlu.understands_at_once(alternatives):  # grammar phrases: a lookup, no thread hand-off
                understanding = nlu.understand(alternatives, expected)
            else:  # off the event loop: the classifier embeds the readings (a few ms each, more on a busy machine)
                understanding = await asyncio.to_thread(nlu.understand, alternatives, expected)
            # the record keeps what the decision was made from (the transcript is only the top reading)
            self.services.record_event(self, NBEST_EVENT, {
                "turn": turn.index, "nbest": [[t, round(c, 3)] for t, c in alternatives],
                "reading": understanding.text, "intent": understanding.intent,
                "ambiguous": list(understanding.ambiguous)})
        else:  # rejected by the recognizer: nothing in-grammar was said
            understanding = Understanding(text="", intent=NONE_INTENT, score=0.0)
        turn.nlu_ms = _ms_since(started)
        turn.intent, turn.score, turn.entities = understanding.intent, understanding.score, understanding.entities
        return ev.Heard(understanding), turn

    def _close_turn(self) -> None:
        """Record the open caller turn once: when its answer starts, or when the next listen begins."""
        turn, self._open_turn = self._open_turn, None
        if turn is None:
            return
        self.turns.append(turn)
        self.services.record_turn(self, turn)
        self.services.metrics_turn(turn)
        if self.on_turn:
            self.on_turn(turn)

    # ---- line reader --------------------------------------------------------------------------
    async def _read_line(self) -> None:
        async for item in self.line.events():
            if isinstance(item, AudioIn):
                self._on_audio(item.pcm)
            elif isinstance(item, DtmfIn):
                barge = self.playing
                if barge:
                    self.line.stop_playback()
                    self._barged = True
                    self.services.metrics_barge_in()
                self._deciding = True
                self._inbox.put_nowait(_CallerInput("dtmf", time.perf_counter(), digit=item.digit, barge_in=barge))
            elif isinstance(item, HangupIn):
                break
        self._inbox.put_nowait(_CallerInput("hangup", time.perf_counter()))

    def _on_audio(self, frame: bytes) -> None:
        if self._in_speech:
            if self._endpointer.trailing_silence_ms < ASR_TRAILING_SILENCE_MS:
                self._speech.append(frame)
            else:  # not decoded unless the caller speaks again (then it is the resumed words' onset)
                self._pause.append(frame)
        else:
            self._preroll.append(frame)
        for event in self._endpointer.feed(frame):
            if isinstance(event, SpeechStarted):
                self._in_speech = True
                self._speech = list(self._preroll)
                self._preroll.clear()
                self._pause.clear()
                self._speech_barge = self.playing
                self._refused = self._engine is not None and self.services.asr.overloaded
                if self._refused:  # no decode: the turn is a no-match at once (its re-prompt offers keys)
                    self.services.asr.refuse()
                    log.warning("call %s: ASR queue over its bound; this utterance is not decoded", self.call_id)
                    self.services.metrics_error("asr_overloaded")
                else:
                    phrases = self._listen.phrases if self._listen else None
                    hints = self._listen.hints if self._listen else None
                    self._queue_asr(("start", phrases, hints))
            elif isinstance(event, BargeIn):
                if self.playing and self._say_barge_in:
                    self.line.stop_playback()
                    self._barged = True
                    self.services.metrics_barge_in()
            elif isinstance(event, SpeechEnded):
                self._in_speech = False
                self._pause.clear()
                self._deciding = True
                self._flush_speech()
                endpoint_ms = float(self._endpointer.params.end_silence_ms if event.reason == "silence" else 0)
                if self._refused:
                    self._inbox.put_nowait(_CallerInput("speech", time.perf_counter(), AsrResult("", 0.0, True),
                                                        endpoint_ms=endpoint_ms, barge_in=self._speech_barge))
                else:
                    self._final_due = final_deadline(time.monotonic())
                    self._queue_asr(("final", endpoint_ms, self._speech_barge, time.perf_counter()))
            elif isinstance(event, NoInputTimeout):
                if self.listening.is_set():
                    self._inbox.put_nowait(_CallerInput("noinput", time.perf_counter()))
        if self._endpointer.state == "done":  # the turn is decided: re-arm for barge-in over the reply
            self._endpointer.reset(self._prompt_params())
        if not self._in_speech:
            return
        quiet_ms = self._endpointer.trailing_silence_ms
        if quiet_ms == 0:
            self._segment_closed = False
            self._segment_due = None
            if self._pause:  # speech resumed after a pause: its onset was kept aside
                self._speech.extend(self._pause)
                self._pause.clear()
        if len(self._speech) >= ASR_CHUNK_FRAMES or quiet_ms >= ASR_TRAILING_SILENCE_MS:
            self._flush_speech()
        if quiet_ms >= ASR_TRAILING_SILENCE_MS and not self._segment_closed and not self._refused:
            self._segment_closed = True  # the final starts now; it is ready when the endpointer decides
            decided_in_s = (self._endpointer.params.end_silence_ms - quiet_ms) / 1000
            self._segment_due = final_deadline(time.monotonic() + decided_in_s)
            self._queue_asr(("segment", self._segment_due))

    def _prompt_params(self) -> EndpointParams:
        """Endpointing while the assistant talks: the coming Listen's state settings (barge-in), no no-input."""
        if self._listen is None or not self._listen.endpoint:
            return self._between_turns
        return self._base_params.with_overrides({**self._listen.endpoint, "no_input_ms": 0})

    def _flush_speech(self) -> None:
        if self._refused:
            self._speech = []
        elif self._speech:
            if self._unfed is None:  # no feed job waits at the queue's tail: queue one
                self._unfed = []
                self._asr_jobs.put_nowait(("feed", self._unfed))
            self._unfed.extend(self._speech)  # ...else the audio joins it: one decode, one trip to the pool
            self._speech = []

    def _queue_asr(self, job: tuple[Any, ...]) -> None:
        """Queue a recognizer job other than feeding audio; it is the queue's hurry now too: the jobs ahead
        of it (this call's chunks waiting on the pool) are due by its deadline."""
        self._unfed = None  # audio from now on is fed after this job
        self._asr_jobs.put_nowait(job)
        due = self._final_due or self._segment_due
        if due is not None:
            self.services.asr.expedite(self.call_id, due)

    # ---- ASR worker ---------------------------------------------------------------------------
    async def _asr_worker(self) -> None:
        """Runs the recognizer's jobs in order on the ASR threads; finals go to the inbox."""
        if self._engine is not None:
            self._recognizer = await self._on_pool(self._engine.recognizer)
        recognizer = self._recognizer
        try:
            await self._run_asr_jobs(recognizer)
        finally:
            self._discard_early()

    async def _run_asr_jobs(self, recognizer: Recognizer | None) -> None:
        while True:
            job = await self._asr_jobs.get()
            if recognizer is None:  # no model for this language: speech is a no-match, keys still work
                if job[0] == "final":
                    self._inbox.put_nowait(_CallerInput("speech", job[3], AsrResult("", 0.0, True), barge_in=job[2]))
                continue
            # a chunk queued ahead of a final is as urgent as the final (it must be decoded first)
            due = self._final_due or self._segment_due or partial_deadline()
            try:
                if job[0] == "start":
                    await self._prepare(_start_turn, recognizer, job[1], job[2], deadline=due)
                elif job[0] == "feed":
                    self._discard_early()  # the caller spoke again: the turn is longer than the early final's
                    if job[1] is self._unfed:  # audio arriving from now on goes into a next job
                        self._unfed = None
                    await self._prepare(recognizer.accept, b"".join(job[1]), deadline=due)
                elif job[0] == "segment":
                    close_segment = getattr(recognizer, "close_segment", None)
                    early_turn = getattr(recognizer, "early_turn", None)
                    if close_segment is not None:
                        await self._on_pool(close_segment, self._answer_by(due), deadline=due)
                    elif early_turn is not None:  # on the loop: a copy of the buffer; no decode of this call runs
                        self._early_turn = early_turn()
                        self._early = self.services.asr.early_final(self._early_turn, self._batch_decoder, job[1])
                else:
                    _, endpoint_ms, barge, decided = job
                    self._final_due = self._segment_due = None
                    result, decode_s = await self._turn_final(recognizer, due)
                    self._inbox.put_nowait(_CallerInput(
                        "speech", decided, result, endpoint_ms=endpoint_ms, asr_ms=_ms_since(decided),
                        asr_decode_ms=decode_s * 1000.0, barge_in=barge,
                    ))
            except Exception as exc:  # an engine fault costs this utterance, not the call
                log.error("call %s: ASR failed: %s", self.call_id, exc)
                self.services.metrics_error("asr")
                if job[0] == "final":
                    self._inbox.put_nowait(_CallerInput("speech", job[3], AsrResult("", 0.0, True), barge_in=job[2]))

    async def _prepare(self, func: Callable[..., Any], *args: Any, deadline: float) -> None:
        """Start a turn or feed audio: a streaming recognizer decodes as it is fed, on the ASR pool; a buffering one
        (Whisper's: a byte append, two fields set) does it here on the loop. Through the pool its chunks waited
        behind other calls' Whisper decodes holding every worker thread: in a burst of ten English callers, 8 of
        the 10 early finals were queued 220-260 ms late, their calls' last chunk still waiting."""
        if self._engine is not None and not self._engine.streaming:
            func(*args)
        else:
            await self._on_pool(func, *args, deadline=deadline)

    async def _on_pool(self, func: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """Run a recognizer call on the ASR pool as this call's job (its lane: `_queue_asr` hurries them)."""
        return await self.services.run_asr(func, *args, deadline=deadline, lane=self.call_id)

    async def _turn_final(self, recognizer: Recognizer, due: float) -> tuple[AsrResult, float]:
        """The final of the decided turn: the early one when nothing was fed after it (done, or awaited
        while it decodes), else decoded now."""
        early, self._early = self._early, None
        if early is not None and self._early_turn.holds_turn_of(recognizer):
            recognizer.reset()  # the turn's audio is in the early final; ready for the next turn
            return await early
        if early is not None:
            self.services.asr.discard_early(early)
        decoded_final = getattr(recognizer, "decoded_final", None)  # Vosk: the segment was decoded early
        if decoded_final is not None:
            started = time.perf_counter()
            pending = getattr(recognizer, "pending_decode", lambda: None)()
            if pending is not None:  # the second opinion's early Whisper decode, on its own thread, until due:
                # not done by then, the final goes on without it; an error surfaces from decoded_final
                answer_by = self._answer_by(due)
                timeout = None if answer_by is None else max(0.0, answer_by - time.monotonic())
                await asyncio.wait([asyncio.wrap_future(pending)], timeout=timeout)
            ready: AsrResult | None = decoded_final()
            if ready is not None:  # on the loop: 50 callers deciding at once queued for the pool's threads
                return ready, time.perf_counter() - started
        result: tuple[AsrResult, float] = await self.services.asr.final(recognizer, self._batch_decoder, due)
        return result

    def _answer_by(self, due: float) -> float | None:
        """When the turn's answer is wanted (time.monotonic): the final's deadline `due` on a real line; none on
        the audio clock, where wall time says nothing about how long the caller waits."""
        return due if self._realtime else None

    def _discard_early(self) -> None:
        early, self._early = self._early, None
        if early is not None:
            self.services.asr.discard_early(early)

    # ---- helpers ------------------------------------------------------------------------------
    def _hook_context(self) -> dict[str, Any]:
        return {"caller_id": self.caller_id, "lang": self.lang, "call_id": self.call_id,
                **self.services.hook_context}

    def _live_queue(self) -> str:
        return self.services.settings.live_queue

    @property
    def engine_name(self) -> str:
        return self._engine.name if self._engine else "none"

    def _handoff_result(self, transfer: ev.Transfer) -> CallResult:
        return CallResult(
            call_id=self.call_id, lang=self.lang, flow=self.flow_name, route=transfer.route,
            reason=transfer.reason, intent=transfer.intent, summary=transfer.summary,
            variables=dict(transfer.variables), engine=self.engine_name,
        )

    def _last_intent(self) -> str:
        return next((t.intent for t in reversed(self.turns) if t.intent not in ("", NONE_INTENT)), "")

    def _end_result(self, route: str, reason: str, survey: int | None, intent: str = "") -> CallResult:
        """`intent`: the caller's main request as the dialog tracked it (not a later "no" or "goodbye")."""
        intent = intent or self._last_intent()
        return CallResult(
            call_id=self.call_id, lang=self.lang, flow=self.flow_name, route=route, reason=reason,
            intent=intent, survey_score=survey, engine=self.engine_name,
        )


def _start_turn(recognizer: Recognizer, phrases: Sequence[str] | None, hints: Sequence[str] | None = None) -> None:
    recognizer.set_grammar(list(phrases) if phrases else None)
    set_hints = getattr(recognizer, "set_hints", None)  # only recognizers that take a prompt (Whisper)
    if set_hints is not None:
        set_hints(list(hints) if hints and not phrases else None)
    recognizer.reset()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


async def run_local_call(
    settings: Settings,
    lang: str,
    flow: str,
    audio_in: AsyncIterator[bytes],
    play: Callable[[bytes], Awaitable[None]],
    stop_playback: Callable[[], None],
    *,
    on_say: Callable[[str], None] | None = None,
    on_turn: Callable[[TurnLog], None] | None = None,
) -> CallResult:
    """A call on the local sound device (`ivr talk`): microphone frames in, speaker out; `on_say` and
    `on_turn` see the conversation as it happens."""
    from ivr.device_line import DeviceLine

    services = CallServices.create(settings)
    line = DeviceLine(audio_in, play, stop_playback)
    try:
        return await CallSession(services, line, lang=lang, flow=flow, caller_id="local",
                                 on_say=on_say, on_turn=on_turn).run()
    finally:
        services.close()  # the call record is written before `ivr talk` exits
