"""The knowledge base (faq/<lang>/*.yaml): loading with file:line errors, `ivr check`, answers in any
listening state of the support flow (typed calls through the real NLU and hooks), containment per entry
in `ivr report`, and how well held-out phrasings (tests/data/faq_heldout.tsv) are recognised."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ivr.commands.chat import ChatResult, converse
from ivr.config import PROJECT_ROOT, PathSettings, Settings
from ivr.demo_operator import hook_context_for
from ivr.dialog import events as ev
from ivr.dialog.registry import FlowRegistry, check_files
from ivr.errors import ConfigError
from ivr.nlu.knowledge import FAQ_PREFIX, MAX_ANSWER_WORDS, load_knowledge
from ivr.report import build_report, compute, print_report, render_html
from ivr.storage.records import FAQ_ANSWERED, CallRecord, CallStore, EventRecord

PATHS = PathSettings()
HELDOUT = Path(__file__).parent / "data" / "faq_heldout.tsv"
OPEN = "2026-11-23T10:00:00"  # a Monday morning: the live line is open
HELDOUT_FLOOR = {"en": 0.85, "ru": 0.85}  # share of held-out phrasings that must reach their entry


def write(root: Path, name: str, text: str) -> Path:
    path = root / "faq" / "en" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(root: Path) -> list[str]:
    errors: list[str] = []
    load_knowledge("en", root / "faq", errors)
    return errors


GOOD = """\
entries:
  store_hours:
    questions: [when are you open, what are your opening hours]
    answer: "We are open every day from 9 to 9."
"""


# ---- loading: exact errors ------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # errors show paths relative to the working directory
    return tmp_path


def test_a_good_file_loads_into_entries_intents_and_prompts(root: Path) -> None:
    write(root, "shops.yaml", GOOD)
    kb = load_knowledge("en", root / "faq")
    entry = kb.get("faq.store_hours")
    assert entry is not None and entry.topic == "shops" and entry.where == "faq/en/shops.yaml:2"
    assert entry.questions == ("when are you open", "what are your opening hours")
    assert kb.prompts() == {"faq.store_hours": "We are open every day from 9 to 9."}
    assert load_knowledge("ru", root / "faq").entries == {}  # no folder: an empty knowledge base


def test_broken_yaml_names_file_line_and_fix(root: Path) -> None:
    write(root, "shops.yaml", GOOD + "  broken: [unclosed\n")
    assert problems(root) == [
        "faq/en/shops.yaml:6: invalid YAML: expected ',' or ']', but got '<stream end>'; fix the syntax on that line"
    ]


def test_missing_answer(root: Path) -> None:
    write(root, "shops.yaml", "entries:\n  store_hours:\n    questions: [when are you open]\n")
    assert problems(root) == [
        "faq/en/shops.yaml:2: entries.store_hours.answer: missing `answer`; add `answer: \"...\"`: the one or two "
        "sentences the assistant says"
    ]
    with pytest.raises(ConfigError, match=r"missing `answer`.*\(fix: fix the knowledge-base file"):
        load_knowledge("en", root / "faq")


def test_duplicate_id_in_one_file_and_across_files(root: Path) -> None:
    write(root, "a.yaml", GOOD + "  store_hours:\n    questions: [shop times]\n    answer: \"Nine to nine.\"\n")
    write(root, "b.yaml", GOOD.replace("when are you open, what are your opening hours", "are you open today"))
    assert problems(root) == [
        "faq/en/a.yaml:5: entry 'store_hours' is already defined at faq/en/a.yaml:2: rename one of them or merge "
        "their questions",
        # YAML keeps the last of two equal keys: that is the definition b.yaml collides with
        "faq/en/b.yaml:2: entry 'store_hours' is already defined at faq/en/a.yaml:5: rename one of them or merge "
        "their questions",
    ]


def test_one_question_for_two_answers(root: Path) -> None:
    entry = "  shop_sunday:\n    questions: [\"When are you open?\"]\n    answer: \"Sundays too.\"\n"
    write(root, "a.yaml", GOOD + entry)
    assert problems(root) == [
        "faq/en/a.yaml:6: question 'When are you open?' is asked by faq.store_hours at faq/en/a.yaml:3: a question "
        "must lead to one answer; remove it here or there"
    ]


@pytest.mark.parametrize(("entry", "expected"), [
    ("  x:\n    questions: [a b]\n    answer: \"Hi {name}.\"\n",
     "faq/en/a.yaml:7: entries.x.answer: answers are fixed texts, but this one has {name}: write the value out, "
     "or make it a flow state with a hook"),
    ("  x:\n    questions: [a b]\n    answer: \"Hi.\"\n    next: main_menu\n    transfer: sales\n",
     "faq/en/a.yaml:5: entry 'x' has both `next` and `transfer`: after the answer the call either goes to a state "
     "or to the live line; keep one"),
    ("  x:\n    question: [a b]\n    answer: \"Hi.\"\n",
     "faq/en/a.yaml:5: entries.x.questions: missing `questions`; add `questions:` with the ways callers ask this "
     "(eight or more phrasings)"),
    ("  Bad-Id:\n    questions: [a b]\n    answer: \"Hi.\"\n",
     "faq/en/a.yaml:5: entry id 'Bad-Id' must be lower case letters, digits and underscores (e.g. sim_replacement)"),
    ("  x:\n    questions: []\n    answer: \"Hi.\"\n",
     "faq/en/a.yaml:6: entries.x.questions: List should have at least 1 item after validation, not 0; list at "
     "least one question (eight or more phrasings match best)"),
])
def test_entry_mistakes(root: Path, entry: str, expected: str) -> None:
    write(root, "a.yaml", GOOD + entry)
    assert expected in problems(root)


def test_unknown_key_names_the_allowed_ones(root: Path) -> None:
    write(root, "a.yaml", GOOD + "    anwser: \"typo\"\n")
    assert problems(root) == ["faq/en/a.yaml:5: entries.store_hours.anwser: unknown key 'anwser' (typo?); allowed "
                              "keys: topic, questions, answer, next, transfer"]


def test_long_answers_and_few_questions_are_warnings(root: Path) -> None:
    long = " ".join(["word"] * (MAX_ANSWER_WORDS + 5))
    write(root, "a.yaml", f"entries:\n  x:\n    questions: [one way]\n    answer: \"{long}.\"\n")
    kb = load_knowledge("en", root / "faq")
    assert kb.warnings == [
        f"faq/en/a.yaml:4: answer of 'x' is {MAX_ANSWER_WORDS + 5} words; callers follow about {MAX_ANSWER_WORDS}: "
        "shorten it or point to the website",
        "faq/en/a.yaml:3: entry 'x' has 1 question(s): add more phrasings (eight or more match best)",
    ]


# ---- ivr check --------------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of grammars/, flows/, prompts/ and faq/ to break."""
    for name in ("grammars", "flows", "prompts", "faq"):
        shutil.copytree(getattr(PATHS, name), tmp_path / name, ignore=shutil.ignore_patterns("cache"))
    return tmp_path


def ivr_check(tree: Path) -> subprocess.CompletedProcess[str]:
    args = ["check", "--no-vocabulary"]
    for name in ("flows", "grammars", "prompts", "faq"):
        args += [f"--{name}", str(tree / name)]
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args], capture_output=True, text=True, cwd=tree,
                          timeout=120)


def test_check_reports_knowledge_base_problems_against_flow_and_grammar(tree: Path) -> None:
    path = tree / "faq/en/network.yaml"
    text = path.read_text()
    path.write_text(text.replace("next: roaming ", "next: roamin ", 1)
                    .replace("      - coverage map\n", "      - coverage map\n      - roaming\n", 1))
    next_line = text[: text.index("  roaming_prices:")].count("\n") + 1
    clash_line = text[: text.index("      - coverage map\n")].count("\n") + 2
    done = ivr_check(tree)
    assert done.returncode == 1, done.stdout
    out = " ".join(done.stdout.split())  # rich wraps long lines
    assert (f"faq/en/network.yaml:{clash_line}: question 'roaming' is also a phrase of intent 'roaming' "
            "(grammars/en/support.yaml:") in out
    # the grammar problem keeps English out of the build; Russian still checks the flow states
    (tree / "faq/en/network.yaml").write_text(text.replace("next: roaming ", "next: roamin ", 1))
    done = ivr_check(tree)
    out = " ".join(done.stdout.split())
    assert (f"faq/en/network.yaml:{next_line}: entry 'roaming_prices' goes to state 'roamin', which flow 'support' "
            "does not have: use one of its states or remove `next`") in out


def test_ivr_nlu_matches_knowledge_base_intents_as_calls_do() -> None:
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "nlu", "--lang", "en", "--json"], cwd=PROJECT_ROOT,
                          input="when are your shops open\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["intent"] == "faq.store_hours"


def test_shipped_knowledge_base_checks_clean() -> None:
    report, built = check_files(PATHS.grammars, PATHS.flows, PATHS.prompts, faq_dir=PATHS.faq)
    assert report.errors == [] and report.warnings == []
    for lang in ("en", "ru"):
        kb = built[("support", lang)].knowledge
        assert kb is not None and len(kb) >= 40, lang
        assert all(len(e.questions) >= 8 for e in kb.entries.values()), lang
        # phone-sized answers: at most two sentences
        assert all(e.answer.count(". ") <= 1 and len(e.answer.split()) <= MAX_ANSWER_WORDS
                   for e in kb.entries.values()), lang


# ---- in the dialog -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry() -> FlowRegistry:
    registry = FlowRegistry(Settings())
    assert registry.reload() == []
    return registry


def talk(registry: FlowRegistry, tmp_path: Path, lang: str, lines: list[str]) -> ChatResult:
    context: dict[str, Any] = hook_context_for(Settings(), tmp_path / "operator.sqlite3")
    return converse(registry.get("support", lang), iter(lines), context, now_iso=OPEN, verbose=False)


def said_ids(result: ChatResult) -> list[str]:
    return [a.prompt_id for a in result.actions if isinstance(a, ev.Say)]


def answered(result: ChatResult) -> list[tuple[str, str]]:
    return [(a.entry, a.state) for a in result.actions if isinstance(a, ev.AnsweredFromKnowledge)]


def test_question_mid_top_up_is_answered_then_the_amount_is_asked_again(registry: FlowRegistry,
                                                                      tmp_path: Path) -> None:
    result = talk(registry, tmp_path, "en", ["#2", "what payment methods do you accept", "#20#", "yes", "no", "5"])
    ids = said_ids(result)
    i = ids.index("faq.payment_methods")
    assert ids[i - 1 : i + 2] == ["ask_top_up_amount", "faq.payment_methods", "ask_top_up_amount"]
    assert "You can pay by bank card" in result.said[i]
    assert "top_up_done" in ids and result.survey == 5  # the caller went on with the top-up
    assert answered(result) == [("payment_methods", "top_up_amount")]


def test_main_menu_answer_then_the_short_reprompt_and_repeat_says_both(registry: FlowRegistry,
                                                                       tmp_path: Path) -> None:
    result = talk(registry, tmp_path, "en", ["when are your shops open", "repeat", "balance"])
    ids = said_ids(result)
    assert ids[:5] == ["welcome", "main_menu", "faq.store_hours", "main_menu_short", "faq.store_hours"]
    assert ids[5] == "main_menu_short" and "balance_is" in ids


def test_confirm_state_keeps_its_question(registry: FlowRegistry, tmp_path: Path) -> None:
    result = talk(registry, tmp_path, "en", ["#9", "where is your nearest shop", "no"])
    ids = said_ids(result)
    assert ids[2:5] == ["confirm_block", "faq.store_locations", "confirm_block"]
    assert "cancelled" in ids  # "no" still answered the confirmation


def test_follow_up_state_and_hand_off(registry: FlowRegistry, tmp_path: Path) -> None:
    result = talk(registry, tmp_path, "en", ["what are the roaming charges", "no", "no"])
    ids = said_ids(result)
    assert ids[2:4] == ["faq.roaming_prices", "roaming_off_offer"]  # next: roaming (the hook said "off")

    result = talk(registry, tmp_path, "en", ["#1", "i want to make a complaint"])
    transfer = next(a for a in result.actions if isinstance(a, ev.Transfer))
    assert said_ids(result)[-1] == "faq.complaint"
    assert (transfer.reason, transfer.route) == ("complaint", "support")
    assert transfer.intent == "balance"  # the call's main request stays the first one
    assert "reason=complaint" in transfer.summary


def test_first_request_from_the_knowledge_base_is_the_calls_intent(registry: FlowRegistry, tmp_path: Path) -> None:
    result = talk(registry, tmp_path, "en", ["i want to make a complaint"])
    transfer = next(a for a in result.actions if isinstance(a, ev.Transfer))
    assert transfer.intent == "faq.complaint" and transfer.variables["IVR_LAST_STATE"] == "main_menu"


def test_russian_answer_in_the_menu(registry: FlowRegistry, tmp_path: Path) -> None:
    result = talk(registry, tmp_path, "ru", ["какой пин код у новой сим карты", "баланс"])
    ids = said_ids(result)
    assert ids[2] == "faq.pin_code" and "0000" in result.said[2]
    assert "balance_is" in ids


# ---- report: containment per entry ------------------------------------------------------------
def _call(call_id: str, status: str) -> CallRecord:
    return CallRecord(id=call_id, started_at=datetime(2026, 5, 1, 9, tzinfo=UTC), status=status, lang="en")


def _answer(call_id: str, entry: str) -> EventRecord:
    topic = {"fees": "billing", "esim": "sim", "puk": "sim"}[entry]
    return EventRecord(call_id=call_id, at=datetime(2026, 5, 1, 9, 1, tzinfo=UTC), kind=FAQ_ANSWERED,
                       data={"entry": entry, "topic": topic, "state": "main_menu"})


def test_report_containment_per_entry() -> None:
    calls = [_call("a", "contained"), _call("b", "transferred"), _call("c", "contained"), _call("d", "contained"),
             _call("e", "active")]
    events = [_answer("a", "fees"), _answer("a", "fees"), _answer("b", "fees"), _answer("c", "esim"),
              _answer("e", "esim"), _answer("a", "esim"), _answer("b", "puk")]
    report = compute(calls, [], events=events)
    assert report.faq == {
        "esim": {"topic": "sim", "calls": 2, "contained": 2, "transferred": 0, "containment_rate": 1.0},
        "fees": {"topic": "billing", "calls": 2, "contained": 1, "transferred": 1, "containment_rate": 0.5},
        "puk": {"topic": "sim", "calls": 1, "contained": 0, "transferred": 1, "containment_rate": 0.0},
    }  # the active call "e" is not counted: it has not ended
    assert report.faq_topics == {
        "sim": {"calls": 3, "contained": 2, "transferred": 1, "containment_rate": 2 / 3},  # a, b, c
        "billing": {"calls": 2, "contained": 1, "transferred": 1, "containment_rate": 0.5},
    }
    assert report.faq_calls == 3 and report.faq_containment_rate == pytest.approx(2 / 3)  # a, b, c
    data = json.loads(json.dumps(report.to_json()))
    assert data["faq"]["fees"]["transferred"] == 1 and data["faq_calls"] == 3
    html = render_html(report)
    assert "<td>fees</td><td>2</td><td>1</td><td>1</td><td>50.0%</td>" in html
    assert "<td>sim</td><td>3</td><td>2</td><td>1</td><td>66.7%</td>" in html

    from rich.console import Console

    console = Console(record=True, width=140)
    print_report(report, console)
    text = console.export_text()
    assert "Knowledge base: containment per entry" in text and "Knowledge base: containment per topic" in text
    assert any(line.split()[:5] == ["│", "fees", "│", "2", "│"] for line in text.splitlines())


def test_report_reads_answers_from_the_store(tmp_path: Path) -> None:
    store = CallStore(f"sqlite:///{tmp_path / 'calls.sqlite3'}")
    start = datetime(2026, 5, 1, 9, tzinfo=UTC)
    for i, (entry, status) in enumerate([("fees", "contained"), ("fees", "transferred"), ("esim", "contained")]):
        call_id = store.open_call(f"c{i}", lang="en", flow="support", started_at=start + timedelta(minutes=i))
        store.add_event(call_id, FAQ_ANSWERED, {"entry": entry, "topic": "billing", "state": "main_menu"})
        store.add_event(call_id, "survey", {"score": 5})  # other events do not count
        store.close_call(call_id, status=status)
    store.flush()
    report = build_report(store, since=start - timedelta(hours=1))
    store.close()
    assert {k: (v["calls"], v["contained"]) for k, v in report.faq.items()} == {"fees": (2, 1), "esim": (1, 1)}


# ---- held-out phrasings ------------------------------------------------------------------------
def _heldout() -> list[tuple[str, str, str]]:
    rows = []
    for line in HELDOUT.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            lang, text, entry = line.split("\t")
            rows.append((lang, text, entry))
    return rows


def test_heldout_phrasings_are_not_in_the_knowledge_base_and_name_real_entries(registry: FlowRegistry) -> None:
    for lang, text, entry in _heldout():
        kb = registry.get("support", lang).knowledge
        assert kb is not None and FAQ_PREFIX + entry in kb.entries, (lang, entry)
        asked = {q.lower().strip(" ?!.") for e in kb.entries.values() for q in e.questions}
        assert text.lower().strip(" ?!.") not in asked, text


def test_heldout_phrasings_reach_their_answer(registry: FlowRegistry) -> None:
    rows = _heldout()
    for lang in ("en", "ru"):
        cases = [(text, entry) for row_lang, text, entry in rows if row_lang == lang]
        nlu = registry.get("support", lang).nlu
        misses = Counter()
        right = 0
        for text, entry in cases:
            got = nlu.understand(text).intent
            right += got == FAQ_PREFIX + entry
            if got != FAQ_PREFIX + entry:
                misses[f"{text!r} -> {got}"] += 1
        rate = right / len(cases)
        print(f"\n{lang}: held-out knowledge-base phrasings {right}/{len(cases)} = {rate:.1%}; misses: "
              + "; ".join(misses))
        assert len(cases) >= 40
        assert rate >= HELDOUT_FLOOR[lang], (lang, rate, list(misses))


def test_project_root_has_the_shipped_knowledge_base() -> None:
    assert PATHS.faq == PROJECT_ROOT / "faq" and (PATHS.faq / "en").is_dir() and (PATHS.faq / "ru").is_dir()


# ---- prompt audio --------------------------------------------------------------------------------
def test_answers_are_fixed_prompts_built_cached_and_replaceable_by_a_recording(tmp_path: Path) -> None:
    import asyncio

    import numpy as np

    from ivr.audio import pcm
    from ivr.tts.cache import PromptCache
    from ivr.tts.engine import TtsEngine

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "en.yaml").write_text('bye: "Goodbye."\n', encoding="utf-8")
    write(tmp_path, "shops.yaml", GOOD)
    with TtsEngine() as engine:
        cache = PromptCache(prompts, engine, knowledge_dir=tmp_path / "faq")
        stats = cache.build("en")
        assert (stats.prompts, stats.rendered) == (2, 2)
        assert {e.prompt_id for e in cache.entries("en")} == {"bye", "faq.store_hours"}
        # a human recording of the answer, named by its prompt id, plays instead of the voice
        recorded = prompts / "recorded" / "en" / "faq.store_hours.wav"
        recorded.parent.mkdir(parents=True)
        tone = (np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440) * 8000).astype("<i2").tobytes()
        pcm.write_wav(recorded, tone, 8000)
        assert asyncio.run(cache.get("We are open every day from 9 to 9.", "en")) == tone


OUT_OF_SCOPE = Path(__file__).parent / "data" / "faq_out_of_scope.tsv"
OUT_OF_SCOPE_CEILING = 0.1  # share of unrelated sentences that may get a knowledge-base answer


def test_unrelated_sentences_are_rarely_answered_from_the_knowledge_base(registry: FlowRegistry) -> None:
    rows = [line.split("\t") for line in OUT_OF_SCOPE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    for lang in ("en", "ru"):
        nlu = registry.get("support", lang).nlu
        texts = [text for row_lang, text in rows if row_lang == lang]
        understood = [(text, nlu.understand(text).intent) for text in texts]
        answered = [(text, intent) for text, intent in understood if intent.startswith(FAQ_PREFIX)]
        rate = len(answered) / len(texts)
        print(f"\n{lang}: unrelated sentences answered from the knowledge base {len(answered)}/{len(texts)} = "
              f"{rate:.1%}: {answered}")
        assert len(texts) >= 30
        assert rate <= OUT_OF_SCOPE_CEILING, (lang, answered)


def test_hot_reload_picks_up_an_edit_and_a_broken_edit_keeps_the_last_good_version(tree: Path) -> None:
    registry = FlowRegistry(grammars_dir=tree / "grammars", flows_dir=tree / "flows", prompts_dir=tree / "prompts",
                            faq_dir=tree / "faq")
    assert registry.reload() == []
    first = registry.get("support", "en")
    path = tree / "faq/en/shops_and_support.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("Our shops are open every day", "Our shops are open daily"), encoding="utf-8")
    assert registry.changed() and registry.reload() == []
    edited = registry.get("support", "en")
    assert edited.version > first.version
    assert edited.knowledge is not None and edited.knowledge.entries["faq.store_hours"].answer.startswith(
        "Our shops are open daily")
    path.write_text(text.replace("    answer: \"Our shops", "    anwser: \"Our shops"), encoding="utf-8")
    errors = registry.reload()
    assert any("faq/en/shops_and_support.yaml" in e and "missing `answer`" in e for e in errors), errors
    assert registry.get("support", "en").version == edited.version  # English: the last good version
    kept = registry.get("support", "en").knowledge
    assert kept is not None and kept.entries["faq.store_hours"].answer.startswith("Our shops are open daily")
    assert registry.get("support", "ru").version > edited.version  # what the edit did not break moved on


def test_a_caller_who_hangs_up_after_an_answer_was_served(registry: FlowRegistry) -> None:
    """ivr/outcomes.py: a hang-up after a knowledge-base answer is a contained call, not an abandoned one."""
    loaded = registry.get("support", "en")
    runtime = loaded.runtime
    step = runtime.start(ev.CallStarted(caller_id="+15550100", now_iso=OPEN))
    hook = next(a for a in step.actions if isinstance(a, ev.RunHook))  # identify: no caller data needed here
    step = runtime.handle(step.state, ev.HookDone(hook.name, {}))
    assert step.state.node == "main_menu" and not runtime.caller_served(step.state)
    step = runtime.handle(step.state, ev.Heard(loaded.nlu.understand("when are your shops open")))
    assert any(isinstance(a, ev.AnsweredFromKnowledge) for a in step.actions)
    assert runtime.caller_served(step.state) and step.state.node == "main_menu"
