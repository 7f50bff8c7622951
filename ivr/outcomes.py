"""How a call ended, as contact centres count it: the one place the rule lives.

- contained    served by the assistant without a human: the flow finished the call (goodbye,
               hang-up state), or the caller hung up after being served (heard their answer,
               was in the survey, was answered from the knowledge base). The headline number:
               containment rate = contained / ended calls.
- transferred  handed to the live line on purpose: the caller asked for a person, the flow or a
               business rule sent them, no-input/no-match escalation, the call grew too long.
- abandoned    the caller hung up before being served (during the greeting, mid-question, while
               the assistant was still working on the answer).
- failed       the assistant broke down: an unexpected error, no voice to speak with, the process
               stopped under the call, a node that crashed. Fail-open still took the caller to the
               live line or the push-button menu, but the automation did not do its job.

Records before 2026-12 said "completed" for contained and "error" for failed; both are still
accepted and read back under the new names.
"""

from __future__ import annotations

CONTAINED = "contained"
TRANSFERRED = "transferred"
ABANDONED = "abandoned"
FAILED = "failed"
OUTCOMES = (CONTAINED, TRANSFERRED, ABANDONED, FAILED)
LEGACY_NAMES = {"completed": CONTAINED, "error": FAILED}

# hand-off reasons that mean the assistant failed rather than chose to transfer
FAILURE_REASONS = frozenset({"error", "tts_failed", "cancelled", "bridge_lost"})
# CallResult.route values that are not queues (ivr.call.CallResult)
ROUTE_COMPLETED = "completed"
ROUTE_HANGUP = "hangup"


def outcome(route: str, reason: str) -> str:
    """The outcome of a call that ended with `route` (a queue, "completed" or "hangup") and `reason`."""
    if reason in FAILURE_REASONS:
        return FAILED
    if route == ROUTE_HANGUP:
        return ABANDONED
    if route == ROUTE_COMPLETED:
        return CONTAINED
    return TRANSFERRED


def normalize(status: str) -> str:
    """A stored status under its current name ("completed" -> "contained", "error" -> "failed")."""
    return LEGACY_NAMES.get(status, status)
