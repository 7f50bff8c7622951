"""What a call produced: a `TurnLog` per caller turn (with its latency split) and the `CallResult`.

Written by `ivr.call.CallSession`; read by the records and metrics (`ivr.services`), the testers
(`ivr.testing.replay`) and the CLI. Plain data, no behaviour beyond `handed_off`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TurnLog:
    """What happened in one caller turn, with the latency split the benchmark reports."""

    index: int
    prompt: str = ""  # what the assistant said before this turn
    transcript: str = ""
    intent: str = ""
    score: float = 0.0
    confidence: float = 0.0
    entities: dict[str, Any] = field(default_factory=dict)
    dtmf: str = ""
    no_input: bool = False
    barge_in: bool = False
    endpoint_ms: float = 0.0  # end of speech -> endpointer decision (audio time)
    asr_ms: float = 0.0  # endpointer decision -> ASR final
    asr_decode_ms: float = 0.0  # of asr_ms: the final's decode (batched: the batch's); the rest is queue
    nlu_ms: float = 0.0
    dialog_ms: float = 0.0
    tts_ms: float = 0.0  # prompt audio ready (cache hit or synthesis)
    latency_ms: float = 0.0  # endpointer decision -> first response frame handed to the line
    reply: str = ""


@dataclass
class CallResult:
    """How a call ended (route and reason), what it was about, and its turns."""

    call_id: str
    lang: str
    flow: str
    route: str  # queue name on hand-off, "completed" on a normal goodbye, "hangup" if the caller left
    reason: str
    intent: str = ""
    summary: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    turns: list[TurnLog] = field(default_factory=list)
    survey_score: int | None = None
    engine: str = ""
    answered: list[str] = field(default_factory=list)  # knowledge-base entries the caller heard, in order

    @property
    def handed_off(self) -> bool:
        return self.route not in ("completed", "hangup")
