"""Fuzzing the flow, grammar and prompt loaders with YAML-ish mutations of the shipped files.

An operator's typo must end in a ConfigError naming the file and line (`support.yaml:12: ...`),
or in a file that still loads; never another exception (a crash of `ivr check` or of a hot reload).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.config import PROJECT_ROOT
from ivr.dialog.flow import load_flow, load_prompts
from ivr.errors import ConfigError
from ivr.nlu.grammar import load_grammar

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
YAMLISH = st.text(alphabet=":-[]{}&*!|>'\"#%@`,? \t\\abcxyz019잔액확인", max_size=12)
LINE_RE = re.compile(r"\.yaml:\d+")

# one edit: (what, which line, text)
edits = st.lists(
    st.tuples(st.sampled_from(["delete", "duplicate", "indent", "dedent", "insert", "splice", "truncate"]),
              st.integers(0, 10_000), YAMLISH),
    min_size=1, max_size=4,
)


def mutate(text: str, ops: list[tuple[str, int, str]]) -> str:
    lines = text.split("\n")
    for what, where, payload in ops:
        if not lines:
            break
        i = where % len(lines)
        if what == "delete":
            del lines[i]
        elif what == "duplicate":
            lines.insert(i, lines[i])
        elif what == "indent":
            lines[i] = "  " + lines[i]
        elif what == "dedent":
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i].lstrip()
        elif what == "insert":
            lines.insert(i, payload)
        elif what == "splice":  # overwrite part of the line with YAML punctuation
            cut = where % (len(lines[i]) + 1)
            lines[i] = lines[i][:cut] + payload + lines[i][cut + len(payload):]
        elif what == "truncate":
            lines = lines[: i + 1]
    return "\n".join(lines)


def _check(exc: ConfigError) -> None:
    message = str(exc)
    assert LINE_RE.search(message), f"no file:line in {message!r}"
    assert "fix:" in message or "(fix" in message or LINE_RE.search(message)


@pytest.fixture(scope="module")
def workdir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="ivr-fuzz-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


FLOW_TEXT = (PROJECT_ROOT / "flows" / "support.yaml").read_text(encoding="utf-8")


@FUZZ
@given(edits)
def test_mutated_flow_loads_or_says_where(workdir: Path, ops: list) -> None:
    path = workdir / "support.yaml"
    path.write_text(mutate(FLOW_TEXT, ops), encoding="utf-8")
    try:
        load_flow(path)
    except ConfigError as exc:
        _check(exc)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_shipped_grammar_loads(lang: str) -> None:
    assert load_grammar(lang, PROJECT_ROOT / "grammars").intents


@FUZZ
@given(st.sampled_from(["en", "ru", "ko"]), edits)
def test_mutated_grammar_loads_or_says_where(workdir: Path, lang: str, ops: list) -> None:
    source = PROJECT_ROOT / "grammars" / lang / "support.yaml"
    target = workdir / "grammars" / lang
    target.mkdir(parents=True, exist_ok=True)
    (target / "support.yaml").write_text(mutate(source.read_text(encoding="utf-8"), ops), encoding="utf-8")
    try:
        load_grammar(lang, workdir / "grammars")
    except ConfigError as exc:
        _check(exc)
    problems: list[str] = []  # the collecting mode (what `ivr check` uses) must not raise at all
    load_grammar(lang, workdir / "grammars", errors=problems)
    for problem in problems:
        assert LINE_RE.search(problem) or "no grammar files" in problem, problem


@FUZZ
@given(st.sampled_from(["en", "ru", "ko"]), edits)
def test_mutated_prompts_load_or_say_where(workdir: Path, lang: str, ops: list) -> None:
    source = PROJECT_ROOT / "prompts" / f"{lang}.yaml"
    target = workdir / "prompts"
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{lang}.yaml").write_text(mutate(source.read_text(encoding="utf-8"), ops), encoding="utf-8")
    try:
        load_prompts(lang, target)
    except ConfigError as exc:
        _check(exc)


@FUZZ
@given(st.text(max_size=400))
def test_random_text_as_a_flow_file(workdir: Path, text: str) -> None:
    path = workdir / "garbage.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_flow(path)
    except ConfigError as exc:
        assert "garbage.yaml" in str(exc)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_a_flow_file(workdir: Path, data: bytes) -> None:
    path = workdir / "garbage.yaml"
    path.write_bytes(data)
    try:
        load_flow(path)
    except ConfigError as exc:
        assert "garbage.yaml" in str(exc)


def test_a_flow_file_not_in_utf8_is_a_config_error(workdir: Path) -> None:
    """An operator saving a grammar in Windows-1251 must get file + fix, not a traceback."""
    path = workdir / "latin.yaml"
    path.write_bytes("flow: support\nstart: a\nstates: {a: {say: [привет]}}\n".encode("cp1251"))
    with pytest.raises(ConfigError) as err:
        load_flow(path)
    assert "latin.yaml" in str(err.value)
