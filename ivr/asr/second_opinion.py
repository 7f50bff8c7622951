"""A second opinion for grammar turns: when Vosk's grammar rejects what the caller said, the same
audio is decoded by Whisper (the bundled multilingual model for the language), snapped to the same
phrases, and its reading is taken if it snaps.

Why: the two recognizers miss different utterances. On the Korean development set kept apart from the
replay fixtures (`bench/ko_devset.py`, 88 in-grammar espeak-ng utterances and 40 out-of-scope ones),
through the whole pipeline: Vosk alone right 9, wrong 4, rejected 75; Whisper base alone right 27, wrong 10,
rejected 51; Vosk then Whisper (this) right 28, wrong 12, rejected 48; every out-of-scope utterance rejected in
all three (on WINDOW_S, below: 28 / 9 / 51). Vosk stays first: it streams (partials, barge-in words) and costs
~1 % of a core per call, where a Whisper decode costs ~0.2 s of a core, paid only on the turns Vosk rejects.

Under load it steps aside: at most SLOTS Whisper decodes run at once in the process. The early decode (below)
waits up to EARLY_WAIT_S for a slot; at the decision a rejected turn that finds them all taken keeps Vosk's
rejection (the caller is asked again, as without a second opinion). Unbounded,
Poisson traffic of ~50 concurrent Korean calls on 2 cores collapsed: a third of the turns went to Whisper
(~0.5-1 s of a core each), the ASR pool's queue grew to 14 s and 79 of 109 calls got no reply, against 109 of
109 and a compute p95 of 10 ms without the second opinion; bounded and started early (below), 109 of 109 and
598 ms on a 20 s window; on 10 s, the early decode waiting for its slot, 157-200 ms (8 ms without the second
opinion, same sitting; bench/traffic.py --rates 2.4, docs/performance.md).
`asr.second_opinion: false` turns it off entirely.

The Whisper decode starts early when it can: the call closes Vosk's segment 300 ms into the caller's silence
(`close_segment`), while the endpointer still waits out the rest of it; if Vosk's reading of the closed
segments is already a rejection, Whisper decodes that audio then, on the engine's own thread (`early_decoder`, one
per slot, so no ASR pool thread waits for a slot or for Whisper), and the final uses the result when no audio came
after it (the call awaits it on the event loop: `pending_decode`). Whisper decodes on a 10 s window
(`final_batch`, WINDOW_S; Whisper's own is 30 s).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ivr.asr.base import AsrResult
from ivr.asr.vosk import VoskEngine, VoskRecognizer
from ivr.asr.whisper import EarlyTurn, WhisperEngine, WhisperRecognizer

log = logging.getLogger(__name__)

# Whisper decodes at once for second opinions, per process: one per two cores leaves the other core(s) to the
# calls' streaming Vosk, Silero and the event loop
SLOTS = max(1, (os.cpu_count() or 2) // 2)
# How long the early decode, started 300 ms into the caller's silence (500 ms before the decision with the default
# 800 ms), waits for a slot. Without a wait, at ~37 concurrent Korean calls (bench/traffic.py --rates 2.4
# --duration 30) a third of the early decodes found the slot taken and were decoded after the decision instead:
# compute p95 281 ms; waiting 0.3 s, 103 ms; 0.45 s at ~50 concurrent: 210 and 219 ms against 200 and 157 ms for
# 0.3. Two slots instead of one: 380 ms (the decodes slowed each other). All on the 10 s window below.
EARLY_WAIT_S = 0.3
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
        self.skipped = 0  # rejected turns that found every slot taken (kept Vosk's rejection); a rough count

    def recognizer(self) -> SecondOpinionRecognizer:
        return SecondOpinionRecognizer(self, self.first.recognizer(), self.second.recognizer())


class SecondOpinionRecognizer:
    """One call's pair; implements `ivr.asr.base.Recognizer` plus Vosk's `close_segment` and `close`."""

    def __init__(self, engine: SecondOpinionEngine, first: VoskRecognizer, second: WhisperRecognizer) -> None:
        self.engine = engine
        self.first = first
        self.second = second  # only buffers the turn's audio until asked
        # from close_segment: (the turn as it was then, Whisper's early decode of it; None when no slot came free)
        self._early: tuple[EarlyTurn, Future[AsrResult | None]] | None = None

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        self.first.set_grammar(phrases)
        self.second.set_grammar(phrases)

    def accept(self, pcm: bytes) -> AsrResult | None:
        if self._early is not None and pcm:  # the caller spoke again: the early decode no longer holds the turn
            self._early[1].cancel()  # (not started, it never will; under way, the final waits for its slot)
        self.second.accept(pcm)
        return self.first.accept(pcm)

    def close_segment(self) -> None:
        self.first.close_segment()
        reading = self.first.closed_reading()
        if reading is None or not self._asks_whisper(reading):
            return
        self._drop_early()
        turn, until = self.second.early_turn(), time.monotonic() + EARLY_WAIT_S
        self._early = turn, self.engine.early_decoder.submit(self._early_whisper, turn, until)

    def pending_decode(self) -> Future[AsrResult | None] | None:
        """Whisper's early decode of this turn while it is still running on its own thread: the call awaits it
        (no ASR pool thread waits) before `decoded_final`, whose reading it is, or, when the caller spoke after
        it, before the final, which needs its slot."""
        early = self._early
        return early[1] if early is not None and not early[1].done() else None

    def final(self) -> AsrResult:
        first = self.first.final()
        early, self._early = self._early, None
        if not self._asks_whisper(first):
            self._drop(early)
            self.second.reset()
            return first
        second: AsrResult | None = None
        if early is not None and early[0].holds_turn_of(self.second):  # nothing came after the early decode
            second = early[1].result()  # None: no slot came free in time
        elif early is not None:  # the caller spoke after it: a stale decode still running holds the slot needed now
            self._drop(early)
            wait([early[1]])
        if second is None:
            second = self._whisper(self.second)
        self.second.reset()
        if second is not None and second.text:  # snapped onto a phrase
            log.info("second opinion: Vosk rejected the turn, Whisper heard %r (%.2f)", second.text, second.confidence)
            return second
        return first

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

    def _early_whisper(self, turn: EarlyTurn, until: float) -> AsrResult | None:
        """On the early decoder's thread: `_whisper`, unless it is past `until` (time.monotonic) already,
        having waited in this thread's queue behind other calls' decodes."""
        wait_s = until - time.monotonic()
        if wait_s <= 0:
            self.engine.skipped += 1
            return None
        return self._whisper(turn, wait_s=wait_s)

    def _whisper(self, turn: WhisperRecognizer | EarlyTurn, *, wait_s: float = 0.0) -> AsrResult | None:
        """Whisper's reading of `turn`, or None when every slot stays taken for `wait_s`."""
        engine = self.engine
        if not engine.slots.acquire(timeout=wait_s):
            engine.skipped += 1
            log.debug("second opinion skipped: %d Whisper decodes already running", engine.slot_count)
            return None
        try:
            return engine.second.final_batch([turn])[0]  # snapped to the same phrases, or rejected ("")
        finally:
            engine.slots.release()

    def reset(self) -> None:
        self.first.reset()
        self.second.reset()
        self._drop_early()

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
