"""Whole conversations with the shipped support flow, in EN/RU/KO, hooks run against a real SQLite DB.

Driven like `ivr chat`, by the conversation driver live calls run (ivr/dialog/driver.py) with the
chat adapter: typed lines are utterances (through the real NLU), "#5" presses keys, "" is silence.
Every escalation path is here too: no-input x3, no-match x3, operator, after hours, the survey by
voice and by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ivr.commands.chat import ChatResult, converse
from ivr.config import Settings
from ivr.demo_operator import hook_context_for
from ivr.demo_operator.db import OperatorDb
from ivr.dialog import events as ev
from ivr.dialog.registry import FlowRegistry

OPEN = "2026-11-23T10:00:00"  # a Monday morning
CLOSED = "2026-11-22T10:00:00"  # a Sunday


@pytest.fixture(scope="module")
def registry() -> FlowRegistry:
    registry = FlowRegistry(Settings())
    assert registry.reload() == []
    return registry


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "demo_operator.sqlite3"


def talk(registry: FlowRegistry, db_path: Path, lang: str, lines: list[str], *, now: str = OPEN,
         caller: str = "") -> ChatResult:
    context: dict[str, Any] = hook_context_for(Settings(), db_path)
    return converse(registry.get("support", lang), iter(lines), context, caller_id=caller, now_iso=now)


def said(result: ChatResult) -> str:
    return "\n".join(result.said)


def prompt_ids(result: ChatResult) -> list[str]:
    return [a.prompt_id for a in result.actions if isinstance(a, ev.Say)]


def transfer(result: ChatResult) -> ev.Transfer:
    found = [a for a in result.actions if isinstance(a, ev.Transfer)]
    assert found, f"no transfer; said: {result.said}"
    return found[-1]


# ---- English ----------------------------------------------------------------------------------
def test_en_balance_from_the_db_then_survey_by_voice(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["how much money do I have", "no", "four"])
    assert "Your balance is 12 dollars and 50 cents, and you have 3.5 gigabytes of data left." in result.said
    assert result.survey == 4
    assert (result.outcome, result.reason) == ("hangup", "completed")
    assert any(isinstance(a, ev.RecordSurvey) and a.score == 4 for a in result.actions)


def test_en_known_caller_gets_their_own_balance(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["balance", "no", "#5"], caller="+15550101")
    assert "Your balance is 48 dollars" in said(result)
    assert result.survey == 5


def test_en_top_up_with_the_amount_in_the_request(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["I'd like to top up fifty dollars", "yes", "no", "#5"])
    assert "ask_top_up_amount" not in prompt_ids(result)  # said along with the request: not asked again
    assert "You would like to add 50 dollars to your account. Is that right?" in result.said
    assert "Your balance is now 62 dollars and 50 cents." in said(result)
    db = OperatorDb(db_path)
    assert db.find("", "en").balance == 62.5
    assert ("+15550100", "top_up", "50.0 USD") in db.operations()


def test_en_top_up_amount_asked_then_typed_on_the_keypad(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["top up", "#2", "#0#", "yes", "no", "#5"])
    assert "ask_top_up_amount" in prompt_ids(result)
    assert "Done. 20 dollars has been added." in said(result)


def test_en_tariff_change_needs_confirmation(registry: FlowRegistry, db_path: Path) -> None:
    declined = talk(registry, db_path, "en", ["change my tariff", "the unlimited one", "no", "no", "#3"])
    assert "Shall I switch you to it?" in said(declined)
    assert "cancelled" in said(declined)
    assert OperatorDb(db_path).find("", "en").tariff == "smart"
    accepted = talk(registry, db_path, "en", ["change my tariff", "unlimited", "yes", "no", "#3"])
    assert "The Unlimited tariff gives you unlimited data for 45 dollars a month." in said(accepted)
    assert "Done. You are now on the Unlimited tariff." in accepted.said
    assert OperatorDb(db_path).find("", "en").tariff == "unlimited"


def test_en_tariff_by_keys_and_same_tariff(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["#4", "#2", "no", "#1"])
    assert "You are already on the Smart tariff." in result.said
    assert transfer(talk(registry, db_path, "en", ["#4", "#0"])).reason == "caller_asked"  # 0 still = operator


def test_en_tariff_info(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["what's my current tariff", "no", "#4"])
    assert "You are on the Smart tariff: 20 gigabytes for 25 dollars a month." in result.said


def test_en_share_data_with_phone_and_gigabytes(registry: FlowRegistry, db_path: Path) -> None:
    lines = ["I want to share two gigs", "one five five five zero one zero one", "yes", "no", "#5"]
    result = talk(registry, db_path, "en", lines)
    assert "You would like to send 2 gigabytes to 1 5 5 5 0 1 0 1. Is that right?" in result.said
    assert "You have 1.5 gigabytes left." in said(result)
    db = OperatorDb(db_path)
    assert db.find("", "en").data_left == 1.5
    assert db.find("+15550101").data_left == 2.0  # the receiver is one of ours: got them at once


def test_en_share_more_than_left_is_refused(registry: FlowRegistry, db_path: Path) -> None:
    lines = ["share data", "ten gigabytes", "nine one six five five five one two three four", "one gigabyte",
             "no", "no", "#3"]
    result = talk(registry, db_path, "en", lines)
    assert "Sorry, you only have 3.5 gigabytes left, so you cannot share 10 gigabytes." in result.said
    assert "You would like to send 1 gigabyte to 9 1 6 5 5 5 1 2 3 4. Is that right?" in result.said


def test_en_data_addon(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["buy more data", "five gigabytes", "yes", "no", "#5"])
    assert "5 gigabytes of extra data costs 10 dollars. Shall I add it?" in result.said
    assert "You now have 8.5 gigabytes of data, and your balance is 2 dollars and 50 cents." in said(result)


def test_en_block_sim(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["I lost my phone", "yes", "no", "#5"])
    assert "Your SIM card is blocked." in said(result)
    assert OperatorDb(db_path).find("", "en").blocked


@pytest.mark.parametrize("answer", ["absolutely not", "of course not", "definitely not", "not right",
                                    "I do not think so"])
def test_en_negated_answer_at_the_block_sim_confirmation_does_not_block(
        registry: FlowRegistry, db_path: Path, answer: str) -> None:
    result = talk(registry, db_path, "en", ["block my sim", answer, "/quit"])
    assert "Shall I block it now?" in said(result)
    assert "Your SIM card is blocked." not in said(result)
    assert "All right, I have cancelled that." in result.said
    assert not OperatorDb(db_path).find("", "en").blocked
    assert not any(isinstance(a, ev.RunHook) and a.name.endswith("block_sim") for a in result.actions)


def test_en_unclear_answer_at_the_block_sim_confirmation_is_asked_again(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["block my sim", "yes no", "/quit"])
    assert "no_match" in prompt_ids(result)
    assert said(result).count("Shall I block it now?") == 2
    assert not OperatorDb(db_path).find("", "en").blocked


@pytest.mark.parametrize(("lang", "lines"), [
    ("ru", ["у меня украли телефон", "конечно нет", "/quit"]),
    ("ru", ["у меня украли телефон", "не согласен", "/quit"]),
    ("ko", ["분실 신고", "안 돼요", "/quit"]),
    ("ko", ["분실 신고", "싫어요", "/quit"]),
])
def test_negated_answer_does_not_block_in_russian_and_korean(
        registry: FlowRegistry, db_path: Path, lang: str, lines: list[str]) -> None:
    result = talk(registry, db_path, lang, lines)
    assert not OperatorDb(db_path).find("", lang).blocked, result.said
    assert not any(isinstance(a, ev.RunHook) and a.name.endswith("block_sim") for a in result.actions)


def test_ko_top_up_amount_in_words_with_spaces(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "ko", ["만 오천 원 충전해 주세요", "네", "/quit"])
    assert "만 오천 원을 충전할까요?" in result.said
    assert OperatorDb(db_path).find("", "ko").balance == 30000.0


def test_en_roaming_and_internet(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["I'm going abroad", "yes", "yes", "internet settings", "no", "#5"])
    assert "Roaming is off for your number. Turning it on is free. Shall I turn it on?" in result.said
    assert "Done. Roaming is on. Have a good trip." in result.said
    assert "add the access point internet.demo" in said(result)
    assert OperatorDb(db_path).find("", "en").roaming


def test_en_operator_handoff_with_summary(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["what is my balance", "let me speak to an agent"])
    handoff = transfer(result)
    assert (handoff.route, handoff.reason, handoff.intent) == ("support", "caller_asked", "balance")
    assert "intent=balance" in handoff.summary and "let me speak to an agent" in handoff.summary
    assert handoff.variables["IVR_LANG"] == "en"
    assert handoff.variables["IVR_SLOT_BALANCE_TEXT"] == "12 dollars and 50 cents"
    assert result.outcome == "transfer"


def test_en_operator_by_key_zero(registry: FlowRegistry, db_path: Path) -> None:
    assert transfer(talk(registry, db_path, "en", ["#0"])).reason == "caller_asked"


def test_en_repeat_says_the_last_prompts_again(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["balance", "say that again", "/quit"])
    balance = "Your balance is 12 dollars and 50 cents, and you have 3.5 gigabytes of data left."
    assert result.said.count(balance) == 2
    assert result.said.count("Is there anything else I can help you with?") == 2


def test_en_help_says_the_keys(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["help", "/quit"])
    assert "main_menu_keys" in prompt_ids(result)


# ---- escalation ------------------------------------------------------------------------------
def test_no_input_three_times_reprompts_then_keys_then_live_line(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["", "", ""])
    ids = prompt_ids(result)
    assert ids[-5:] == ["no_input", "main_menu_short", "no_input", "main_menu_keys", "transferring_escalation"]
    handoff = transfer(result)
    assert (handoff.route, handoff.reason) == ("support", "no_input")


def test_no_match_three_times_reprompts_then_keys_then_live_line(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["order me a pizza", "tell me a joke", "what's the weather"])
    assert prompt_ids(result)[-5:] == ["no_match", "main_menu_short", "no_match", "main_menu_keys",
                                       "transferring_escalation"]
    assert transfer(result).reason == "no_match"


def test_escalation_counts_reset_after_a_good_answer(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["", "", "balance", "", "", "/quit"])
    assert result.outcome == "caller_hung_up"  # two silences, an answer, two silences: no transfer


def test_unknown_key_is_a_no_match(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["##", "/quit"])
    assert "no_match" in prompt_ids(result)


def test_after_hours_callback(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["operator", "#1", "no", "#5"], now=CLOSED, caller="+15550101")
    ids = prompt_ids(result)
    assert ids[:2] == ["welcome", "after_hours_notice"]
    assert "after_hours_operator" in ids and "callback_booked" in ids
    assert "An operator will call you back at plus 1 5 5 5 0 1 0 1 when we open." in said(result)
    assert not [a for a in result.actions if isinstance(a, ev.Transfer)]
    assert ("+15550101", "callback", "operator") in OperatorDb(db_path).operations()


def test_after_hours_line(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["agent", "#2"], now=CLOSED)
    handoff = transfer(result)
    assert (handoff.route, handoff.reason) == ("support-afterhours", "after_hours")


def test_after_hours_escalation_goes_to_the_after_hours_route(registry: FlowRegistry, db_path: Path) -> None:
    handoff = transfer(talk(registry, db_path, "en", ["", "", ""], now=CLOSED))
    assert (handoff.route, handoff.reason) == ("support-afterhours", "no_input")


def test_survey_silence_ends_the_call_politely(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["goodbye", "", ""])
    assert (result.outcome, result.reason) == ("hangup", "no_input")
    assert result.survey is None
    assert prompt_ids(result)[-1] == "bye"


def test_survey_out_of_range_is_asked_again(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "en", ["bye", "seven", "#9", "#3"])
    assert result.survey == 3


def test_hook_params_carry_slots_and_caller(registry: FlowRegistry) -> None:
    loaded = registry.get("support", "en")
    step = loaded.runtime.start(ev.CallStarted(caller_id="+15550100", now_iso=OPEN))
    hook = step.actions[0]
    assert isinstance(hook, ev.RunHook) and hook.name == "python:ivr.demo_operator.hooks.identify"
    assert hook.params["caller_id"] == "+15550100" and hook.params["lang"] == "en"


# ---- Russian ---------------------------------------------------------------------------------
def test_ru_full_conversation(registry: FlowRegistry, db_path: Path) -> None:
    lines = ["какой у меня баланс", "да", "пополнить счёт на двести рублей", "да", "да",
             "хочу перейти на безлимит", "да", "да", "поделиться гигабайтами", "два гигабайта",
             "плюс семь девять один шесть ноль ноль ноль ноль ноль ноль два", "да", "нет", "пять"]
    result = talk(registry, db_path, "ru", lines)
    text = said(result)
    assert "На вашем счёте 350 рублей, осталось 2 гигабайта интернета." in result.said
    assert "Пополнить счёт на 200 рублей? Верно?" in result.said
    assert "Теперь на счёте 550 рублей." in text
    assert "Готово. Теперь ваш тариф Безлимитный." in result.said
    assert "Передать 2 гигабайта на номер плюс 7 9 1 6 0 0 0 0 0 0 2? Верно?" in result.said
    assert result.survey == 5
    db = OperatorDb(db_path)
    me = db.find("", "ru")
    assert (me.balance, me.tariff, me.data_left) == (550.0, "unlimited", 0.0)
    assert db.find("+79160000002").data_left == 14.0


def test_ru_block_sim_and_operator(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "ru", ["у меня украли телефон", "да", "соедините с оператором"])
    assert "Сим-карта заблокирована." in said(result)
    handoff = transfer(result)
    assert (handoff.reason, handoff.intent) == ("caller_asked", "block_sim")


def test_ru_escalation_and_survey_by_key(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "ru", ["", "#1", "нет", "#2"])
    assert prompt_ids(result)[2:4] == ["no_input", "main_menu_short"]
    assert result.survey == 2


# ---- Korean ----------------------------------------------------------------------------------
def test_ko_full_conversation(registry: FlowRegistry, db_path: Path) -> None:
    lines = ["잔액 확인", "네", "충전 만원", "네", "네", "요금제 변경", "무제한", "네", "네",
             "데이터 선물", "일 기가바이트", "공 일 공 구 팔 칠 육 오 사 삼 이", "네", "아니요", "오"]
    result = talk(registry, db_path, "ko", lines)
    assert "고객님의 잔액은 만 오천 원이고, 남은 데이터는 사 기가바이트입니다." in result.said
    assert "만 원을 충전할까요?" in result.said
    assert "충전되었습니다. 만 원이 충전되어 잔액은 이만 오천 원입니다." in result.said
    assert "변경되었습니다. 이제 무제한 요금제입니다." in result.said
    assert "0 1 0 9 8 7 6 5 4 3 2 번으로 데이터 일 기가바이트를 보낼까요?" in result.said
    assert result.survey == 5
    me = OperatorDb(db_path).find("", "ko")
    assert (me.balance, me.tariff, me.data_left) == (25000.0, "unlimited", 3.0)


def test_ko_every_menu_intent_answers(registry: FlowRegistry, db_path: Path) -> None:
    answers = {
        "요금제 확인": "요금제는 스마트입니다",
        "로밍": "로밍이 꺼져 있습니다",
        "인터넷 설정": "internet.demo",
        "분실 신고": "유심을 정지해서",
        "데이터 추가": "몇 기가바이트 추가할까요",
    }
    for utterance, expected in answers.items():
        result = talk(registry, db_path, "ko", [utterance, "/quit"])
        assert expected in said(result), (utterance, result.said)
    assert transfer(talk(registry, db_path, "ko", ["상담원 연결"])).reason == "caller_asked"


# ---- every menu intent, every language -------------------------------------------------------
MENU_ANSWERS = {
    "en": {"balance": "Your balance is", "top_up": "How much would you like", "tariff_info": "You are on the",
           "tariff_change": "Which tariff would you like", "data_addon": "How many gigabytes would you like to add",
           "share_data": "How many gigabytes would you like to share", "roaming": "Roaming is off",
           "internet_setup": "internet settings", "block_sim": "block the SIM card", "operator": "operator"},
    "ru": {"balance": "На вашем счёте", "top_up": "На какую сумму", "tariff_info": "Ваш тариф",
           "tariff_change": "На какой тариф", "data_addon": "Сколько гигабайт добавить",
           "share_data": "Сколько гигабайт вы хотите передать", "roaming": "Роуминг на вашем номере",
           "internet_setup": "настройки интернета", "block_sim": "заблокировать сим-карту",
           "operator": "оператором"},
}


@pytest.mark.parametrize("lang", ["en", "ru", "ko"])
def test_every_menu_key_answers(registry: FlowRegistry, db_path: Path, lang: str) -> None:
    """Keys 1-9 and 0 in the main menu each reach their answer (the key fallback of every intent)."""
    loaded = registry.get("support", lang)
    keys = loaded.flow.states["main_menu"].dtmf
    for key, intent in [*keys.items(), ("0", "operator")]:
        result = talk(registry, db_path, lang, [f"#{key}", "/quit"])
        assert len(result.said) > 2, (key, intent)
        if lang in MENU_ANSWERS:
            assert MENU_ANSWERS[lang][intent] in said(result), (key, intent, result.said)


def test_hang_up_during_the_survey_counts_as_served(registry: FlowRegistry) -> None:
    runtime = registry.get("support", "en").runtime
    state = runtime.start(ev.CallStarted(now_iso=OPEN)).state
    state = runtime.handle(state, ev.HookDone("python:ivr.demo_operator.hooks.identify", {})).state
    assert not runtime.caller_served(state)
    survey = runtime.handle(state, ev.Heard(registry.get("support", "en").nlu.understand("goodbye"))).state
    assert survey.node == "goodbye" and runtime.caller_served(survey)


def test_a_caller_is_served_once_the_answer_is_given_and_stays_served(registry: FlowRegistry) -> None:
    """The balance answered, the flow asks "anything else?" (served: true): a hang-up from there on is
    contained; going back to the menu for a second request does not make the caller unserved."""
    loaded = registry.get("support", "en")
    runtime = loaded.runtime
    state = runtime.start(ev.CallStarted(now_iso=OPEN)).state
    state = runtime.handle(state, ev.HookDone("python:ivr.demo_operator.hooks.identify", {})).state
    state = runtime.handle(state, ev.Heard(loaded.nlu.understand("what is my balance"))).state
    assert state.pending_hook == "balance" and not runtime.caller_served(state)  # still working on it
    state = runtime.handle(state, ev.HookDone("python:ivr.demo_operator.hooks.balance", {
        "balance": 12.5, "currency": "USD", "balance_text": "12 dollars", "data_left_text": "3 GB"})).state
    assert state.node == "anything_else" and runtime.caller_served(state)
    state = runtime.handle(state, ev.Heard(loaded.nlu.understand("yes"))).state
    assert state.node == "menu_again" and runtime.caller_served(state)


def test_ko_block_sim_and_operator_handoff(registry: FlowRegistry, db_path: Path) -> None:
    result = talk(registry, db_path, "ko", ["분실 신고", "네", "상담원 연결해 주세요"])
    assert "유심이 정지되었습니다." in said(result)
    assert OperatorDb(db_path).find("", "ko").blocked
    handoff = transfer(result)
    assert (handoff.route, handoff.reason, handoff.intent) == ("support", "caller_asked", "block_sim")
    assert "상담원 연결해 주세요" in handoff.summary and handoff.variables["IVR_LANG"] == "ko"


def test_ru_roaming_internet_addon(registry: FlowRegistry, db_path: Path) -> None:
    lines = ["я еду за границу", "да", "да", "настроить интернет", "да", "купить интернет", "один гигабайт", "да",
             "нет", "#4"]
    result = talk(registry, db_path, "ru", lines)
    text = said(result)
    assert "Готово. Роуминг включён. Хорошей поездки!" in result.said
    assert "точку доступа internet.demo" in text
    assert "1 гигабайт дополнительного интернета стоят 100 рублей. Подключить?" in result.said
    assert "Теперь у вас 3 гигабайта интернета, на счёте 250 рублей." in text
    assert result.survey == 4


def test_listen_phrases_follow_the_grammar(registry: FlowRegistry) -> None:
    """Korean (Vosk, closed vocabulary) gets a phrase list per state; English/Russian listen free-form."""
    for lang, restricted in (("en", False), ("ru", False), ("ko", True)):
        loaded = registry.get("support", lang)
        state = loaded.runtime.start(ev.CallStarted(now_iso=OPEN)).state
        listen = loaded.runtime.handle(state, ev.HookDone("identify", {})).actions[-1]
        assert isinstance(listen, ev.Listen) and listen.state == "main_menu"
        assert (listen.phrases is not None) == restricted
        if restricted:
            assert "잔액 확인" in listen.phrases and "네" not in listen.phrases  # yes/no not expected here
        assert "balance" in listen.expected_intents and listen.dtmf["1"] == "balance"
