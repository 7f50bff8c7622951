"""A second opinion for grammar turns: when Vosk's grammar rejects what the caller said, the same
audio is decoded by Whisper (the bundled multilingual model for the language), snapped to the same
phrases, and its reading is taken if it snaps.

Why: the two recognizers miss different utterances. On the Korean development set kept apart from the
replay fixtures (`bench/ko_devset.py`, 88 in-grammar espeak-ng utterances and 40 out-of-scope ones),
through the whole pipeline: Vosk alone right 9, wrong 4, rejected 75; Whisper base alone right 27, wrong 10,
rejected 51; Vosk then Whisper (this) right 28, wrong 12, rejected 48; every out-of-scope utterance rejected in
all three (on WINDOW_S, below: 28 / 9 / 51). Vosk stays first: it streams (partials, barge-in words) and costs
~1 % of a core per call, where a Whisper decode costs ~0.2 s of a core, paid only on the turns Vosk rejects.

Under load it steps aside: at most SLOTS Whisper decodes run at once in the process, and the second opinion
keeps to the final's budget (FINAL_BUDGET_S after the decision, the compute goal): a decode starts only
while one of the recent length can be done by then, and nothing waits for it longer. A rejected turn it
cannot serve in time keeps Vosk's rejection (the caller is asked again, as without a second opinion);
`SecondOpinionEngine.outcomes` counts how often. Unbounded,
Poisson traffic of ~50 concurrent Korean calls on 2 cores collapsed: a third of the turns went to Whisper
(~0.5-1 s of a core each), the ASR pool's queue grew to 14 s and 79 of 109 calls got no reply, against 109 of
109 and a compute p95 of 10 ms without the second opinion; bounded by slots and started early (below), 109 of
109 and 598 ms on a 20 s window; on 10 s, the early decode waiting up to 0.3 s for its slot, 195-285 ms; keeping
to the budget, 90 and 111 ms against 258 and 262 (one in five rejected turns re-asked; intents right 126 against 130
of 202; bench/traffic.py --rates 2.4, docs/performance.md).
`asr.second_opinion: false` turns it off entirely.

The Whisper decode starts early when it can: the call closes Vosk's segment 300 ms into the caller's silence
(`close_segment`), while the endpointer still waits out the rest of it; if Vosk's reading of the closed
segments is already a rejection, Whisper decodes that audio then, on the engine's own thread (`early_decoder`, one
per slot, so no ASR pool thread waits for a slot or for Whisper), and the final uses the result when no audio came
after it (the call awaits it on the event loop, `pending_decode`, until the answer is due). Whisper decodes on a
10 s window (`final_batch`, WINDOW_S; Whisper's own is 30 s).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ivr.asr.base import AsrResult
from ivr.asr.scheduler import FINAL_BUDGET_S
from ivr.asr.vosk import VoskEngine, VoskRecognizer
from ivr.asr.whisper import EarlyTurn, WhisperEngine, WhisperRecognizer

log = logging.getLogger(__name__)

# Whisper decodes at once for second opinions, per process: one per two cores leaves the other core(s) to the
# calls' streaming Vosk, Silero and the event loop
SLOTS = max(1, (os.cpu_count() or 2) // 2)
# The early decode's answer is due when the final is (`answer_by`: the endpointer's expected decision plus
# FINAL_BUDGET_S); it starts only while a decode of the recent length can still finish by then, and the call
# waits for it no longer (section "The second opinion keeps to the final's budget", docs/performance.md).
# Before, it waited up to 0.3 s for a slot however long Whisper then took, and a turn it missed was decoded
# again after the decision: ~46 concurrent Korean calls (bench/traffic.py --rates 2.4) had a compute p95 of
# 195-285 ms. Two slots instead of one: 380 ms (the decodes slowed each other).
# weight of the newest decode in the running estimate of a decode's wall time (it doubles under load)
DECODE_S_WEIGHT = 0.25
# An estimate this old says nothing about the load now; without it the first decode is tried again. (A load peak
# could otherwise leave an estimate no deadline fits, and then no decode would ever run to lower it.)
DECODE_S_TTL_S = 5.0
# Whisper's encoder window for second opinions (the English default is 20 s: shorter lost tiny.en intents). The
# encoder's cost follows the window: Whisper base on 12 Korean fixtures, one thread, 366 ms per decode at 20 s,
# 232 at 15 s, 130 at 10 s, so at 10 s the decode started at the closing segment is done before the endpointer's
# decision (500 ms later) instead of after it. bench/ko_devset.py, one sitting (2026-12-04): 20 s right 27 / wrong
# 9 / rejected 52, 15 s 26 / 10 / 52, 10 s 28 / 9 / 51; out of scope 39 of 40 rejected in all three.
WINDOW_S = 10.0


class SecondOpinionEngine:
    """Vosk with Whisper behind it for the turns Vosk's grammar rejects."""

    name = "vosk"
    streaming = True

    def __init__(self, first: VoskEngine, second: WhisperEngine, slots: int = SLOTS) -> None:
        self.first = first
        self.second = second
        self.slot_count = slots
        self.slots = threading.BoundedSemaphore(slots)
        # The early decodes run here, not on the ASR pool: a pool thread that waited for a slot and then for
        # Whisper (up to 0.3 + ~0.15 s) was a thread the calls' streaming Vosk could not use, so the pool needed
        # many more threads than cores, and those threads took the cores from the event loop (docs/performance.md).
        self.early_decoder = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="second-opinion")
        # a Whisper decode's recent wall time, seconds, and when it was last measured (time.monotonic)
        self.decode_s = 0.0
        self.measured_at = 0.0
        # per turn Vosk rejected: "whisper" (Whisper decoded it in time), "busy" (every slot taken), "late" (no
        # decode could be done by the time the answer was due)
        self.outcomes: Counter[str] = Counter()

    def recognizer(self) -> SecondOpinionRecognizer:
        return SecondOpinionRecognizer(self, self.first.recognizer(), self.second.recognizer())

    def expected_decode_s(self) -> float:
        """How long a decode started now should take: the recent decodes' running average, or 0 (try one) when
        the last was measured more than DECODE_S_TTL_S ago."""
        return self.decode_s if time.monotonic() - self.measured_at < DECODE_S_TTL_S else 0.0

    def spare_s(self, answer_by: float) -> float:
        """Seconds a decode of the recent length, started now, would be done before `answer_by` (time.monotonic);
        negative: it would be late."""
        return answer_by - time.monotonic() - self.expected_decode_s()

    def fits(self, answer_by: float) -> bool:
        """Whether a decode of the recent length, started now, is done by `answer_by`."""
        return self.spare_s(answer_by) >= 0

    def decode(self, turn: WhisperRecognizer | EarlyTurn, *, wait_s: float | None = 0.0) -> AsrResult | None:
        """Whisper's reading of `turn`, snapped to the same phrases or rejected (""); None when every slot
        stays taken for `wait_s` (None: waits until one frees)."""
        if not self.slots.acquire(timeout=wait_s):
            return None
        try:
            started = time.monotonic()
            reading = self.second.final_batch([turn])[0]
            took, previous = time.monotonic() - started, self.expected_decode_s()
            self.decode_s = previous + DECODE_S_WEIGHT * (took - previous) if previous else took  # 0: afresh
            self.measured_at = time.monotonic()
            return reading
        finally:
            self.slots.release()


class SecondOpinionRecognizer:
    """One call's pair; implements `ivr.asr.base.Recognizer` plus Vosk's `close_segment` and `close`."""

    def __init__(self, engine: SecondOpinionEngine, first: VoskRecognizer, second: WhisperRecognizer) -> None:
        self.engine = engine
        self.first = first
        self.second = second  # only buffers the turn's audio until asked
        # from close_segment: (the turn as it was then, Whisper's early decode of it; None when it could not
        # start in time)
        self._early: tuple[EarlyTurn, Future[AsrResult | None]] | None = None
        self._answer_by: float | None = None  # this turn's deadline, from close_segment (None: none)

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        self.first.set_grammar(phrases)
        self.second.set_grammar(phrases)

    def accept(self, pcm: bytes) -> AsrResult | None:
        if self._early is not None and pcm:  # the caller spoke again: the early decode no longer holds the turn
            self._early[1].cancel()  # (not started, it never will; under way, its result will be ignored)
        self.second.accept(pcm)
        return self.first.accept(pcm)

    def close_segment(self, answer_by: float | None = None) -> None:
        """Vosk's `close_segment`; when its reading is a rejection, Whisper's decode of the turn starts on the
        engine's thread. `answer_by` (time.monotonic) is when the call wants the turn's answer: the decode starts
        only while it can be done by then, and the final keeps to it too. None: no deadline, Whisper always
        decodes (a replay on the audio clock, where wall time says nothing about how long a caller waits)."""
        self.first.close_segment()
        self._answer_by = answer_by
        reading = self.first.closed_reading()
        if reading is None or not self._asks_whisper(reading):
            return
        self._drop_early()
        if answer_by is not None and not self.engine.fits(answer_by):  # a decode started now would be late
            return
        turn = self.second.early_turn()
        self._early = turn, self.engine.early_decoder.submit(self._early_whisper, turn, answer_by)

    def pending_decode(self) -> Future[AsrResult | None] | None:
        """Whisper's early decode of this turn while it is still running on its own thread: the call awaits it
        (no ASR pool thread waits) before `decoded_final`, whose reading it is, until the answer is due."""
        early = self._early
        return early[1] if early is not None and not early[1].done() else None

    def final(self) -> AsrResult:
        """Vosk's final, or Whisper's reading when Vosk rejected the turn and Whisper's snaps onto a phrase.
        With a deadline (`close_segment`) it never waits for Whisper: the early decode counts only if done, and a
        decode starts here only when a slot is free and one of the recent length fits the final's budget
        (FINAL_BUDGET_S). Without one it waits for both."""
        first = self.first.final()
        early, self._early = self._early, None
        timed, self._answer_by = self._answer_by is not None, None
        if not self._asks_whisper(first):
            self._drop(early)
            self.second.reset()
            return first
        second, outcome = self._whisper_reading(early, timed)
        self.engine.outcomes[outcome] += 1
        self.second.reset()
        if second is not None and second.text:  # snapped onto a phrase
            log.info("second opinion: Vosk rejected the turn, Whisper heard %r (%.2f)", second.text, second.confidence)
            return second
        if second is None:
            log.debug("second opinion: none in time (%s); Vosk's rejection stands", outcome)
        return first

    def _whisper_reading(self, early: tuple[EarlyTurn, Future[AsrResult | None]] | None,
                         timed: bool) -> tuple[AsrResult | None, str]:
        """For `final` of a turn Vosk rejected: Whisper's reading (None: none in time) and the outcome to count
        ("whisper", "busy", "late"; `SecondOpinionEngine.outcomes`)."""
        if early is not None and early[0].holds_turn_of(self.second):  # nothing came after the early decode
            if timed and not early[1].done():  # the call stopped waiting for it: the answer was due
                self._drop(early)
                return None, "late"
            reading = early[1].result()  # None: it could not start in time
            if reading is not None:
                return reading, "whisper"
        else:  # none, or the caller spoke after it (a stale one still running keeps its slot)
            self._drop(early)
        if timed and not self.engine.fits(time.monotonic() + FINAL_BUDGET_S):
            return None, "late"
        reading = self.engine.decode(self.second, wait_s=0.0 if timed else None)
        return reading, "whisper" if reading is not None else "busy"

    def decoded_final(self) -> AsrResult | None:
        """`final` when it needs no decode: Vosk's closed segments are all there is, and either Vosk
        understood them or Whisper's early decode of exactly this audio is in hand. None otherwise."""
        reading = self.first.closed_reading()
        if reading is None:
            return None
        early = self._early
        if self._asks_whisper(reading) and (early is None or not early[0].holds_turn_of(self.second)
                                            or not early[1].done() or early[1].result() is None):
            return None
        return self.final()

    def _asks_whisper(self, vosk: AsrResult) -> bool:
        """Vosk's grammar rejected a turn that has audio: the case for a second opinion."""
        return not vosk.text and self.first.phrases is not None and self.second.buffered_bytes > 0

    def _early_whisper(self, turn: EarlyTurn, answer_by: float | None) -> AsrResult | None:
        """On the early decoder's thread, having waited in its queue behind other calls' decodes: Whisper's
        reading of `turn` if a decode can still be done by `answer_by`; it waits for a slot as long as that holds
        (without a deadline, until one frees)."""
        engine = self.engine
        if answer_by is None:
            return engine.decode(turn, wait_s=None)
        wait_s = engine.spare_s(answer_by)
        return engine.decode(turn, wait_s=wait_s) if wait_s > 0 else None

    def reset(self) -> None:
        self.first.reset()
        self.second.reset()
        self._drop_early()
        self._answer_by = None

    def _drop_early(self) -> None:
        early, self._early = self._early, None
        self._drop(early)

    @staticmethod
    def _drop(early: tuple[EarlyTurn, Future[AsrResult | None]] | None) -> None:
        """An early decode no longer wanted: not started, it never runs; under way, its result is ignored."""
        if early is not None:
            early[1].cancel()

    @property
    def phrases(self) -> list[str] | None:
        return self.first.phrases

    def close(self) -> None:
        self._drop_early()
        self.first.close()
        self.second.reset()
