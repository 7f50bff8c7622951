"""Hot reload: edits take effect for new calls, broken edits keep the last good version, calls in
progress keep the objects they started with."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from ivr.config import PathSettings, Settings
from ivr.dialog import events as ev
from ivr.dialog.registry import FlowRegistry
from ivr.errors import ConfigError

OPEN = "2026-11-23T10:00:00"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    paths = PathSettings()
    for name, src in (("grammars", paths.grammars), ("flows", paths.flows), ("prompts", paths.prompts)):
        shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("cache"))
    return tmp_path


@pytest.fixture
def registry(tree: Path) -> FlowRegistry:
    settings = Settings.model_validate({"paths": {"grammars": tree / "grammars", "flows": tree / "flows",
                                                  "prompts": tree / "prompts", "data": tree / "data"}})
    return FlowRegistry(settings)


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    later = time.time() + 5  # a distinct mtime even on coarse file systems
    os.utime(path, (later, later))


def welcome(loaded) -> str:  # noqa: ANN001 - LoadedFlow
    step = loaded.runtime.start(ev.CallStarted(now_iso=OPEN))
    step = loaded.runtime.handle(step.state, ev.HookDone(step.actions[0].name, {"outcome": "ok"}))
    return step.actions[0].text


def test_get_loads_once_and_returns_the_same_objects(registry: FlowRegistry) -> None:
    first = registry.get("support", "en")
    assert first is registry.get("support", "en")
    assert first.version == 1 and first.flow.flow == "support" and first.prompts["welcome"]
    assert {lang for _, lang in registry.available()} == {"en", "ru", "ko"}
    assert not registry.changed()


def test_edit_reaches_new_calls_and_spares_calls_in_progress(registry: FlowRegistry, tree: Path) -> None:
    old = registry.get("support", "en")
    # a call in progress: started, waiting in the main menu
    step = old.runtime.start(ev.CallStarted(now_iso=OPEN))
    step = old.runtime.handle(step.state, ev.HookDone(step.actions[0].name, {"outcome": "ok"}))
    in_progress = step.state
    assert in_progress.node == "main_menu"

    rewrite(tree / "prompts/en.yaml", "Welcome to Demo Mobile.", "Hello from the new prompts.")
    rewrite(tree / "grammars/en/support.yaml", "      - check my balance\n",
            "      - check my balance\n      - show me the money\n")
    assert registry.changed()
    assert registry.reload() == []

    new = registry.get("support", "en")
    assert new is not old and new.version > old.version
    assert welcome(new) == "Hello from the new prompts."
    assert new.nlu.understand("show me the money").intent == "balance"
    # the call in progress goes on with what it started with
    assert welcome(old) == "Welcome to Demo Mobile."
    next_step = old.runtime.handle(in_progress, ev.Heard(old.nlu.understand("what is my balance")))
    assert isinstance(next_step.actions[0], ev.RunHook) and next_step.state.node == "balance"


def test_broken_edit_keeps_the_last_good_version(registry: FlowRegistry, tree: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    good = registry.get("support", "en")
    rewrite(tree / "flows/support.yaml", "  balance_say:\n    say: balance_is\n",
            "  balance_say:\n    say: [balance_is\n")
    errors = registry.reload()
    assert errors and all("support.yaml:" in e for e in errors)
    assert any("invalid YAML" in e for e in errors)
    assert any("flows/support.yaml:" in r.getMessage() for r in caplog.records)
    assert registry.get("support", "en") is good  # still the last good one
    assert registry.get("support", "ru").version == good.version

    rewrite(tree / "flows/support.yaml", "    say: [balance_is\n", "    say: [balance_is]\n")
    assert registry.reload() == []
    assert registry.get("support", "en").version > good.version


def test_broken_grammar_of_one_language_spares_the_others(registry: FlowRegistry, tree: Path) -> None:
    ru, en = registry.get("support", "ru"), registry.get("support", "en")
    rewrite(tree / "grammars/ru/support.yaml", "lang: ru\n", "lang: ru\nthreshold: 7\n")
    errors = registry.reload()
    assert any("grammars/ru/support.yaml:5: threshold" in e for e in errors), errors
    assert registry.get("support", "ru") is ru
    assert registry.get("support", "en").version > en.version


def test_unknown_flow_or_language(registry: FlowRegistry) -> None:
    with pytest.raises(ConfigError, match="no flow 'billing'"):
        registry.get("billing", "en")
    with pytest.raises(ConfigError, match="flow 'support' has no language 'de'"):
        registry.get("support", "de")


def test_watch_reloads_on_change(registry: FlowRegistry, tree: Path) -> None:
    before = registry.get("support", "en")

    async def scenario() -> int:
        task = asyncio.create_task(registry.watch(0.05))
        await asyncio.sleep(0.1)
        rewrite(tree / "prompts/en.yaml", "Welcome to Demo Mobile.", "Welcome back.")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if registry.get("support", "en").version != before.version:
                break
        task.cancel()
        return registry.get("support", "en").version

    assert asyncio.run(scenario()) > before.version
    assert welcome(registry.get("support", "en")) == "Welcome back."
