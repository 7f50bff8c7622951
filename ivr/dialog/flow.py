"""Flow files: flows/<name>.yaml -> a validated `Flow` (pydantic), errors with file:line.

A flow is a state machine. Each state does, in order: say its prompts, then ONE of
- listen for intents (`on: {intent: next_state}`, with `dtmf: {digit: intent}` as the key fallback),
- confirm (`confirm: {yes: state, no: state}`; keys 1 = yes, 2 = no unless `dtmf` says otherwise),
- collect a slot (`collect: {slot: amount, entity: amount, next: state}`; keys type the value, # ends),
- run a hook (`hook: {call: python:pkg.mod.func | https://..., params: {...}}` then `next`,
  `on_result: {outcome: state}`, `on_error: state`),
- a survey (`survey: {next: state}`: CSAT 1-5 by voice or key),
- transfer to the live line (`transfer: {reason: caller_asked}`) or hang up (`hangup: completed`),
- or just go on (`next: state`).
A state marked `served: true` is where the caller has been served (e.g. "anything else?" after an
answer): a caller who hangs up from there on counts as contained, not abandoned.
See /work/notes/README_dialog.md ("Writing flows, grammars and prompts") for a worked example.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ivr.audio.vad import EndpointParams
from ivr.errors import ConfigError
from ivr.nlu.grammar import SourceMap, display_path, load_yaml, validation_errors

SPECIAL_TARGETS = ("@repeat", "@help", "@back")  # global-intent targets that are not states
EscalationStep = Literal["reprompt", "hint", "transfer", "hangup"]
DEFAULT_ESCALATION: list[EscalationStep] = ["reprompt", "hint", "transfer"]
DEFAULT_HOOK_TIMEOUT_S = 5.0
DTMF_KEYS = set("0123456789*#")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")
# slots every flow can use in prompts without collecting them
BUILTIN_SLOTS = ("caller_id", "lang", "intent", "dtmf_options")
# a slot becomes a {placeholder} and, at the hand-off, the channel variable IVR_SLOT_<NAME>, which
# the dialplan can only read back when the name is letters, digits and _
SLOT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _slot_names(names: list[str]) -> list[str]:
    bad = [name for name in names if not SLOT_NAME_RE.fullmatch(name)]
    if bad:
        raise ValueError(f"slot names are letters, digits and _ (they become IVR_SLOT_<NAME> on the channel), "
                         f"got {bad}: write e.g. {re.sub(r'[^A-Za-z0-9_]+', '_', bad[0])!r}")
    return names


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HookSpec(_Strict):
    call: str  # python:package.module.function  or  http(s)://host/path
    params: dict[str, Any] = Field(default_factory=dict)  # values may use {slot} placeholders
    returns: list[str] = Field(default_factory=list)  # result keys the flow's prompts may use
    timeout_s: float = Field(default=DEFAULT_HOOK_TIMEOUT_S, gt=0, le=60)

    _returns = field_validator("returns")(lambda cls, v: _slot_names(v))

    @field_validator("call")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not (value.startswith("python:") or value.startswith(("http://", "https://"))):
            raise ValueError("must start with python: (python:package.module.function) or http(s)://")
        if value.startswith("python:") and "." not in value[len("python:"):]:
            raise ValueError("python hooks are python:package.module.function")
        return value


class CollectSpec(_Strict):
    slot: str
    entity: str = ""  # entity that fills it (default: same name as the slot)
    next: str
    max_digits: int = Field(default=16, ge=1, le=32)  # keys: collected until # or this many
    keys: dict[str, str] = Field(default_factory=dict)  # one key picks a value: {"1": basic, ...}

    _slot = field_validator("slot")(lambda cls, v: _slot_names([v])[0])

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if k not in DTMF_KEYS]
        if bad:
            raise ValueError(f"keys must be one of 0-9 * #, got {bad}")
        return value


class ConfirmSpec(_Strict):
    yes: str
    no: str


class SurveySpec(_Strict):
    next: str


class TransferSpec(_Strict):
    reason: str = "caller_asked"
    route: str = ""  # queue; default: the flow's route (after hours: its after_hours_route)


class Escalation(_Strict):
    no_input: list[EscalationStep] = Field(default_factory=lambda: list(DEFAULT_ESCALATION), min_length=1)
    no_match: list[EscalationStep] = Field(default_factory=lambda: list(DEFAULT_ESCALATION), min_length=1)


class State(_Strict):
    say: list[str] = Field(default_factory=list)
    reprompt: list[str] = Field(default_factory=list)  # said on the 1st re-prompt (default: `say`)
    hint: list[str] = Field(default_factory=list)  # said on the 2nd re-prompt: the keys to press
    on: dict[str, str] = Field(default_factory=dict)  # intent -> state
    dtmf: dict[str, str] = Field(default_factory=dict)  # key -> intent
    confirm: ConfirmSpec | None = None
    collect: CollectSpec | None = None
    survey: SurveySpec | None = None
    hook: HookSpec | None = None
    on_result: dict[str, str] = Field(default_factory=dict)  # hook result["outcome"] -> state
    on_error: str | None = None
    transfer: TransferSpec | None = None
    hangup: str | None = None  # reason
    next: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)  # slots set on entry
    when_closed: str | None = None  # outside business hours go there instead
    globals: bool = True  # global intents (operator, repeat, help, goodbye) work here
    # endpointing overrides while listening in this state, e.g. {end_silence_ms: 1200} for a phone number;
    # names and defaults: ivr.audio.vad.EndpointParams
    endpoint: dict[str, float] = Field(default_factory=dict)
    escalation: Escalation | None = None  # this state's own no-input/no-match steps
    # reaching this state means the caller got what they called for (an answer, a done top-up): a
    # hang-up from here on is a contained call, not an abandoned one (ivr/outcomes.py)
    served: bool = False

    _say_list = field_validator("say", "reprompt", "hint", mode="before")(lambda cls, v: _as_list(v))

    @field_validator("set")
    @classmethod
    def _set_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        _slot_names(list(value))
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint_names(cls, value: dict[str, float]) -> dict[str, float]:
        try:
            EndpointParams().with_overrides(value)  # unknown names and bad values fail here, not mid-call
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("dtmf")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if k not in DTMF_KEYS]
        if bad:
            raise ValueError(f"DTMF keys must be one of 0-9 * #, got {bad}")
        return value

    @model_validator(mode="after")
    def _one_thing(self) -> State:
        doing = [name for name in ("confirm", "collect", "survey", "hook", "transfer", "hangup")
                 if getattr(self, name) is not None]
        if len(doing) > 1:
            raise ValueError(f"a state does one thing, this one has {' and '.join(doing)}: split it in two")
        if doing and doing[0] in ("transfer", "hangup") and (self.on or self.next):
            raise ValueError(f"a {doing[0]} state ends the dialog: remove `on`/`next`")
        if self.hook is None and (self.on_result or self.on_error):
            raise ValueError("on_result/on_error only make sense with `hook`")
        if not doing and not self.on and not self.next:
            raise ValueError("the state leads nowhere: add `on`, `next`, or an action (collect, confirm, ...)")
        return self

    @property
    def kind(self) -> str:
        """menu | confirm | collect | survey | hook | transfer | hangup | say."""
        for name in ("confirm", "collect", "survey", "hook", "transfer", "hangup"):
            if getattr(self, name) is not None:
                return name
        return "menu" if self.on else "say"

    @property
    def listens(self) -> bool:
        return self.kind in ("menu", "confirm", "collect", "survey")

    def dtmf_map(self) -> dict[str, str]:
        """Keys -> intents, with the confirm defaults (1 yes, 2 no)."""
        if self.confirm is not None:
            return {"1": "yes", "2": "no", **self.dtmf}
        return dict(self.dtmf)

    def targets(self) -> list[tuple[tuple[Any, ...], str]]:
        """(key path, target state) of every transition, for checks."""
        out: list[tuple[tuple[Any, ...], str]] = [(("on", k), v) for k, v in self.on.items()]
        out += [(("on_result", k), v) for k, v in self.on_result.items()]
        for key in ("next", "on_error", "when_closed"):
            if getattr(self, key):
                out.append(((key,), getattr(self, key)))
        if self.confirm:
            out += [(("confirm", "yes"), self.confirm.yes), (("confirm", "no"), self.confirm.no)]
        if self.collect:
            out.append((("collect", "next"), self.collect.next))
        if self.survey:
            out.append((("survey", "next"), self.survey.next))
        return out


class FlowPrompts(_Strict):
    """Prompt ids the runtime itself says."""

    no_input: str = "no_input"  # before a re-prompt after silence
    no_match: str = "no_match"  # before a re-prompt after something we did not understand
    transfer: str = "transferring"  # before an escalation transfer
    goodbye: str = "goodbye"  # before an escalation hang-up


class BusinessHours(_Strict):
    """Opening hours by weekday: {"mon-fri": "08:00-20:00", "sat": "10:00-16:00", "sun": "closed"}.

    The hours are the contact centre's local time: with `timezone` (an IANA name such as
    Europe/Moscow) a call's time is converted into it first, so a server in UTC keeps Moscow hours.
    Without it, or for a time without an offset, the time is taken as it comes.
    """

    days: dict[str, str]
    holidays: list[date] = Field(default_factory=list)
    timezone: str = ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Moscow "
                                 "(install tzdata if the names are missing)") from None
        return value

    @field_validator("days")
    @classmethod
    def _parse(cls, value: dict[str, str]) -> dict[str, str]:
        for key, spec in value.items():
            _expand_days(key)
            _parse_hours(spec)
        return value

    def is_open(self, now: datetime) -> bool:
        if self.timezone and now.tzinfo is not None:
            now = now.astimezone(ZoneInfo(self.timezone))
        if now.date() in self.holidays:
            return False
        day = WEEKDAYS[now.weekday()]
        for key, spec in self.days.items():
            if day in _expand_days(key):
                hours = _parse_hours(spec)
                return any(start <= now.time() < end for start, end in hours)
        return False


def _expand_days(key: str) -> list[str]:
    out: list[str] = []
    for part in key.lower().split(","):
        part = part.strip()
        if "-" in part:
            a, b = (p.strip() for p in part.split("-", 1))
            if a not in WEEKDAYS or b not in WEEKDAYS:
                raise ValueError(f"unknown weekday in {key!r}: use mon tue wed thu fri sat sun")
            i, j = WEEKDAYS.index(a), WEEKDAYS.index(b)
            out += list(WEEKDAYS[i : j + 1]) if i <= j else list(WEEKDAYS[i:] + WEEKDAYS[: j + 1])
        elif part in WEEKDAYS:
            out.append(part)
        else:
            raise ValueError(f"unknown weekday {part!r}: use mon tue wed thu fri sat sun or ranges like mon-fri")
    return out


def _parse_hours(spec: str) -> list[tuple[time, time]]:
    if spec.strip().lower() == "closed":
        return []
    out = []
    for part in spec.split(","):
        try:
            a, b = part.strip().split("-")
            start, end = time.fromisoformat(a.strip()), time.fromisoformat(b.strip())
        except ValueError:
            raise ValueError(f"hours {spec!r}: write them as HH:MM-HH:MM[, HH:MM-HH:MM] or closed") from None
        out.append((start, end))
    return out


class Flow(_Strict):
    """A validated flow. `source` maps key paths to file:line for errors found later (ivr check)."""

    flow: str
    description: str = ""
    start: str
    route: str = "support"  # the live line (Asterisk queue)
    after_hours_route: str = ""  # where transfers go when closed (default: `route`)
    business_hours: BusinessHours | None = None
    globals: dict[str, str] = Field(default_factory=dict)  # intent -> state or @repeat/@help
    global_dtmf: dict[str, str] = Field(default_factory=dict)  # key -> intent, in every state
    escalation: Escalation = Field(default_factory=Escalation)
    prompts: FlowPrompts = Field(default_factory=FlowPrompts)
    states: dict[str, State]

    _source: SourceMap = PrivateAttr(default_factory=lambda: SourceMap("<memory>"))
    _path: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> SourceMap:
        return self._source

    @property
    def path(self) -> Path | None:
        return self._path

    def where(self, *key: Any) -> str:
        """file:line of a key path, e.g. flow.where("states", "menu", "on")."""
        return self._source.where(key)

    def is_open(self, now: datetime | None) -> bool:
        """Whether the live line is open at `now` (always, without business hours or a time)."""
        if self.business_hours is None or now is None:
            return True
        return self.business_hours.is_open(now)

    def slot_names(self) -> set[str]:
        """Every slot the flow can fill: collected, set, or returned by hooks (+ the built-ins)."""
        names = set(BUILTIN_SLOTS)
        for state in self.states.values():
            names.update(state.set)
            if state.collect:
                names.add(state.collect.slot)
            if state.hook:
                names.update(state.hook.returns)
        return names

    def prompt_ids(self) -> list[tuple[tuple[Any, ...], str]]:
        """(key path, prompt id) of every prompt the flow may say."""
        out: list[tuple[tuple[Any, ...], str]] = [
            (("prompts", name), pid) for name, pid in self.prompts.model_dump().items()
        ]
        for name, state in self.states.items():
            for key in ("say", "reprompt", "hint"):
                out += [(("states", name, key, i), pid) for i, pid in enumerate(getattr(state, key))]
        return out

    def intents_used(self) -> list[tuple[tuple[Any, ...], str]]:
        """(key path, intent) of every intent the flow listens for."""
        out: list[tuple[tuple[Any, ...], str]] = [(("globals", i), i) for i in self.globals]
        out += [(("global_dtmf", k), i) for k, i in self.global_dtmf.items()]
        for name, state in self.states.items():
            out += [(("states", name, "on", i), i) for i in state.on]
            out += [(("states", name, "dtmf", k), i) for k, i in state.dtmf.items()]
            if state.confirm:
                out += [(("states", name, "confirm"), "yes"), (("states", name, "confirm"), "no")]
        return out

    def structure_errors(self) -> list[str]:
        """Problems pydantic cannot see: unknown targets, menus without keys, unreachable states."""
        errors: list[str] = []
        states = self.states
        if self.start not in states:
            errors.append(f"{self.where('start')}: start state {self.start!r} does not exist")
        for intent, target in self.globals.items():
            if target not in states and target not in SPECIAL_TARGETS:
                errors.append(f"{self.where('globals', intent)}: global {intent!r} goes to unknown state {target!r}"
                              f" (or use one of {', '.join(SPECIAL_TARGETS)})")
        for name, state in states.items():
            for key, target in state.targets():
                if target not in states:
                    hint = _closest(target, states)
                    errors.append(f"{self.where('states', name, *key)}: state {name!r} goes to unknown state "
                                  f"{target!r}{hint}")
            if state.kind == "menu":
                if not state.dtmf:
                    errors.append(f"{self.where('states', name)}: menu state {name!r} has no `dtmf` keys: "
                                  "callers who cannot speak need a key for every choice")
            for digit, intent in state.dtmf.items():
                if intent not in state.on and intent not in self.globals and state.confirm is None:
                    errors.append(f"{self.where('states', name, 'dtmf', digit)}: key {digit} selects {intent!r}, "
                                  f"which state {name!r} does not handle (add it to `on`)")
            if state.listens and not state.say and not state.reprompt:
                errors.append(f"{self.where('states', name)}: state {name!r} listens without saying anything")
        reachable = self._reachable()
        for name in states:
            if name not in reachable:
                errors.append(f"{self.where('states', name)}: state {name!r} is never reached")
        return errors

    def structure_warnings(self) -> list[str]:
        """Legal but maybe unintended: menu choices that have no key (fine if another key leads to them)."""
        warnings = []
        collected = {s.collect.slot for s in self.states.values() if s.collect}
        for name, state in self.states.items():
            if state.hook is not None:
                for key in sorted(set(state.hook.returns) & collected):
                    warnings.append(f"{self.where('states', name, 'hook', 'returns')}: hook result {key!r} has the "
                                    f"name of a collected slot: it will fill that slot (and skip its question)")
            if state.kind == "menu" and state.dtmf:
                keyed = set(state.dtmf.values()) | set(self.global_dtmf.values())
                for intent in state.dtmf.values():  # a key that opens another menu offers its keys too
                    nxt = self.states.get(state.on.get(intent, ""))
                    if nxt is not None:
                        keyed |= set(nxt.dtmf.values())
                missing = sorted(set(state.on) - keyed)
                if missing:
                    warnings.append(f"{self.where('states', name, 'dtmf')}: menu state {name!r} has no key for "
                                    f"{', '.join(missing)} (fine if another key leads to them)")
        return warnings

    def _reachable(self) -> set[str]:
        seen: set[str] = set()
        todo = [self.start, *[t for t in self.globals.values() if t in self.states]]
        while todo:
            name = todo.pop()
            if name in seen or name not in self.states:
                continue
            seen.add(name)
            todo += [t for _, t in self.states[name].targets()]
        return seen


def _closest(name: str, options: Any) -> str:
    from rapidfuzz import process

    match = process.extractOne(name, list(options), score_cutoff=70)
    return f" (did you mean {match[0]!r}?)" if match else ""


def parse_flow(data: Any, source: SourceMap, path: Path | None = None) -> tuple[Flow | None, list[str]]:
    """Validate parsed YAML into a Flow; returns (flow or None, file:line errors)."""
    if not isinstance(data, dict):
        return None, [f"{source.where()}: a flow file is a mapping with `flow`, `start` and `states`"]
    if isinstance(data.get("states"), dict):
        for state in data["states"].values():
            if isinstance(state, dict):  # YAML null (`reprompt:` left empty) means "none"
                for key in ("say", "reprompt", "hint"):
                    if key in state and state[key] is None:
                        state[key] = []
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        return None, validation_errors(exc, source)
    flow._source = source
    flow._path = path
    return flow, flow.structure_errors()


def load_flow(path: Path | str) -> Flow:
    """Load and validate one flow file; raises ConfigError listing every problem with file:line."""
    path = Path(path)
    data, source = load_yaml(path, display_path(path))
    flow, errors = parse_flow(data, source, path)
    if errors or flow is None:
        raise ConfigError("\n".join(errors), fix="fix the flow file at the lines shown, then run `ivr check`")
    return flow


def flow_files(flows_dir: Path | str) -> list[Path]:
    return sorted(Path(flows_dir).glob("*.yaml"))


def placeholders(text: str) -> list[str]:
    """The {placeholder} names in a prompt text."""
    return PLACEHOLDER_RE.findall(text)


def prompts_file(lang: str, prompts_dir: Path | str) -> Path:
    return Path(prompts_dir) / f"{lang}.yaml"


def load_prompts(lang: str, prompts_dir: Path | str) -> tuple[dict[str, str], SourceMap]:
    """prompts/<lang>.yaml: a flat mapping `prompt_id: "text with {placeholders}"`."""
    path = prompts_file(lang, prompts_dir)
    if not path.exists():
        raise ConfigError(f"{display_path(path)}: no prompts for language {lang!r}",
                          fix="create it (copy prompts/en.yaml and translate the texts)")
    data, source = load_yaml(path, display_path(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source.where()}: prompts are a flat mapping `prompt_id: text`")
    bad = [key for key, text in data.items() if not isinstance(text, str)]
    if bad:
        raise ConfigError(f"{source.where((bad[0],))}: prompt {bad[0]!r} must be a text (quote it)",
                          fix="write `prompt_id: \"text\"`")
    return {str(k): v for k, v in data.items()}, source
