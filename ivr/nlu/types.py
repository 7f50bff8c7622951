"""What understanding an utterance yields; shared by NLU, dialog and records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NONE_INTENT = "none"  # out of scope: better than a wrong intent


@dataclass(frozen=True)
class Understanding:
    text: str
    intent: str  # an intent name from the grammar, or NONE_INTENT
    score: float  # 0..1
    entities: dict[str, Any] = field(default_factory=dict)
    # the runner-up intents, best first, (intent, score): for confirmation and reports
    ranking: tuple[tuple[str, float], ...] = ()
    # the two best intents when they were too close to choose: the dialog asks "X or Y?"
    ambiguous: tuple[str, ...] = ()
    # the readings the decision was made from (ASR n-best as (text, confidence)); `text` is the chosen one
    nbest: tuple[tuple[str, float], ...] = ()
