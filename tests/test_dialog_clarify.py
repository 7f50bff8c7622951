"""When the NLU cannot choose between two close intents, the dialog asks "X or Y?" once."""

from __future__ import annotations

from ivr.config import Settings
from ivr.dialog import events as ev
from ivr.dialog.registry import FlowRegistry
from ivr.dialog.runtime import CHOICE_PROMPT, DialogRuntime, DialogState
from ivr.nlu.types import Understanding

OPEN = "2026-11-23T10:00:00"


def _at_menu(runtime: DialogRuntime) -> DialogState:
    step = runtime.start(ev.CallStarted(caller_id="+15550001", now_iso=OPEN))
    step = runtime.handle(step.state, ev.HookDone("identify", error="no such caller"))  # -> greet -> menu
    assert step.state.node == "main_menu", step.state.node
    return step.state


def _unsure(text: str) -> Understanding:
    return Understanding(text=text, intent="balance", score=0.45, ranking=(("balance", 0.45), ("top_up", 0.4)),
                         ambiguous=("balance", "top_up"))


def test_two_close_intents_are_asked_about_and_the_answer_decides() -> None:
    registry = FlowRegistry(Settings())
    for lang, question in (("en", "Did you mean your balance or a top-up?"),
                           ("ru", "Вы имели в виду баланс или пополнение счёта?")):
        runtime = registry.get("support", lang).runtime
        menu = _at_menu(runtime)
        asked = runtime.handle(menu, ev.Heard(_unsure("money on my account")))
        says = [a for a in asked.actions if isinstance(a, ev.Say)]
        assert [s.prompt_id for s in says] == [CHOICE_PROMPT] and says[0].text == question
        assert isinstance(asked.actions[-1], ev.Listen) and asked.state.node == "main_menu"
        assert asked.state.choices == ("balance", "top_up") and asked.state.no_match == 0
        # the answer names one of them: that one is taken (here below the threshold, but ranked)
        answer = Understanding(text="the top up", intent="none", score=0.3, ranking=(("top_up", 0.3),))
        chosen = runtime.handle(asked.state, ev.Heard(answer))
        assert chosen.state.intent == "top_up" and chosen.state.choices == ()
        # "repeat" after the question repeats the question
        again = runtime.handle(asked.state, ev.Heard(Understanding(text="what", intent="repeat", score=0.9)))
        assert [a.prompt_id for a in again.actions if isinstance(a, ev.Say)] == [CHOICE_PROMPT]


def test_asked_once_then_handled_as_usual() -> None:
    runtime = FlowRegistry(Settings()).get("support", "en").runtime
    asked = runtime.handle(_at_menu(runtime), ev.Heard(_unsure("money")))
    # still unclear: no second question; the usual decision (the best intent) is taken
    again = runtime.handle(asked.state, ev.Heard(_unsure("money please")))
    assert again.state.choices == () and again.state.intent == "balance"


def test_a_vague_request_through_the_real_nlu_is_asked_about() -> None:
    """"my data" could be buying or sharing data: the caller is asked, and the answer decides."""
    loaded = FlowRegistry(Settings()).get("support", "en")
    assert loaded.nlu.understand("what is my balance").ambiguous == ()
    vague = loaded.nlu.understand("my data")
    assert vague.ambiguous == ("data_addon", "share_data"), vague.ranking
    asked = loaded.runtime.handle(_at_menu(loaded.runtime), ev.Heard(vague))
    assert asked.actions[0].text == "Did you mean buying extra data or sharing data?"  # type: ignore[union-attr]
    answer = loaded.nlu.understand("sharing it with my wife")
    assert loaded.runtime.handle(asked.state, ev.Heard(answer)).state.intent == "share_data"


def test_free_form_listens_carry_the_domain_words_when_the_grammar_asks() -> None:
    registry = FlowRegistry(Settings())
    loaded = registry.get("support", "en")
    en = loaded.runtime
    listen = next(a for a in en.handle(_at_menu(en), ev.NoInput()).actions if isinstance(a, ev.Listen))
    assert listen.phrases is None and listen.hints is None  # off by default (docs/nlu.md)
    loaded.nlu.grammar.asr_hints = True  # as `asr_hints: true` in grammars/en would
    listen = next(a for a in en.handle(_at_menu(en), ev.NoInput()).actions if isinstance(a, ev.Listen))
    assert listen.phrases is None and listen.hints  # English is free-form (Whisper): hints, no phrase list
    assert "balance" in listen.hints[:20] and "roaming" in listen.hints
    ko = registry.get("support", "ko").runtime
    listen = next(a for a in ko.handle(_at_menu(ko), ev.NoInput()).actions if isinstance(a, ev.Listen))
    assert listen.phrases and listen.hints is None  # Korean Vosk has its phrase list instead
