"""Flows, grammars and prompts loaded together, checked together, and hot-reloaded.

    registry = FlowRegistry(settings)
    loaded = registry.get("support", "en")      # LoadedFlow(flow, nlu, runtime, prompts, version)
    errors = registry.reload()                   # after an edit; [] when all is well
    asyncio.create_task(registry.watch(2.0))     # in a server: poll mtimes, reload on change

A broken edit keeps the last good version of what it broke (and logs file:line); a call in
progress keeps the LoadedFlow it started with, so a reload never changes a running conversation.
`check_files(...)` is what `ivr check` runs: every cross-reference between flows, grammars, prompts
and the knowledge base (faq/<lang>/*.yaml: its entries join the language's intents and prompts).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.config import Settings
from ivr.dialog.flow import Flow, flow_files, load_prompts, parse_flow, placeholders, prompts_file
from ivr.dialog.runtime import DialogRuntime
from ivr.errors import ConfigError
from ivr.nlu.grammar import (
    Grammar,
    SourceMap,
    display_path,
    korean_model_dir,
    load_yaml,
    vosk_vocabulary,
)
from ivr.nlu.intents import Nlu
from ivr.nlu.knowledge import KnowledgeBase, load_with_knowledge, missing_states

log = logging.getLogger(__name__)

DEFAULT_WATCH_INTERVAL_S = 2.0


@dataclass(frozen=True)
class LoadedFlow:
    """Everything a call needs for one flow in one language; never mutated after creation."""

    flow: Flow
    nlu: Nlu
    runtime: DialogRuntime
    prompts: dict[str, str]
    version: int
    knowledge: KnowledgeBase | None = None


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def languages(grammars_dir: Path, prompts_dir: Path) -> list[str]:
    """Languages with a grammar directory or a prompts file."""
    langs = {p.name for p in Path(grammars_dir).iterdir() if p.is_dir()} if Path(grammars_dir).is_dir() else set()
    langs |= {p.stem for p in Path(prompts_dir).glob("*.yaml")} if Path(prompts_dir).is_dir() else set()
    return sorted(langs)


def check_files(grammars_dir: Path, flows_dir: Path, prompts_dir: Path,
                vocabulary: dict[str, set[str]] | None = None,
                faq_dir: Path | None = None) -> tuple[CheckReport, dict[tuple[str, str], LoadedFlow]]:
    """Load and cross-check every flow, grammar, prompt and knowledge-base file.

    Returns the report and what could be built ((flow, lang) -> LoadedFlow with version 0).
    `vocabulary` maps a language to the words its ASR knows (Korean: the Vosk model's); phrases
    with other words are warnings.
    """
    report = CheckReport()
    built: dict[tuple[str, str], LoadedFlow] = {}
    langs = languages(grammars_dir, prompts_dir)
    report.languages = langs
    grammars: dict[str, Grammar] = {}
    prompts: dict[str, tuple[dict[str, str], SourceMap]] = {}
    knowledge: dict[str, KnowledgeBase] = {}
    for lang in langs:
        errors: list[str] = []
        # knowledge-base entries become intents faq.<id> of the language
        grammar, kb = load_with_knowledge(lang, grammars_dir, faq_dir, errors)
        report.warnings += kb.warnings
        if not errors:
            knowledge[lang] = kb
        report.errors += errors
        if not errors:
            grammars[lang] = grammar
            words = (vocabulary or {}).get(lang)
            if words:
                for (intent, phrase), where in grammar.phrase_where.items():
                    unknown = [w for w in phrase.split() if w not in words]
                    if unknown:
                        report.warnings.append(f"{where}: {lang} phrase {phrase!r} of {intent!r} has words the "
                                               f"speech model does not know: {', '.join(unknown)}")
        if not prompts_file(lang, prompts_dir).exists():
            report.errors.append(f"{display_path(prompts_file(lang, prompts_dir))}: missing: every language "
                                 f"needs its prompts (grammars/{lang}/ exists)")
            continue
        try:
            texts, psource = load_prompts(lang, prompts_dir)
        except ConfigError as exc:
            report.errors.append(str(exc).split(" (fix:")[0])
            continue
        for pid in sorted(set(texts) & set(kb.prompts())):
            report.errors.append(f"{psource.where((pid,))}: prompt id {pid!r} is reserved for the knowledge-base "
                                 f"entry at {kb.entries[pid].where}: rename the prompt")
        prompts[lang] = ({**texts, **kb.prompts()}, psource)
    files = flow_files(flows_dir)
    if not files:
        report.errors.append(f"{display_path(Path(flows_dir))}: no flow files (*.yaml)")
    names: dict[str, str] = {}
    for path in files:
        try:
            data, source = load_yaml(path, display_path(path))
        except ConfigError as exc:
            report.errors.append(str(exc).split(" (fix:")[0])
            continue
        flow, errors = parse_flow(data, source, path)
        report.errors += errors
        if flow is None:
            continue
        if flow.flow in names:
            report.errors.append(f"{flow.where('flow')}: flow name {flow.flow!r} is already used by {names[flow.flow]}")
            continue
        names[flow.flow] = display_path(path)
        report.flows.append(flow.flow)
        flow_errors = list(errors)
        known_slots = flow.slot_names()
        for lang in langs:
            lang_errors: list[str] = []
            lang_grammar = grammars.get(lang)
            if lang in knowledge:
                lang_errors += missing_states(knowledge[lang], flow)
            if lang_grammar is not None:
                for key, intent in flow.intents_used():
                    if intent not in lang_grammar.intents:
                        lang_errors.append(f"{flow.where(*key)}: intent {intent!r} is not in grammars/{lang}/ "
                                           f"(add it with a few phrases)")
            if lang in prompts:
                texts, psource = prompts[lang]
                for key, pid in flow.prompt_ids():
                    if pid not in texts:
                        lang_errors.append(f"{flow.where(*key)}: prompt {pid!r} is missing from "
                                           f"{psource.file}")
                        continue
                    for name in placeholders(texts[pid]):
                        if name not in known_slots:
                            lang_errors.append(f"{psource.where((pid,))}: prompt {pid!r} uses {{{name}}}, which "
                                               f"flow {flow.flow!r} never fills (known: "
                                               f"{', '.join(sorted(known_slots))})")
            report.errors += _dedupe(lang_errors, report.errors)
            if not flow_errors and not lang_errors and lang_grammar is not None and lang in prompts:
                nlu = Nlu(lang_grammar)
                texts = prompts[lang][0]
                kb = knowledge[lang]
                runtime = DialogRuntime(flow, lang, nlu, texts, kb)
                built[(flow.flow, lang)] = LoadedFlow(flow, nlu, runtime, texts, 0, kb)
    return report, built


def _dedupe(new: list[str], old: list[str]) -> list[str]:
    seen = set(old)
    out = []
    for item in new:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def asr_vocabularies() -> dict[str, set[str]]:
    """Words the installed speech models know, per language (only Korean has a closed vocabulary here)."""
    model = korean_model_dir()
    if model is None:
        return {}
    try:
        return {"ko": vosk_vocabulary(model)}
    except (ConfigError, OSError) as exc:  # a check must not fail because a model is odd
        log.warning("cannot read the Korean model vocabulary: %s", exc)
        return {}


class FlowRegistry:
    """Thread-safe holder of the current LoadedFlow of every (flow, language)."""

    def __init__(self, settings: Settings | None = None, *, grammars_dir: Path | None = None,
                 flows_dir: Path | None = None, prompts_dir: Path | None = None,
                 faq_dir: Path | None = None) -> None:
        paths = (settings or Settings()).paths
        self.grammars_dir = Path(grammars_dir or paths.grammars)
        self.flows_dir = Path(flows_dir or paths.flows)
        self.prompts_dir = Path(prompts_dir or paths.prompts)
        self.faq_dir = Path(faq_dir or paths.faq)
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, str], LoadedFlow] = {}
        self._stamp: tuple[Any, ...] | None = None
        self._generation = 0
        self.last_errors: list[str] = []

    def _files(self) -> list[Path]:
        files = [*self.flows_dir.glob("*.yaml"), *self.prompts_dir.glob("*.yaml"),
                 *self.grammars_dir.glob("*/*.yaml"), *self.faq_dir.glob("*/*.yaml")]
        return sorted(files)

    def _mtimes(self) -> tuple[Any, ...]:
        stamp = []
        for path in self._files():
            try:
                st = path.stat()
                stamp.append((str(path), st.st_mtime_ns, st.st_size))
            except OSError:
                continue
        return tuple(stamp)

    def changed(self) -> bool:
        """Whether any flow, grammar or prompt file changed since the last (re)load."""
        return self._mtimes() != self._stamp

    def reload(self) -> list[str]:
        """Re-read every file. Returns the errors (file:line: message); [] if all is well.

        What an error breaks keeps its last good version; what is fine is replaced.
        """
        stamp = self._mtimes()
        report, built = check_files(self.grammars_dir, self.flows_dir, self.prompts_dir, faq_dir=self.faq_dir)
        # train the intent classifiers here (a worker thread under `watch`), before the swap: calls in
        # progress keep theirs, new calls get a ready one (memory/disk cache: one per grammar content)
        for key, loaded in list(built.items()):
            try:
                loaded.nlu.train()
            except Exception as exc:  # noqa: BLE001 - a grammar that cannot train keeps its last good version
                report.errors.append(f"grammars/{key[1]}/: the intent classifier cannot be trained: {exc}")
                del built[key]
        with self._lock:
            self._generation += 1
            for key, loaded in built.items():
                self._loaded[key] = LoadedFlow(loaded.flow, loaded.nlu, loaded.runtime, loaded.prompts,
                                               self._generation, loaded.knowledge)
            self._stamp = stamp
            self.last_errors = report.errors
        for error in report.errors:
            log.error("flow reload: %s", error)
        if report.errors and self._loaded:
            log.error("flow reload: %d problem(s); the last good version stays in use where they apply",
                      len(report.errors))
        return report.errors

    def get(self, flow: str, lang: str) -> LoadedFlow:
        """The current version of `flow` in `lang` (loads everything on first use)."""
        if self._stamp is None:
            self.reload()
        with self._lock:
            loaded = self._loaded.get((flow, lang))
            if loaded is not None:
                return loaded
            flows = sorted({f for f, _ in self._loaded})
            langs = sorted({lang_ for f, lang_ in self._loaded if f == flow})
        problems = "; ".join(self.last_errors[:3])
        if flow not in flows:
            raise ConfigError(f"no flow {flow!r} (loaded: {', '.join(flows) or 'none'})"
                              + (f"; problems: {problems}" if problems else ""),
                              fix=f"check the dialplan's agi://host/<flow> and {self.flows_dir}; run `ivr check`")
        raise ConfigError(f"flow {flow!r} has no language {lang!r} (has: {', '.join(langs)})"
                          + (f"; problems: {problems}" if problems else ""),
                          fix="add grammars/<lang>/ and prompts/<lang>.yaml, or pass ?lang= one of those")

    def available(self) -> list[tuple[str, str]]:
        if self._stamp is None:
            self.reload()
        with self._lock:
            return sorted(self._loaded)

    async def watch(self, interval_s: float = DEFAULT_WATCH_INTERVAL_S) -> None:
        """Poll file mtimes every `interval_s` and reload on change (run as a task; cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                if await asyncio.to_thread(self.changed):
                    errors = await asyncio.to_thread(self.reload)
                    log.info("flows reloaded (generation %d, %d error(s))", self._generation, len(errors))
            except Exception:  # noqa: BLE001 - the watcher must survive anything a file can do
                log.exception("flow watcher failed; retrying")
