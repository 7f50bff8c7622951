"""Events into the pure dialog runtime and the actions it asks the call to perform.

The runtime is `(state, event) -> (state, actions)` with no I/O: the call session
(ivr/call.py), `ivr chat` and the tests all drive it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivr.nlu.types import Understanding


# ---- events -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallStarted:
    caller_id: str = ""
    now_iso: str = ""  # ISO 8601 local time of the call, for business hours


@dataclass(frozen=True)
class Heard:
    """The caller said something; `understanding.intent` may be "none"."""

    understanding: Understanding


@dataclass(frozen=True)
class Pressed:
    """DTMF digits (one or more)."""

    digits: str


@dataclass(frozen=True)
class NoInput:
    """The caller said nothing before the no-input timeout."""


@dataclass(frozen=True)
class HookDone:
    """Result of a RunHook action: `result` on success, `error` text on failure."""

    name: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class HungUp:
    pass


Event = CallStarted | Heard | Pressed | NoInput | HookDone | HungUp


# ---- actions ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Say:
    """Speak `text` (already rendered, variables filled). `prompt_id` names the flow prompt."""

    text: str
    prompt_id: str = ""
    barge_in: bool = True


@dataclass(frozen=True)
class Listen:
    """Wait for the caller: speech restricted to `phrases` (None: free-form) or DTMF.

    `endpoint` overrides the EndpointParams fields by name for this state (e.g. no_input_ms).
    `hints`: with free-form speech, the domain's words a recognizer that takes a prompt is biased towards
    (Whisper's initial_prompt), without restricting what it can hear.
    """

    state: str
    phrases: tuple[str, ...] | None = None
    hints: tuple[str, ...] | None = None
    expected_intents: tuple[str, ...] = ()
    dtmf: dict[str, str] = field(default_factory=dict)  # digit -> intent
    endpoint: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunHook:
    """Run a Python hook or HTTP webhook; answer with a HookDone event."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transfer:
    """Hand the call to the live line with what we learned (becomes IVR_* channel variables)."""

    route: str  # queue name
    reason: str  # why: caller_asked, no_match, no_input, after_hours, error, ...
    intent: str = ""
    summary: str = ""
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hangup:
    reason: str = "completed"


@dataclass(frozen=True)
class RecordSurvey:
    """The caller's CSAT answer (1-5)."""

    score: int


@dataclass(frozen=True)
class AnsweredFromKnowledge:
    """The assistant answered from the knowledge base (faq/<lang>/): for the call record and reports."""

    entry: str  # the entry id (its intent is faq.<entry>)
    topic: str = ""
    state: str = ""  # the state the caller asked in


Action = Say | Listen | RunHook | Transfer | Hangup | RecordSurvey | AnsweredFromKnowledge
