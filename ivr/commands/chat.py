"""`ivr chat`: a text conversation with a flow, hooks run for real against the demo subscriber DB.

Typed lines are what the caller says; `#5` or `dtmf 5` presses keys; an empty line is silence
(no input); `/quit` or end of input hangs up. Every prompt, NLU result and action is printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from ivr.commands import NOW_HELP, iso_time

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
    actions: list[Any] = field(default_factory=list)
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


def converse(loaded: Any, lines: Iterator[str], context: dict[str, Any], caller_id: str = "", now_iso: str = "",
             show: Callable[[str], None] | None = None, verbose: bool = True) -> ChatResult:
    """Drive one conversation of `loaded` (a LoadedFlow) with typed `lines`; pure apart from hooks."""
    from ivr.dialog import events as ev
    from ivr.dialog.hooks import run_hook

    show = show or (lambda s: None)
    result = ChatResult()
    runtime, nlu = loaded.runtime, loaded.nlu
    context = {**context, "caller_id": caller_id, "lang": runtime.lang}
    step = runtime.start(ev.CallStarted(caller_id=caller_id, now_iso=now_iso))
    state, pending = step.state, list(step.actions)
    while pending:
        action = pending.pop(0)
        result.actions.append(action)
        if isinstance(action, ev.Say):
            result.said.append(action.text)
            show(f"[bold green]assistant[/] {escape(action.text)}")
        elif isinstance(action, ev.RunHook):
            done = run_hook(action, context)
            if verbose:
                outcome = done.error or done.result.get("outcome", "ok")
                show(f"[dim]  hook {action.name.split('.')[-1]} -> {escape(str(outcome))}[/]")
            step = runtime.handle(state, done)
            state, pending = step.state, [*pending, *step.actions]
        elif isinstance(action, ev.AnsweredFromKnowledge):
            if verbose:
                show(f"[dim]  answered from the knowledge base: {action.entry} (topic {action.topic})[/]")
        elif isinstance(action, ev.RecordSurvey):
            result.survey = action.score
            show(f"[magenta]  survey recorded: {action.score}/5[/]")
        elif isinstance(action, ev.Transfer):
            result.outcome, result.reason = "transfer", action.reason
            show(f"[bold yellow]→ transfer to queue {action.route}[/] (reason: {action.reason})")
            if verbose:
                show(f"[dim]  summary: {escape(action.summary)}[/]")
            return result
        elif isinstance(action, ev.Hangup):
            result.outcome, result.reason = "hangup", action.reason
            show(f"[bold yellow]→ hang up[/] ({action.reason})")
            return result
        elif isinstance(action, ev.Listen):
            if verbose:
                keys = " ".join(f"{k}={v}" for k, v in action.dtmf.items())
                show(f"[dim]  listening in {action.state}; keys: {keys or '-'}[/]")
            line = next(lines, None)
            if line is None:
                result.outcome, result.reason = "caller_hung_up", "end of input"
                runtime.handle(state, ev.HungUp())
                return result
            kind, value = parse_input(line)
            if kind == "quit":
                result.outcome, result.reason = "caller_hung_up", "quit"
                return result
            if kind == "silence":
                event: Any = ev.NoInput()
                show("[blue]caller   [/] [dim](silence)[/]")
            elif kind == "dtmf":
                event = ev.Pressed(value)
                show(f"[blue]caller   [/] {escape(f'[keys {value}]')}")
            else:
                understanding = nlu.understand(value, expected=action.expected_intents or None)
                event = ev.Heard(understanding)
                show(f"[blue]caller   [/] {escape(value)}")
                if verbose:
                    ents = f" {understanding.entities}" if understanding.entities else ""
                    show(f"[dim]  → {understanding.intent} ({understanding.score:.2f}){escape(ents)}[/]")
            step = runtime.handle(state, event)
            state, pending = step.state, list(step.actions)
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
