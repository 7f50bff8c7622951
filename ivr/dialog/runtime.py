"""The pure dialog runtime: (state, event) -> (state, actions). No I/O, no clocks, no NLU calls.

    runtime = DialogRuntime(flow, "en", nlu=nlu, prompts=prompts)
    step = runtime.start(CallStarted(caller_id="+15550001", now_iso="2026-11-23T10:00:00"))
    # perform step.actions (Say, Listen, RunHook, Transfer, Hangup, RecordSurvey) ...
    step = runtime.handle(step.state, Heard(nlu.understand("what is my balance")))

Knowledge-base intents (`faq.<id>`, ivr/nlu/knowledge.py) are answered in every state that listens,
unless the state routes that intent itself in `on`: the answer, then the entry's `next` state, a
hand-off (`transfer`), or by default the same state asking again.

The state is an immutable `DialogState`; a call keeps the runtime object it started with, so a hot
reload of the flow never changes a call in progress. The caller of the runtime applies NLU (Heard
carries an Understanding) and executes hooks (RunHook -> ivr.dialog.hooks.run_hook -> HookDone).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ivr.dialog.events import (
    Action,
    AnsweredFromKnowledge,
    CallStarted,
    Event,
    Hangup,
    Heard,
    HookDone,
    HungUp,
    Listen,
    NoInput,
    Pressed,
    RecordSurvey,
    RunHook,
    Say,
    Transfer,
)
from ivr.dialog.flow import BUILTIN_SLOTS, Flow, State, placeholders
from ivr.errors import ConfigError
from ivr.nlu.knowledge import FaqEntry, KnowledgeBase
from ivr.nlu.types import NONE_INTENT, Understanding

log = logging.getLogger(__name__)

MAX_HOPS = 50  # states entered without waiting for the caller: more means a loop in the flow
HISTORY_SIZE = 20
SURVEY_RANGE = range(1, 6)
GLOBAL_ONLY = ("yes", "no")  # answers are never global intents
# entities strong enough to fill a slot from an utterance that was about something else
# ("top up fifty dollars" in the main menu fills `amount`); a bare number is not
STRONG_ENTITIES = ("amount", "gigabytes", "phone", "tariff")
CHOICE_PROMPT = "did_you_mean"  # "Did you mean {choice_a} or {choice_b}?" when two intents are too close
PICK_MIN_SCORE = 0.2  # an answer to "X or Y?" below the threshold still picks one it ranks this high
LABEL_PREFIX = "label."  # prompt `label.<intent>`: how the question names an intent ("a top-up")


@dataclass(frozen=True)
class DialogState:
    """Where a call is in its flow. Immutable: every event yields a new one."""

    node: str
    slots: Mapping[str, Any] = field(default_factory=dict)
    no_input: int = 0  # consecutive silences in this node
    no_match: int = 0  # consecutive misunderstandings in this node
    last_said: tuple[Say, ...] = ()  # for "repeat"
    pending_hook: str = ""  # the node waiting for a HookDone
    dtmf_buffer: str = ""  # keys typed into a collect node so far
    open: bool = True  # business hours, decided at CallStarted
    intent: str = ""  # the caller's main request (first menu intent)
    last_text: str = ""  # the last thing the caller said
    history: tuple[str, ...] = ()  # nodes entered (and intents heard), newest last
    turns: int = 0
    ended: bool = False
    served: bool = False  # the caller has had what they called for (a `served` state, a KB answer)
    choices: tuple[str, ...] = ()  # "Did you mean X or Y?" was asked: the intents offered


@dataclass(frozen=True)
class Step:
    state: DialogState
    actions: tuple[Action, ...] = ()


class _Slots(dict):
    """format_map helper: unknown placeholders render as nothing rather than failing mid-call."""

    def __missing__(self, key: str) -> str:
        log.warning("prompt placeholder {%s} has no value", key)
        return ""


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class DialogRuntime:
    """Runs one flow in one language. Thread-safe and shareable: it holds no per-call state."""

    def __init__(self, flow: Flow, lang: str, nlu: Any | None = None,
                 prompts: Mapping[str, str] | None = None, knowledge: KnowledgeBase | None = None) -> None:
        self.flow = flow
        self.lang = lang
        self.nlu = nlu
        self.knowledge = knowledge or KnowledgeBase(lang=lang)
        if prompts is None:
            from ivr.config import PathSettings
            from ivr.dialog.flow import load_prompts

            prompts, _ = load_prompts(lang, PathSettings().prompts)
        self.prompts: Mapping[str, str] = prompts
        self._collect_slots = {s.collect.slot: (s.collect.entity or s.collect.slot)
                               for s in flow.states.values() if s.collect}

    # ---- public API ---------------------------------------------------------------------------
    def start(self, event: CallStarted) -> Step:
        """The first step of a call: greeting prompts and the first Listen (or a hook)."""
        now = _parse_time(event.now_iso)
        state = DialogState(
            node=self.flow.start,
            slots={"caller_id": event.caller_id, "lang": self.lang},
            open=self.flow.is_open(now),
        )
        return self._goto(state, self.flow.start, [])

    def handle(self, state: DialogState, event: Event) -> Step:
        """Advance the dialog by one event."""
        if state.ended:
            return Step(state)
        if isinstance(event, HungUp):
            return Step(replace(state, ended=True))
        if isinstance(event, HookDone):
            return self._hook_done(state, event)
        if state.pending_hook:  # caller input while a hook runs: nothing to do yet
            return Step(state)
        if isinstance(event, NoInput):
            return self._escalate(state, "no_input")
        if isinstance(event, Pressed):
            return self._pressed(state, event.digits)
        if isinstance(event, Heard):
            return self._heard(state, event.understanding)
        if isinstance(event, CallStarted):
            return self.start(event)
        raise TypeError(f"unknown dialog event {event!r}")

    def caller_served(self, state: DialogState) -> bool:
        """True once the caller has been served (a `served: true` state was reached, a knowledge-base
        answer was given, the post-call survey, the call ended): a hang-up now is a contained call,
        not an abandoned one (ivr/outcomes.py)."""
        return state.served or state.ended or self.flow.states[state.node].survey is not None

    def render(self, prompt_id: str, slots: Mapping[str, Any]) -> str:
        """The text of a prompt with its {placeholders} filled from `slots`."""
        try:
            text = self.prompts[prompt_id]
        except KeyError:
            raise ConfigError(f"prompt {prompt_id!r} is not in prompts/{self.lang}.yaml",
                              fix="add it, then run `ivr check`") from None
        return text.format_map(_Slots({k: _fmt(v) for k, v in slots.items()}))

    # ---- events -------------------------------------------------------------------------------
    def _heard(self, state: DialogState, u: Understanding) -> Step:
        node = self.flow.states[state.node]
        offered = state.choices
        state = replace(state, last_text=u.text, turns=state.turns + 1, choices=())
        intent = u.intent
        if offered:
            picked = _pick(offered, u)
            if picked is not None:
                return self._intent(state, picked, u.entities, u.text)
        elif u.ambiguous and self._can_ask(node, u.ambiguous):
            return self._ask_which(state, node, u.ambiguous)
        if node.collect is not None:
            value = self._slot_value(node.collect.entity or node.collect.slot, u.entities)
            if value is not None:
                return self._fill(state, node.collect.slot, value, node.collect.next)
        if node.survey is not None:
            score = u.entities.get("number")
            if isinstance(score, int) and score in SURVEY_RANGE:
                return self._survey(state, score, node)
        if node.confirm is not None and intent not in ("yes", "no"):
            answer = u.entities.get("yes_no")
            if answer and (intent == NONE_INTENT or intent not in self.flow.globals):
                intent = answer
        return self._intent(state, intent, u.entities, u.text)

    def _can_ask(self, node: State, pair: tuple[str, ...]) -> bool:
        """Whether this state can ask "X or Y?": a plain listening state that handles both intents,
        and the language has the question (prompt `did_you_mean`)."""
        if node.collect is not None or node.confirm is not None or node.survey is not None:
            return False
        if CHOICE_PROMPT not in self.prompts:
            return False
        handled = set(node.on) | (set(self.flow.globals) - set(GLOBAL_ONLY) if node.globals else set())
        return all(i in handled or self.knowledge.get(i) is not None for i in pair)

    def _ask_which(self, state: DialogState, node: State, pair: tuple[str, ...]) -> Step:
        """Ask which of two close intents was meant (once: an unclear answer is handled as usual)."""
        labels = {"choice_a": self._label(pair[0]), "choice_b": self._label(pair[1])}
        ask = Say(self.render(CHOICE_PROMPT, {**state.slots, **labels}), CHOICE_PROMPT)
        history = (*state.history, f"{state.node}:ambiguous")[-HISTORY_SIZE:]
        state = replace(state, choices=tuple(pair), history=history, last_said=(ask,))
        return Step(state, (ask, self._listen(state.node, node)))

    def _label(self, intent: str) -> str:
        """How an intent is named to the caller: prompt `label.<intent>`, else its name in words."""
        text = self.prompts.get(f"{LABEL_PREFIX}{intent}")
        if text:
            return text
        entry = self.knowledge.get(intent)
        name = entry.id if entry is not None else intent
        return name.replace("_", " ").replace(".", " ")

    def _pressed(self, state: DialogState, digits: str) -> Step:
        node = self.flow.states[state.node]
        state = replace(state, turns=state.turns + 1)
        if node.collect is not None:
            return self._collect_keys(state, node, digits)
        if node.survey is not None and digits[:1].isdigit() and int(digits[0]) in SURVEY_RANGE:
            return self._survey(state, int(digits[0]), node)
        keys = {**self.flow.global_dtmf, **node.dtmf_map()}
        intent = keys.get(digits[:1], NONE_INTENT)
        return self._intent(state, intent, {}, f"#{digits}")

    def _collect_keys(self, state: DialogState, node: State, digits: str) -> Step:
        """Keys typed into a collect node: buffered until # (or max_digits); * clears; a lone
        global key (0 = operator) works when nothing was typed yet."""
        assert node.collect is not None
        if not state.dtmf_buffer and digits[:1] in self.flow.global_dtmf and digits[:1] not in "0123456789#":
            return self._intent(state, self.flow.global_dtmf[digits[:1]], {}, f"#{digits}")
        if node.collect.keys and not state.dtmf_buffer:
            value = node.collect.keys.get(digits[:1])
            if value is None and digits[:1] in self.flow.global_dtmf:
                return self._intent(state, self.flow.global_dtmf[digits[:1]], {}, f"#{digits}")
            if value is None:
                return self._escalate(state, "no_match")
            return self._fill(state, node.collect.slot, value, node.collect.next)
        buffer = state.dtmf_buffer
        for key in digits:
            if key == "*":
                buffer = ""
            elif key == "#":
                return self._typed(replace(state, dtmf_buffer=""), node, buffer)
            else:
                buffer += key
                if len(buffer) >= node.collect.max_digits:
                    return self._typed(replace(state, dtmf_buffer=""), node, buffer)
        return Step(replace(state, dtmf_buffer=buffer), (self._listen(state.node, node),))

    def _typed(self, state: DialogState, node: State, digits: str) -> Step:
        assert node.collect is not None
        if not digits:
            return self._escalate(state, "no_match")
        entity = node.collect.entity or node.collect.slot
        value: Any = digits if entity == "phone" else int(digits)
        return self._fill(state, node.collect.slot, value, node.collect.next)

    def _intent(self, state: DialogState, intent: str, entities: Mapping[str, Any], text: str) -> Step:
        node = self.flow.states[state.node]
        history = (*state.history, f"{state.node}:{intent}")[-HISTORY_SIZE:]
        state = replace(state, history=history)
        target: str | None = None
        if node.confirm is not None and intent in ("yes", "no"):
            target = node.confirm.yes if intent == "yes" else node.confirm.no
        elif intent in node.on:
            target = node.on[intent]
            if node.kind == "menu" and not state.intent and intent not in self.flow.globals \
                    and intent not in GLOBAL_ONLY:
                state = replace(state, intent=intent)
        elif node.globals and intent in self.flow.globals and intent not in GLOBAL_ONLY:
            target = self.flow.globals[intent]
            if intent == "operator" and not state.intent:
                state = replace(state, intent=intent)
            if target == "@repeat":
                return self._repeat(state, node)
            if target == "@help":
                return self._help(state, node)
            if target == "@back":
                return self._back(state)
        if target is None:
            entry = self.knowledge.get(intent)
            if entry is not None:
                return self._answer(state, node, entry)
            return self._escalate(state, "no_match")
        slots = dict(state.slots)
        slots["intent"] = state.intent
        for slot, entity in self._collect_slots.items():
            if entity in STRONG_ENTITIES and entity in entities:
                slots[slot] = entities[entity]
        return self._goto(replace(state, slots=slots), target, [])

    def _answer(self, state: DialogState, node: State, entry: FaqEntry) -> Step:
        """Say a knowledge-base answer, then go where the entry says: its `next` state, the live line
        (`transfer`), or by default back to what the caller was doing (this state asks again)."""
        answer = Say(entry.answer, entry.prompt_id)
        actions: list[Action] = [AnsweredFromKnowledge(entry.id, entry.topic, state.node), answer]
        # an answered question is a successful turn; the first one is the call's main request
        state = replace(state, no_match=0, no_input=0, intent=state.intent or entry.intent, served=True)
        if entry.transfer:
            return self._transfer(replace(state, last_said=(answer,)), entry.transfer, actions)
        if entry.next:
            return self._goto(state, entry.next, actions)
        again = [Say(self.render(pid, state.slots), pid) for pid in (node.reprompt or node.say)]
        return Step(replace(state, last_said=(answer, *again)), (*actions, *again, self._listen(state.node, node)))

    def _hook_done(self, state: DialogState, done: HookDone) -> Step:
        if not state.pending_hook:
            log.warning("HookDone %s arrived with no hook pending: ignored", done.name)
            return Step(state)
        node = self.flow.states[state.pending_hook]
        state = replace(state, pending_hook="")
        if done.error is not None:
            log.warning("hook %s failed: %s", done.name, done.error)
            slots = {**state.slots, "hook_error": done.error}
            state = replace(state, slots=slots)
            if node.on_error:
                return self._goto(state, node.on_error, [])
            return self._transfer(state, "error", [Say(self.render(self.flow.prompts.transfer, slots),
                                                        self.flow.prompts.transfer)])
        slots = {**state.slots, **done.result}
        state = replace(state, slots=slots)
        outcome = str(done.result.get("outcome", ""))
        target = node.on_result.get(outcome) or node.next
        if target is None:
            return self._transfer(state, "error", [])
        return self._goto(state, target, [])

    # ---- transitions --------------------------------------------------------------------------
    def _fill(self, state: DialogState, slot: str, value: Any, target: str) -> Step:
        return self._goto(replace(state, slots={**state.slots, slot: value}, dtmf_buffer=""), target, [])

    def _survey(self, state: DialogState, score: int, node: State) -> Step:
        assert node.survey is not None
        state = replace(state, slots={**state.slots, "survey_score": score})
        return self._goto(state, node.survey.next, [RecordSurvey(score)])

    def _goto(self, state: DialogState, name: str, actions: list[Action]) -> Step:
        """Enter `name` and run through non-listening nodes until the call waits for something."""
        said: list[Say] = []
        for _ in range(MAX_HOPS):
            node = self.flow.states[name]
            if node.when_closed and not state.open:
                name = node.when_closed
                continue
            history = state.history if state.history[-1:] == (name,) else (*state.history, name)
            state = replace(state, node=name, no_input=0, no_match=0, dtmf_buffer="",
                            history=history[-HISTORY_SIZE:])
            if node.served:
                state = replace(state, served=True)
            if node.set:
                state = replace(state, slots={**state.slots, **node.set})
            if node.collect is not None and state.slots.get(node.collect.slot) not in (None, ""):
                name = node.collect.next  # already known (said along with the request): do not ask again
                continue
            says = [Say(self.render(pid, state.slots), pid) for pid in node.say]
            said += says
            actions += says
            if node.hook is not None:
                actions.append(RunHook(node.hook.call, self._hook_params(node, state)))
                return Step(replace(state, pending_hook=name, last_said=tuple(said) or state.last_said),
                            tuple(actions))
            if node.transfer is not None:
                return self._transfer(replace(state, last_said=tuple(said) or state.last_said),
                                      node.transfer.reason, actions, route=node.transfer.route)
            if node.hangup is not None:
                actions.append(Hangup(node.hangup))
                return Step(replace(state, ended=True), tuple(actions))
            if node.listens:
                actions.append(self._listen(name, node))
                return Step(replace(state, last_said=tuple(said) or state.last_said), tuple(actions))
            assert node.next is not None
            name = node.next
        log.error("flow %s: more than %d states without waiting for the caller (a loop?) at %s",
                  self.flow.flow, MAX_HOPS, name)
        return self._transfer(state, "error", actions)

    def _listen(self, name: str, node: State) -> Listen:
        expected = list(node.on)
        if node.confirm is not None:
            expected += ["yes", "no"]
        globals_ = [i for i in self.flow.globals if i not in expected] if node.globals else []
        globals_ += list(self.knowledge.entries)  # answered in every listening state
        phrases: tuple[str, ...] | None = None
        if self.nlu is not None and self.nlu.grammar.asr_phrases:
            if node.collect is not None or node.survey is not None:
                slot = "survey" if node.survey is not None else (node.collect.entity or node.collect.slot)  # type: ignore[union-attr]
                values = self.nlu.slot_phrases(slot)
                # no phrase list for this slot: free-form recognition (numbers, phone numbers)
                phrases = tuple(dict.fromkeys([*values, *self.nlu.phrases(expected + globals_)])) if values else None
            else:
                phrases = tuple(self.nlu.phrases(expected + globals_))
        hints = None
        if self.nlu is not None and phrases is None and self.nlu.grammar.asr_hints \
                and not self.nlu.grammar.asr_phrases:
            hints = tuple(self.nlu.domain_words(expected)) or None
        keys = {**(self.flow.global_dtmf if node.globals else {}), **node.dtmf_map()}
        return Listen(state=name, phrases=phrases, hints=hints, expected_intents=tuple(expected), dtmf=keys,
                      endpoint=dict(node.endpoint))

    def _escalate(self, state: DialogState, kind: str) -> Step:
        """No input or no match: re-prompt, then re-prompt with the keys, then the live line."""
        node = self.flow.states[state.node]
        count = (state.no_input if kind == "no_input" else state.no_match) + 1
        steps = getattr(node.escalation or self.flow.escalation, kind)
        step = steps[min(count, len(steps)) - 1]
        state = replace(state, **{kind: count}, dtmf_buffer="")  # type: ignore[arg-type]
        history = (*state.history, f"{state.node}:{kind}")[-HISTORY_SIZE:]
        state = replace(state, history=history)
        prefix_id = getattr(self.flow.prompts, kind)
        actions: list[Action] = []
        if step == "transfer":
            pid = self.flow.prompts.transfer
            return self._transfer(state, kind, [Say(self.render(pid, state.slots), pid)])
        if step == "hangup":
            pid = self.flow.prompts.goodbye
            return Step(replace(state, ended=True), (Say(self.render(pid, state.slots), pid), Hangup(kind)))
        ids = node.hint if step == "hint" and node.hint else (node.reprompt or node.say)
        actions.append(Say(self.render(prefix_id, state.slots), prefix_id))
        actions += [Say(self.render(pid, state.slots), pid) for pid in ids]
        actions.append(self._listen(state.node, node))
        return Step(state, tuple(actions))

    def _repeat(self, state: DialogState, node: State) -> Step:
        said = state.last_said or tuple(Say(self.render(p, state.slots), p) for p in node.say)
        return Step(state, (*said, self._listen(state.node, node)))

    def _help(self, state: DialogState, node: State) -> Step:
        ids = node.hint or node.reprompt or node.say
        return Step(state, (*[Say(self.render(p, state.slots), p) for p in ids], self._listen(state.node, node)))

    def _back(self, state: DialogState) -> Step:
        return self._goto(state, self.flow.start, [])

    def _transfer(self, state: DialogState, reason: str, actions: list[Action], route: str = "") -> Step:
        if not route:
            route = self.flow.route if state.open or not self.flow.after_hours_route else self.flow.after_hours_route
        slots = {k: v for k, v in state.slots.items() if k not in BUILTIN_SLOTS and v not in (None, "")}
        summary = self.summary(state, reason)
        variables = {"IVR_LANG": self.lang, "IVR_FLOW": self.flow.flow, "IVR_LAST_STATE": state.node}
        variables.update({f"IVR_SLOT_{k.upper()}": _fmt(v) for k, v in slots.items() if _is_plain(v)})
        actions = [*actions, Transfer(route=route, reason=reason, intent=state.intent, summary=summary,
                                      variables=variables)]
        return Step(replace(state, ended=True), tuple(actions))

    def summary(self, state: DialogState, reason: str) -> str:
        """One line for the agent who picks up: why, what the caller wanted, what we learned."""
        parts = [f"reason={reason}"]
        if state.intent:
            parts.append(f"intent={state.intent}")
        learned = [f"{k}={_fmt(v)}" for k, v in state.slots.items()
                   if k not in BUILTIN_SLOTS and v not in (None, "") and _is_plain(v)]
        if learned:
            parts.append("slots: " + ", ".join(learned))
        if state.last_text:
            parts.append(f"last said: {state.last_text!r}")
        parts.append("path: " + " > ".join(h for h in state.history if ":" not in h)[-200:])
        return "; ".join(parts)

    def _hook_params(self, node: State, state: DialogState) -> dict[str, Any]:
        assert node.hook is not None
        params: dict[str, Any] = {}
        for key, value in node.hook.params.items():
            if isinstance(value, str) and placeholders(value) == [value[1:-1]] and value.startswith("{"):
                params[key] = state.slots.get(value[1:-1])  # "{amount}" keeps the slot's type
            elif isinstance(value, str):
                params[key] = value.format_map(_Slots({k: _fmt(v) for k, v in state.slots.items()}))
            else:
                params[key] = value
        params.setdefault("caller_id", state.slots.get("caller_id", ""))
        params.setdefault("lang", self.lang)
        params["timeout_s"] = node.hook.timeout_s
        return params

    def _slot_value(self, entity: str, entities: Mapping[str, Any]) -> Any:
        if entity in entities:
            return entities[entity]
        if entity in ("amount", "gigabytes") and "number" in entities:
            return entities["number"]
        return None


def _pick(offered: tuple[str, ...], u: Understanding) -> str | None:
    """The offered intent the answer to "X or Y?" names: its intent, else one of the two if it ranks first
    (a short answer such as "sharing" scores low against every intent, but highest for the one it names),
    else the better ranked of the two when it is plausible on its own."""
    if u.intent in offered:
        return u.intent
    if u.ranking and u.ranking[0][0] in offered:
        return u.ranking[0][0]
    ranked = [(score, intent) for intent, score in u.ranking if intent in offered]
    if ranked and max(ranked)[0] >= PICK_MIN_SCORE:
        return max(ranked)[1]
    return None


def _is_plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _parse_time(now_iso: str) -> datetime | None:
    if not now_iso:
        return None
    try:
        return datetime.fromisoformat(now_iso)
    except ValueError:
        log.warning("CallStarted.now_iso %r is not ISO 8601: business hours ignored", now_iso)
        return None
