"""One structured log line per call event, for operators (`ivr serve -v`; JSON lines with `--log-json`).

Events, on the `ivr.calls` logger at INFO:
  call.start    call_id, caller (last 4 digits), flow, lang, channel, engine
  call.turn     call_id, turn, transcript (redacted), intent, confidence, dtmf, no_input, barge_in,
                latency_ms (end of speech -> first audio out), asr_ms, reply (redacted)
  call.handoff  call_id, queue, reason, intent
  call.end      call_id, outcome (contained | transferred | abandoned | failed), route, reason,
                intent, turns, duration_s
Each record carries the fields in `record.call_event` (a dict) and a one-line human message; the
JSON formatter writes the fields as they are. Transcripts and replies go through ivr.redact
(cards, phone and account numbers, e-mails), the caller ID keeps its last 4 digits.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from ivr.outcomes import outcome
from ivr.protocols import CallIdentity
from ivr.redact import redact, redact_caller
from ivr.results import CallResult, TurnLog

log = logging.getLogger("ivr.calls")
_started: dict[str, float] = {}  # call_id -> monotonic start, for duration_s (popped at the end)


def _emit(event: str, message: str, fields: dict[str, Any]) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s", event, message, extra={"call_event": {"event": event, **fields}})


def call_started(call: CallIdentity) -> None:
    _started[call.call_id] = time.monotonic()
    fields = {"call_id": call.call_id, "caller": redact_caller(call.caller_id), "flow": call.flow_name,
              "lang": call.lang, "channel": call.channel, "engine": call.engine_name}
    _emit("call.start", " ".join(f"{k}={v}" for k, v in fields.items()), fields)


def turn(call: CallIdentity, turn: TurnLog) -> None:
    fields: dict[str, Any] = {
        "call_id": call.call_id, "turn": turn.index, "transcript": redact(turn.transcript), "intent": turn.intent,
        "confidence": round(turn.confidence, 3) if turn.transcript else None, "dtmf": turn.dtmf,
        "no_input": turn.no_input, "barge_in": turn.barge_in, "latency_ms": round(turn.latency_ms) or None,
        "asr_ms": round(turn.asr_ms) or None, "reply": redact(turn.reply),
    }
    heard = f"keys {turn.dtmf}" if turn.dtmf else "silence" if turn.no_input else repr(fields["transcript"])
    _emit("call.turn", f"call_id={call.call_id} turn={turn.index} heard={heard} intent={turn.intent} "
          f"latency_ms={fields['latency_ms']}", fields)


def call_ended(call: CallIdentity, result: CallResult) -> None:
    started = _started.pop(call.call_id, None)
    if result.handed_off:
        handoff = {"call_id": call.call_id, "queue": result.route, "reason": result.reason, "intent": result.intent}
        _emit("call.handoff", " ".join(f"{k}={v}" for k, v in handoff.items()), handoff)
    fields = {
        "call_id": call.call_id, "outcome": outcome(result.route, result.reason), "route": result.route,
        "reason": result.reason, "intent": result.intent, "turns": len(result.turns),
        "duration_s": round(time.monotonic() - started, 1) if started is not None else None,
    }
    _emit("call.end", " ".join(f"{k}={v}" for k, v in fields.items()), fields)


class JsonLines(logging.Formatter):
    """Every log record as one JSON object: time, level, logger, message, and a call event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        data.update(getattr(record, "call_event", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)
