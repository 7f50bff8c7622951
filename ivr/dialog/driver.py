"""The one loop that performs a dialog's actions, for every transport.

`DialogRuntime` is pure: (state, event) -> (state, actions). Something has to perform those actions
(speak, listen, run a hook, record a survey score, end the call) and feed the caller's answers back.
`ConversationDriver` is that loop, written once; what differs per transport is an adapter:

- `ivr.call.CallSession`: a phone call (AudioSocket, the simulated line of `ivr demo`/`ivr replay`,
  the sound device of `ivr talk`): prompts are played, speech goes through VAD, ASR and NLU;
- `ivr.commands.chat.ChatAdapter`: `ivr chat` and the dialog tests: typed lines through the NLU.

So the conversations the dialog tests prove are run by the same loop as live calls, and a new action
kind is one branch here plus one method per adapter (mypy names any adapter that lacks it).

The driver ends the conversation but does not act on the ending: it returns an `Ending` (a transfer,
the flow's hang-up, the flow running out of actions, or the caller hanging up), and the adapter's
owner turns it into its own result (a `CallResult`, a `ChatResult`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ivr.dialog import events as ev
from ivr.dialog.runtime import DialogRuntime, DialogState


class ConversationAdapter(Protocol):
    """What a transport does for the driver. Each method performs one kind of action."""

    async def speak(self, action: ev.Say, next_listen: ev.Listen | None) -> None:
        """Say a prompt. `next_listen` is the Listen queued after it, if any (its barge-in settings
        apply while the prompt plays)."""

    async def listen(self, action: ev.Listen) -> ev.Event:
        """Wait for the caller: Heard, Pressed, NoInput or HungUp."""

    def answered_in(self, dialog_ms: float) -> None:
        """The dialog took `dialog_ms` to decide on the caller's last input (for the turn's log)."""

    async def run_hook(self, action: ev.RunHook) -> ev.HookDone:
        """Run a flow hook (a backend call) and report its result."""

    def survey_score(self, action: ev.RecordSurvey) -> None:
        """The caller gave the post-call survey a score."""

    def knowledge_answer(self, action: ev.AnsweredFromKnowledge) -> None:
        """A knowledge-base entry was answered (its Say comes next)."""


EndKind = Literal["transfer", "hangup", "flow_ended", "caller_hung_up"]


@dataclass(frozen=True)
class Ending:
    """How a conversation ended.

    kind: "transfer" (`transfer` says where and why), "hangup" (the flow hung up: `reason`),
    "flow_ended" (no action left), "caller_hung_up" (`served`: the caller had been served, e.g. they
    heard their answer or hung up during the survey: a contained call, not an abandoned one).
    """

    kind: EndKind
    state: DialogState
    reason: str = ""
    transfer: ev.Transfer | None = None
    survey: int | None = None
    served: bool = False


class ConversationDriver:
    """Runs one conversation of `runtime` through `adapter` until it ends.

    `state` and `survey` stay readable when an adapter raises (a call that lost its voice hands
    off with the caller's main request). `trace`, if given, sees every action as it is performed.
    """

    def __init__(self, runtime: DialogRuntime, adapter: ConversationAdapter,
                 trace: Callable[[ev.Action], None] | None = None) -> None:
        self.runtime = runtime
        self.adapter = adapter
        self.trace = trace
        self.state: DialogState | None = None
        self.survey: int | None = None

    async def run(self, caller_id: str = "", now_iso: str = "") -> Ending:
        runtime, adapter = self.runtime, self.adapter
        step = runtime.start(ev.CallStarted(caller_id=caller_id, now_iso=now_iso))
        self.state, pending = step.state, collections.deque(step.actions)
        while pending:
            action = pending.popleft()
            if self.trace is not None:
                self.trace(action)
            if isinstance(action, ev.Say):
                await adapter.speak(action, next((a for a in pending if isinstance(a, ev.Listen)), None))
            elif isinstance(action, ev.Listen):
                event = await adapter.listen(action)
                if isinstance(event, ev.HungUp):
                    return self._end("caller_hung_up", served=runtime.caller_served(self.state))
                started = time.perf_counter()
                step = runtime.handle(self.state, event)
                adapter.answered_in((time.perf_counter() - started) * 1000.0)
                # the caller's input decides what comes next: what was queued after this Listen is dropped
                self.state, pending = step.state, collections.deque(step.actions)
            elif isinstance(action, ev.RunHook):
                done = await adapter.run_hook(action)
                step = runtime.handle(self.state, done)
                self.state = step.state
                pending.extend(step.actions)
            elif isinstance(action, ev.RecordSurvey):
                self.survey = action.score
                adapter.survey_score(action)
            elif isinstance(action, ev.AnsweredFromKnowledge):
                adapter.knowledge_answer(action)
            elif isinstance(action, ev.Transfer):
                return self._end("transfer", reason=action.reason, transfer=action)
            elif isinstance(action, ev.Hangup):
                return self._end("hangup", reason=action.reason)
        return self._end("flow_ended", reason="flow_ended")

    def _end(self, kind: EndKind, *, reason: str = "", transfer: ev.Transfer | None = None,
             served: bool = False) -> Ending:
        assert self.state is not None  # set by run() before any action
        return Ending(kind, self.state, reason=reason, transfer=transfer, survey=self.survey, served=served)
