"""What a call needs from the process-wide services, as Protocols mypy checks.

`ivr.services.CallServices` reaches call records, prompt audio and metrics only through these, so
a renamed method or argument is a type error, not a silently dropped record. The implementations:
`ivr.storage.records.CallStore`, `ivr.tts.cache.PromptCache`, `ivr.metrics.IvrMetrics`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ivr.storage.records import TurnRecord


class RecordStore(Protocol):
    """Where call records go: a call opened, its turns and events, closed; `close` keeps what is left."""

    def open_call(self, call_id: str | None = None, *, lang: str = "", flow: str = "", caller: str = "",
                  channel: str = "", engine: str = "", node: str = "", started_at: datetime | None = None) -> str: ...

    def add_turn(self, call_id: str, turn: TurnRecord) -> None: ...

    def add_event(self, call_id: str, kind: str, data: dict[str, Any] | None = None, *,
                  at: datetime | None = None) -> None: ...

    def close_call(self, call_id: str, *, status: str = ..., route: str = "", handoff_reason: str = "",
                   intent: str | None = None, survey_score: int | None = None,
                   ended_at: datetime | None = None) -> None: ...

    def close(self, flush_timeout_s: float = ...) -> bool: ...


class PromptSource(Protocol):
    """8 kHz slin audio of a prompt's full text (recorded, cached or synthesized)."""

    async def get(self, text: str, lang: str) -> bytes: ...

    def prompt_langs(self) -> list[str]: ...

    def fixed_sources(self, lang: str) -> dict[str, str]: ...  # prompt id -> text, loaded ahead by warm-up

    def close(self) -> None: ...


class MetricsSink(Protocol):
    """Counters and timings of calls, turns, hand-offs, errors, barge-ins and knowledge-base answers."""

    def call_started(self) -> None: ...

    def call_ended(self, route: str = "", outcome: str = ...) -> None: ...

    def observe_turn(self, latency_s: float | None = None, *, asr_s: float | None = None,
                     nlu_s: float | None = None, dialog_s: float | None = None, tts_s: float | None = None,
                     confidence: float | None = None) -> None: ...

    def handoff(self, reason: str) -> None: ...

    def error(self, kind: str) -> None: ...

    def barge_in(self) -> None: ...

    def kb_answer(self, entry: str) -> None: ...


class CallIdentity(Protocol):
    """What a call record is opened with (a `CallSession` has these)."""

    @property
    def call_id(self) -> str: ...

    @property
    def lang(self) -> str: ...

    @property
    def flow_name(self) -> str: ...

    @property
    def caller_id(self) -> str: ...

    @property
    def channel(self) -> str: ...

    @property
    def engine_name(self) -> str: ...
