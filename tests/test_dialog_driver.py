"""One conversation driver (ivr/dialog/driver.py) for every transport: a phone call on the simulated
line (CallSession: prompt audio, VAD, the record) and a typed chat (`ivr chat`, the dialog tests)
perform the same dialog the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.commands.chat import converse
from ivr.config import Settings
from ivr.demo_operator import hook_context_for
from ivr.dialog import events as ev
from ivr.dialog.registry import FlowRegistry
from ivr.services import CallServices
from ivr.storage.records import CallStore
from ivr.testing.replay import run_call
from ivr.testing.simline import CallerTurn

OPEN = "2026-11-23T10:00:00"  # a Monday morning
CALLER = "+15550100"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings()
    s.paths.data = tmp_path
    s.storage.url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    s.call_time = Settings.model_validate({"call_time": OPEN}).call_time
    return s


def _phone_call(settings: Settings, keys: list[str]) -> tuple[list[str], str, str, int | None]:
    """(what the assistant said, route, reason, survey score) of a call that presses `keys`, one a turn."""
    services = CallServices.create(settings)
    services._engines["en"] = None  # keys only: no speech model needed for this call
    said: list[str] = []
    try:
        result, _ = asyncio.run(run_call(services, "en", [CallerTurn(dtmf=k) for k in keys],
                                         caller_id=CALLER, on_say=said.append))
    finally:
        services.close()
    return said, result.route, result.reason, result.survey_score


@pytest.mark.parametrize("keys, ending", [
    (["1", "2", "5"], ("hangup", "completed")),  # balance, nothing else, survey 5
    (["1", "0"], ("transfer", "caller_asked")),  # balance, then the operator
])
def test_a_phone_call_and_a_chat_run_the_same_dialog(settings: Settings, tmp_path: Path, keys: list[str],
                                                     ending: tuple[str, str]) -> None:
    registry = FlowRegistry(settings)
    chat = converse(registry.get("support", "en"), iter(f"#{k}" for k in keys),
                    hook_context_for(settings, tmp_path / "chat_operator.sqlite3"), caller_id=CALLER, now_iso=OPEN)
    said, route, reason, survey = _phone_call(settings, keys)

    assert (chat.outcome, chat.reason) == ending
    assert said == chat.said  # every prompt, in order, from the same hooks on the same data
    assert reason == chat.reason and survey == chat.survey
    assert (route == "support") == (chat.outcome == "transfer")
    # the phone call performed the survey action the chat saw: it is in the call record
    store = CallStore(settings.storage_url)
    (call,) = store.calls()
    assert ("survey" in [e.kind for e in store.events(call.id)]) == any(isinstance(a, ev.RecordSurvey)
                                                                        for a in chat.actions)
