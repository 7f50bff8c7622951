"""`ivr chat`: a text conversation with a flow, hooks run for real against the demo subscriber DB.

Typed lines are what the caller says; `#5` or `dtmf 5` presses keys; an empty line is silence
(no input); `/quit` or end of input hangs up. Every prompt, NLU result and action is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from ivr.commands import NOW_HELP, iso_time
from ivr.dialog import events as ev

if TYPE_CHECKING:
    from ivr.dialog.registry import LoadedFlow
    from ivr.nlu.intents import Nlu

console = Console(highlight=False, soft_wrap=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chat", help="talk to a flow by typing (keys: #5 or 'dtmf 5'; empty line: silence)")
    p.add_argument("--lang", default=None, help="en, ru or ko (default: settings default_lang)")
    p.add_argument("--flow", default="support", help="flow name (default: support)")
    p.add_argument("--caller", default="", help="caller id (unknown numbers get the demo subscriber)")
    p.add_argument("--now", type=iso_time, default=None, help=NOW_HELP)
    p.add_argument("--db", default=None, help="demo operator DB (default: <data dir>/demo_operator.sqlite3)")
    p.add_argument("--quiet", action="store_true", help="print only what the assistant says and does")
    p.set_defaults(func=run)


@dataclass
class ChatResult:
    """How a chat ended, with everything the assistant did (for tests and scripts)."""

    outcome: str = "hangup"  # transfer | hangup | caller_hung_up
    reason: str = ""
    said: list[str] = field(default_factory=list)
    actions: list[ev.Action] = field(default_factory=list)
    survey: int | None = None


def parse_input(line: str) -> tuple[str, str]:
    """One typed line -> ("speech", text) | ("dtmf", digits) | ("silence", "") | ("quit", "")."""
    text = line.strip()
    if not text:
        return "silence", ""
    if text in ("/quit", "/exit", "/hangup"):
        return "quit", ""
    lowered = text.lower()
    for prefix in ("dtmf ", "#", "key ", "keys "):
        if lowered.startswith(prefix):
            digits = "".join(ch for ch in text[len(prefix):] if ch in "0123456789*#")
            if digits:
                return "dtmf", digits
    return "speech", text


class ChatAdapter:
    """How `ivr chat` performs the dialog's actions (see ivr/dialog/driver.py): prompts are printed,
    typed lines go through the real NLU, hooks run for real."""

    def __init__(self, nlu: Nlu, lines: Iterator[str], context: dict[str, Any], show: Callable[[str], None],
                 verbose: bool, result: ChatResult) -> None:
        self.nlu = nlu
        self.lines = lines
        self.context = context
        self.show = show
        self.verbose = verbose
        self.result = result
        self.hung_up = ""  # why the caller left: "end of input" or "quit"

    async def speak(self, action: ev.Say, next_listen: ev.Listen | None) -> None:
        self.result.said.append(action.text)
        self.show(f"[bold green]assistant[/] {escape(action.text)}")

    async def listen(self, action: ev.Listen) -> ev.Event:
        if self.verbose:
            keys = " ".join(f"{k}={v}" for k, v in action.dtmf.items())
            self.show(f"[dim]  listening in {action.state}; keys: {keys or '-'}[/]")
        line = next(self.lines, None)
        if line is None:
            self.hung_up = "end of input"
            return ev.HungUp()
        kind, value = parse_input(line)
        if kind == "quit":
            self.hung_up = "quit"
            return ev.HungUp()
        if kind == "silence":
            self.show("[blue]caller   [/] [dim](silence)[/]")
            return ev.NoInput()
        if kind == "dtmf":
            self.show(f"[blue]caller   [/] {escape(f'[keys {value}]')}")
            return ev.Pressed(value)
        understanding = self.nlu.understand(value, expected=action.expected_intents or None)
        self.show(f"[blue]caller   [/] {escape(value)}")
        if self.verbose:
            ents = f" {understanding.entities}" if understanding.entities else ""
            self.show(f"[dim]  → {understanding.intent} ({understanding.score:.2f}){escape(ents)}[/]")
        return ev.Heard(understanding)

    def answered_in(self, dialog_ms: float) -> None:
        pass  # a typed conversation keeps no timings

    async def run_hook(self, action: ev.RunHook) -> ev.HookDone:
        from ivr.dialog.hooks import run_hook

        done = run_hook(action, self.context)
        if self.verbose:
            outcome = done.error or done.result.get("outcome", "ok")
            self.show(f"[dim]  hook {action.name.split('.')[-1]} -> {escape(str(outcome))}[/]")
        return done

    def survey_score(self, action: ev.RecordSurvey) -> None:
        self.result.survey = action.score
        self.show(f"[magenta]  survey recorded: {action.score}/5[/]")

    def knowledge_answer(self, action: ev.AnsweredFromKnowledge) -> None:
        if self.verbose:
            self.show(f"[dim]  answered from the knowledge base: {action.entry} (topic {action.topic})[/]")


def converse(loaded: LoadedFlow, lines: Iterator[str], context: dict[str, Any], caller_id: str = "",
             now_iso: str = "", show: Callable[[str], None] | None = None, verbose: bool = True) -> ChatResult:
    """Drive one conversation of `loaded` with typed `lines`, by the driver live calls use; pure apart
    from hooks."""
    from ivr.dialog.driver import ConversationDriver  # here: `ivr --help` does not load the dialog stack

    show = show or (lambda s: None)
    result = ChatResult()
    context = {**context, "caller_id": caller_id, "lang": loaded.runtime.lang}
    adapter = ChatAdapter(loaded.nlu, lines, context, show, verbose, result)
    driver = ConversationDriver(loaded.runtime, adapter, trace=result.actions.append)
    ending = asyncio.run(driver.run(caller_id=caller_id, now_iso=now_iso))
    if ending.transfer is not None:
        result.outcome, result.reason = "transfer", ending.reason
        show(f"[bold yellow]→ transfer to queue {ending.transfer.route}[/] (reason: {ending.reason})")
        if verbose:
            show(f"[dim]  summary: {escape(ending.transfer.summary)}[/]")
    elif ending.kind == "caller_hung_up":
        result.outcome, result.reason = "caller_hung_up", adapter.hung_up
    elif ending.kind == "hangup":
        result.outcome, result.reason = "hangup", ending.reason
        show(f"[bold yellow]→ hang up[/] ({ending.reason})")
    else:
        result.outcome, result.reason = "hangup", "flow_ended"
    return result


def _lines() -> Iterator[str]:
    interactive = sys.stdin.isatty()
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":
            return
        yield line.rstrip("\n")


def run(args: argparse.Namespace) -> int:
    from ivr.config import load_settings
    from ivr.demo_operator import hook_context_for
    from ivr.dialog.registry import FlowRegistry

    settings = load_settings(args.config)
    lang = args.lang or settings.default_lang
    loaded = FlowRegistry(settings).get(args.flow, lang)
    context = hook_context_for(settings, args.db)
    now_iso = settings.call_start_iso(args.now)
    if sys.stdin.isatty():
        console.print(f"[bold]ivr chat[/]: flow [cyan]{args.flow}[/] ({lang}), caller {args.caller or '(unknown)'}, "
                      f"time {now_iso}")
        console.print("[dim]type what the caller says; #5 presses 5; empty line = silence; /quit hangs up[/]\n")
    result = converse(loaded, _lines(), context, caller_id=args.caller, now_iso=now_iso,
                      show=console.print, verbose=not args.quiet)
    return 0 if result.outcome in ("transfer", "hangup", "caller_hung_up") else 1
