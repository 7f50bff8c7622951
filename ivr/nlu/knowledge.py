"""The knowledge base: faq/<lang>/*.yaml -> validated answers the assistant gives in any listening state.

A file (several files of a language are merged; ids are unique across them):

    lang: en                    # optional; must match the folder
    entries:
      sim_replacement:          # the id: lower case, digits, underscores
        topic: sim              # optional group name (default: the file's name)
        questions:              # ways callers ask it; the more phrasings, the better it is matched
          - how much is a new sim card
          - i need a replacement sim
        answer: "A replacement SIM is free in any of our shops. Bring an ID."
        next: block_confirm     # optional: go to this flow state after the answer
        transfer: sim_help      # optional (instead of next): hand off to the live line with this reason

Each entry becomes the intent `faq.<id>` of its language (its questions are the intent's phrases,
so whatever matcher or classifier the NLU uses scores them with the flow's own intents), and the
prompt `faq.<id>` (its answer, rendered and cached like the flow's prompts). Without `next` or
`transfer` the caller hears the answer and then the state they were in asks again.

Errors name the file and line and say how to fix it (`ConfigError("faq/en/x.yaml:12: ...")`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ivr.errors import ConfigError
from ivr.nlu.grammar import Grammar, IntentSpec, SourceMap, Yaml12Loader, display_path, load_grammar, load_yaml
from ivr.nlu.text import normalize

FAQ_PREFIX = "faq."  # intent and prompt ids of knowledge-base entries: faq.<id>
ENTRY_ID = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_ANSWER_WORDS = 40  # about 15 s of speech: longer answers lose callers (a warning, not an error)
MIN_QUESTIONS = 3  # fewer phrasings match poorly (a warning)
PLACEHOLDER = re.compile(r"\{(\w*)\}")

# what to do about pydantic's messages, by (error type, field)
_FIXES = {
    ("missing", "answer"): "add `answer: \"...\"`: the one or two sentences the assistant says",
    ("missing", "questions"): "add `questions:` with the ways callers ask this (eight or more phrasings)",
    ("missing", "entries"): "put the entries under `entries:`",
    ("too_short", "questions"): "list at least one question (eight or more phrasings match best)",
    ("string_too_short", "answer"): "write the answer text",
    ("extra_forbidden", ""): "allowed keys: topic, questions, answer, next, transfer",
}


class EntrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str = ""
    questions: list[str] = Field(min_length=1)
    answer: str = Field(min_length=1)
    next: str | None = None  # a flow state to go to after the answer
    transfer: str | None = None  # hand off to the live line after the answer, with this reason

    @field_validator("answer")
    @classmethod
    def _fixed_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the answer is empty: write the text the assistant says")
        names = PLACEHOLDER.findall(value)
        if names:
            raise ValueError(f"answers are fixed texts, but this one has {{{names[0]}}}: write the value "
                             "out, or make it a flow state with a hook")
        return " ".join(value.split())

    @field_validator("questions")
    @classmethod
    def _no_empty_question(cls, value: list[str]) -> list[str]:
        for i, question in enumerate(value):
            if not normalize(question):
                raise ValueError(f"question {i + 1} is empty: remove it or write the question")
        return value


class KnowledgeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lang: str | None = None
    entries: dict[str, EntrySpec]


@dataclass(frozen=True)
class FaqEntry:
    """One answer of the knowledge base."""

    id: str
    topic: str
    questions: tuple[str, ...]
    answer: str
    next: str | None = None
    transfer: str | None = None
    where: str = ""  # file:line of the entry

    @property
    def intent(self) -> str:
        return FAQ_PREFIX + self.id

    @property
    def prompt_id(self) -> str:
        return FAQ_PREFIX + self.id


@dataclass
class KnowledgeBase:
    """All knowledge-base files of one language; `entries` by intent name (faq.<id>)."""

    lang: str
    entries: dict[str, FaqEntry] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # file:line of every question: (intent, question) -> location
    question_where: dict[tuple[str, str], str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, intent: str) -> FaqEntry | None:
        return self.entries.get(intent)

    def prompts(self) -> dict[str, str]:
        """prompt id -> answer text, to sit beside prompts/<lang>.yaml."""
        return {entry.prompt_id: entry.answer for entry in self.entries.values()}


def is_faq(intent: str) -> bool:
    return intent.startswith(FAQ_PREFIX)


def knowledge_files(lang: str, faq_dir: Path | str) -> list[Path]:
    return sorted((Path(faq_dir) / lang).glob("*.yaml"))


def load_knowledge(lang: str, faq_dir: Path | str | None, errors: list[str] | None = None) -> KnowledgeBase:
    """Load and merge faq/<lang>/*.yaml (no folder: an empty knowledge base).

    With `errors` given, problems are appended there (file:line: message) and loading goes on;
    without it the first problems raise ConfigError.
    """
    collect: list[str] = [] if errors is None else errors
    kb = KnowledgeBase(lang=lang)
    if faq_dir is None:
        return kb
    kb.files = knowledge_files(lang, faq_dir)
    seen_questions: dict[str, tuple[str, str]] = {}  # normalised question -> (intent, where)
    for path in kb.files:
        try:
            data, source = load_yaml(path, display_path(path))
        except ConfigError as exc:
            collect.append(str(exc).split(" (fix:")[0] + "; fix the syntax on that line")
            continue
        if not isinstance(data, dict):
            collect.append(f"{source.where()}: a knowledge-base file is a mapping with `entries:` "
                           "(see faq/en/ for examples)")
            continue
        collect.extend(_duplicate_keys(path, source))
        try:
            kfile = KnowledgeFile.model_validate(data)
        except ValidationError as exc:
            collect.extend(_explain(exc, source))
            continue
        if kfile.lang and kfile.lang != lang:
            collect.append(f"{source.where(('lang',))}: says lang {kfile.lang!r} but lives under {lang}/: "
                           f"move the file or fix `lang`")
        for entry_id, spec in kfile.entries.items():
            _add_entry(kb, path, source, entry_id, spec, seen_questions, collect)
    if errors is None and collect:
        raise ConfigError("\n".join(collect),
                          fix="fix the knowledge-base file at the lines shown, then run `ivr check`")
    return kb


def _add_entry(kb: KnowledgeBase, path: Path, source: SourceMap, entry_id: str, spec: EntrySpec,
               seen_questions: dict[str, tuple[str, str]], collect: list[str]) -> None:
    where = source.where(("entries", entry_id))
    if not ENTRY_ID.match(str(entry_id)):
        collect.append(f"{where}: entry id {entry_id!r} must be lower case letters, digits and underscores "
                       "(e.g. sim_replacement)")
        return
    if spec.next and spec.transfer:
        collect.append(f"{where}: entry {entry_id!r} has both `next` and `transfer`: after the answer the call "
                       "either goes to a state or to the live line; keep one")
        return
    intent = FAQ_PREFIX + entry_id
    if intent in kb.entries:
        collect.append(f"{where}: entry {entry_id!r} is already defined at {kb.entries[intent].where}: "
                       "rename one of them or merge their questions")
        return
    for i, question in enumerate(spec.questions):
        q_where = source.where(("entries", entry_id, "questions", i))
        key = normalize(question)
        other = seen_questions.get(key)
        if other is not None:
            owner, other_where = other
            what = "again" if owner == intent else f"by {owner} at {other_where}"
            collect.append(f"{q_where}: question {question!r} is asked {what}: a question must lead to one "
                           "answer; remove it here or there")
            continue
        seen_questions[key] = (intent, q_where)
        kb.question_where[(intent, question)] = q_where
    words = len(spec.answer.split())
    if words > MAX_ANSWER_WORDS:
        kb.warnings.append(f"{source.where(('entries', entry_id, 'answer'))}: answer of {entry_id!r} is {words} "
                           f"words; callers follow about {MAX_ANSWER_WORDS}: shorten it or point to the website")
    if len(spec.questions) < MIN_QUESTIONS:
        kb.warnings.append(f"{source.where(('entries', entry_id, 'questions'))}: entry {entry_id!r} has "
                           f"{len(spec.questions)} question(s): add more phrasings (eight or more match best)")
    kb.entries[intent] = FaqEntry(
        id=entry_id, topic=spec.topic or path.stem, questions=tuple(spec.questions), answer=spec.answer,
        next=spec.next, transfer=spec.transfer, where=where,
    )


def _explain(exc: ValidationError, source: SourceMap) -> list[str]:
    """pydantic errors as `file:line: where: message; fix` lines."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        name = str(loc[-1]) if loc else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {name!r} (typo?)"
            fix = _FIXES[("extra_forbidden", "")] if "entries" in loc[:1] and len(loc) == 3 else ""
        else:
            fix = _FIXES.get((err["type"], name), "")
        if err["type"] == "missing":
            msg = f"missing `{name}`"
        out.append(f"{source.where(loc)}: {where}: {msg}" + (f"; {fix}" if fix else ""))
    return out


def _duplicate_keys(path: Path, source: SourceMap) -> list[str]:
    """Entry ids written twice in one file: YAML keeps the last silently, so the first would vanish."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=Yaml12Loader)
    except (OSError, yaml.YAMLError):
        return []  # load_yaml reported it already
    if not isinstance(root, yaml.MappingNode):
        return []
    out = []
    for key, value in root.value:
        if key.value != "entries" or not isinstance(value, yaml.MappingNode):
            continue
        first: dict[str, int] = {}
        for entry_key, _ in value.value:
            line = entry_key.start_mark.line + 1
            if entry_key.value in first:
                out.append(f"{source.file}:{line}: entry {entry_key.value!r} is already defined at "
                           f"{source.file}:{first[entry_key.value]}: rename one of them or merge their questions")
            else:
                first[entry_key.value] = line
    return out


def add_to_grammar(grammar: Grammar, kb: KnowledgeBase, errors: list[str]) -> None:
    """Make every entry an intent `faq.<id>` of `grammar` (its questions are the phrases).

    A question that is also a phrase of one of the grammar's own intents is an error: the same
    words cannot both run the flow and be answered from the knowledge base.
    """
    phrases = {normalize(p): (intent, where) for (intent, p), where in grammar.phrase_where.items()}
    for intent, entry in kb.entries.items():
        if intent in grammar.intents:
            errors.append(f"{entry.where}: intent {intent!r} is already defined at {grammar.where[('intent', intent)]}")
            continue
        for question in entry.questions:
            clash = phrases.get(normalize(question))
            if clash is not None and not is_faq(clash[0]):
                errors.append(f"{kb.question_where.get((intent, question), entry.where)}: question {question!r} is "
                              f"also a phrase of intent {clash[0]!r} ({clash[1]}): remove it from one of them")
        grammar.intents[intent] = IntentSpec(phrases=list(entry.questions), description=entry.topic)
        grammar.where[("intent", intent)] = entry.where
        for question in entry.questions:
            grammar.phrase_where[(intent, question)] = kb.question_where.get((intent, question), entry.where)


def load_with_knowledge(lang: str, grammars_dir: Path | str, faq_dir: Path | str | None,
                        errors: list[str] | None = None) -> tuple[Grammar, KnowledgeBase]:
    """The grammar of `lang` with its knowledge base merged in (what the dialog's NLU matches against),
    and the knowledge base. With `errors` given, problems are appended there (file:line: message);
    without it they raise ConfigError.
    """
    collect: list[str] = [] if errors is None else errors
    before = len(collect)
    grammar = load_grammar(lang, grammars_dir, collect)
    kb = load_knowledge(lang, faq_dir, collect)
    if len(collect) == before:
        add_to_grammar(grammar, kb, collect)
    if errors is None and collect:
        raise ConfigError("\n".join(collect), fix="fix the files at the lines shown, then run `ivr check`")
    return grammar, kb


def missing_states(kb: KnowledgeBase, flow: Any) -> list[str]:
    """Entries whose `next` state is not in `flow` (a ivr.dialog.flow.Flow)."""
    out = []
    for entry in kb.entries.values():
        if entry.next and entry.next not in flow.states:
            out.append(f"{entry.where}: entry {entry.id!r} goes to state {entry.next!r}, which flow {flow.flow!r} "
                       f"does not have: use one of its states or remove `next`")
    return out
