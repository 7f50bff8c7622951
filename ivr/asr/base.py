"""The ASR interface the call pipeline uses; engines (Vosk, Whisper) implement it.

Engines have a synchronous core: `Recognizer.accept` and `.final` may take tens of
milliseconds (Vosk) or hundreds (Whisper), so the pipeline runs them on the ASR pool's threads
(ivr/asr/scheduler.py) and the event loop never decodes. Optional hooks the call looks for:
`close_segment(answer_by)` (decode what was fed, 300 ms into the caller's silence; `answer_by`,
time.monotonic, is when the call wants the turn's answer), `decoded_final` (the final when nothing is
left to decode, cheap enough for the event loop; None otherwise), `pending_decode` (a
`concurrent.futures.Future` of a decode running off the ASR pool that `decoded_final` will use: the call
awaits it first, until the answer is due, then goes on to `final`, which must not wait for it) and
`early_turn` (Whisper: the turn so far, decoded while the endpointer still waits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Alternative:
    """One hypothesis of what was said, with a confidence in [0, 1]."""

    text: str
    confidence: float


@dataclass(frozen=True)
class AsrResult:
    """A partial or final recognition result.

    `alternatives` holds the n-best list, best first; `text`/`confidence` repeat the best one.
    An empty `text` on a final result means nothing in-grammar was heard (rejection).
    """

    text: str
    confidence: float
    is_final: bool
    alternatives: tuple[Alternative, ...] = ()
    words: tuple[tuple[str, float], ...] = field(default=())  # (word, confidence)
    engine: str = ""

    @property
    def nbest(self) -> tuple[Alternative, ...]:
        return self.alternatives or (Alternative(self.text, self.confidence),)


class Recognizer(Protocol):
    """One per call: feed 8 kHz slin, read partials, ask for the final at end of speech."""

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        """Restrict recognition to these phrases (None: free-form). Takes effect at the next turn."""

    def accept(self, pcm: bytes) -> AsrResult | None:
        """Feed audio; returns a partial result when the engine has a new one."""

    def final(self) -> AsrResult:
        """End of speech: the final result for everything fed since the last reset."""

    def reset(self) -> None:
        """Forget the audio of the current turn."""


class AsrEngine(Protocol):
    """Process-wide engine: loads its model once, hands out cheap per-call recognizers."""

    name: str
    streaming: bool  # True if partial results arrive while audio is fed

    def recognizer(self) -> Recognizer: ...
