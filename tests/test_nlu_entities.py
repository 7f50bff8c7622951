"""Entity parsing tables: numbers in words, amounts, gigabytes, phone numbers, yes/no (EN, RU, KO)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.nlu.entities import extract_entities, yes_no_polarity
from ivr.nlu.numbers import find_numbers, parse_korean, words_to_number
from ivr.nlu.text import normalize, tokenize

NUMBERS = [
    ("en", "zero", 0),
    ("en", "seven", 7),
    ("en", "fifteen", 15),
    ("en", "twenty", 20),
    ("en", "twenty five", 25),
    ("en", "twenty-five", 25),
    ("en", "two hundred fifty", 250),
    ("en", "two hundred and fifty", 250),
    ("en", "a hundred and five", 105),
    ("en", "one thousand two hundred", 1200),
    ("en", "three thousand and forty two", 3042),
    ("en", "nineteen hundred", 1900),
    ("en", "one million two hundred thousand", 1_200_000),
    ("en", "a thousand", 1000),
    ("en", "250", 250),
    ("en", "1.5", 1.5),
    ("ru", "ноль", 0),
    ("ru", "пять", 5),
    ("ru", "двенадцать", 12),
    ("ru", "двести пятьдесят", 250),
    ("ru", "сто", 100),
    ("ru", "тысяча двести", 1200),
    ("ru", "две тысячи пятьсот", 2500),
    ("ru", "три тысячи сорок два", 3042),
    ("ru", "девятьсот девяносто девять", 999),
    ("ko", "오천", 5000),
    ("ko", "만", 10000),
    ("ko", "이만오천", 25000),
    ("ko", "삼백오십", 350),
    ("ko", "십", 10),
    # Korean numbers said in several words make one number
    ("ko", "이만 오천", 25000),
    ("ko", "만 오천", 15000),
    ("ko", "이 만 오 천", 25000),
    ("ko", "삼 만", 30000),
    ("ko", "천 오백", 1500),
    ("ko", "삼백 오십", 350),
    ("ko", "오천 오백", 5500),
    # halves
    ("en", "one and a half", 1.5),
    ("en", "two and a half", 2.5),
    ("en", "one and one half", 1.5),
    ("en", "half a", 0.5),
    ("ru", "полтора", 1.5),
    ("ru", "полторы тысячи", 1500),
    ("ru", "два с половиной", 2.5),
]


@pytest.mark.parametrize(("lang", "text", "value"), NUMBERS)
def test_numbers_in_words(lang: str, text: str, value: int) -> None:
    assert words_to_number(text, lang) == value


def test_digit_by_digit_is_many_numbers() -> None:
    numbers = find_numbers("nine one six oh five".split(), "en")
    assert [n.value for n in numbers] == [9, 1, 6, 0, 5]


def test_oh_alone_is_not_zero() -> None:
    assert find_numbers(["oh", "i", "see"], "en") == []


def test_korean_digits_one_by_one_stay_separate() -> None:
    """공 일 공 (a phone number said digit by digit) is three numbers; a scale word joins, a digit does not."""
    numbers = find_numbers("공 일 공 일 이 삼 사".split(), "ko")
    assert [n.value for n in numbers] == [0, 1, 0, 1, 2, 3, 4]
    assert [n.value for n in find_numbers("오천원 오백원".split(), "ko")] == [5000, 500]  # the unit ends it
    assert [n.value for n in find_numbers("이 기가바이트".split(), "ko")] == [2]


def test_korean_rejects_non_numbers() -> None:
    assert parse_korean("잔액") is None
    assert parse_korean("원") is None


ENTITIES = [
    # (lang, text, expected subset of entities)
    ("en", "top up fifty dollars", {"amount": 50, "currency": "USD"}),
    ("en", "add $20 please", {"amount": 20, "currency": "USD"}),
    ("en", "a hundred and five bucks", {"amount": 105, "currency": "USD"}),
    ("en", "two gigs", {"gigabytes": 2}),
    ("en", "5 GB", {"gigabytes": 5}),
    ("en", "5gb", {"gigabytes": 5}),
    ("en", "ten gigabytes", {"gigabytes": 10}),
    ("en", "five hundred megabytes", {"gigabytes": 0.5}),
    ("en", "nine one six five five five one two three four", {"phone": "9165551234"}),
    ("en", "plus one nine one six five five five oh one two three", {"phone": "+19165550123"}),
    ("en", "nine one six double five five one two three four", {"phone": "9165551234"}),
    ("en", "share two gigs with nine one six five five five one two three four",
     {"gigabytes": 2, "phone": "9165551234"}),
    ("en", "my number is 916 555 1234", {"phone": "9165551234"}),
    ("en", "yeah", {"yes_no": "yes"}),
    ("en", "sure", {"yes_no": "yes"}),
    ("en", "yes please", {"yes_no": "yes"}),
    ("en", "that's right", {"yes_no": "yes"}),
    ("en", "of course", {"yes_no": "yes"}),
    ("en", "nope", {"yes_no": "no"}),
    ("en", "no thanks", {"yes_no": "no"}),
    ("en", "not really", {"yes_no": "no"}),
    ("en", "three", {"number": 3}),
    ("ru", "сто рублей", {"amount": 100, "currency": "RUB"}),
    ("ru", "пополнить на двести пятьдесят рублей", {"amount": 250, "currency": "RUB"}),
    ("ru", "тысяча двести рублей", {"amount": 1200, "currency": "RUB"}),
    ("ru", "500 р", {"amount": 500, "currency": "RUB"}),
    ("ru", "три гигабайта", {"gigabytes": 3}),
    ("ru", "поделиться двумя гигабайтами", {"gigabytes": 2}),
    ("ru", "5 гб", {"gigabytes": 5}),
    ("ru", "плюс семь девять один шесть пять пять пять один два три четыре", {"phone": "+79165551234"}),
    ("ru", "восемь девятьсот шестнадцать пятьсот пятьдесят пять двенадцать тридцать четыре",
     {"phone": "89165551234"}),
    ("ru", "да", {"yes_no": "yes"}),
    ("ru", "конечно", {"yes_no": "yes"}),
    ("ru", "да, верно", {"yes_no": "yes"}),
    ("ru", "нет", {"yes_no": "no"}),
    ("ru", "не надо", {"yes_no": "no"}),
    ("ru", "пять", {"number": 5}),
    ("ko", "오천원", {"amount": 5000, "currency": "KRW"}),
    ("ko", "만 원", {"amount": 10000, "currency": "KRW"}),
    ("ko", "두 기가바이트", {"gigabytes": 2}),
    ("ko", "삼 기가바이트", {"gigabytes": 3}),
    ("ko", "공일공 일이삼사 오육칠팔", {"phone": "01012345678"}),
    ("ko", "공 일 공 일 이 삼 사 오 육 칠 팔", {"phone": "01012345678"}),
    ("ko", "네", {"yes_no": "yes"}),
    ("ko", "아니요", {"yes_no": "no"}),
    # Korean amounts said in several words are amounts, not phone numbers
    ("ko", "이만 오천 원", {"amount": 25000, "currency": "KRW", "phone": None}),
    ("ko", "만 오천 원 충전해 주세요", {"amount": 15000, "currency": "KRW", "phone": None}),
    ("ko", "이만 오천원", {"amount": 25000, "currency": "KRW", "phone": None}),
    ("ko", "이 만 오 천 원", {"amount": 25000, "currency": "KRW", "phone": None}),
    ("ko", "삼 만원", {"amount": 30000, "currency": "KRW"}),
    ("ko", "천 오백 원", {"amount": 1500, "currency": "KRW"}),
    ("ko", "충전 오만 원", {"amount": 50000, "currency": "KRW", "phone": None}),
    ("ko", "오천 오백 원 공일공 일이삼사 오육칠팔", {"amount": 5500, "phone": "01012345678"}),
    ("ko", "공 일 공 구 팔 칠 육 오 사 삼 이", {"phone": "01098765432"}),
    ("ko", "십 기가바이트", {"gigabytes": 10}),
    # cents after the amount
    ("en", "twenty dollars and fifty cents", {"amount": 20.5, "currency": "USD"}),
    ("en", "twenty dollars fifty cents", {"amount": 20.5, "currency": "USD"}),
    ("en", "top up ten dollars and five cents", {"amount": 10.05, "currency": "USD"}),
    ("en", "five euros and twenty cents", {"amount": 5.2, "currency": "EUR"}),
    ("en", "fifty cents", {"amount": 0.5, "currency": "USD"}),
    ("en", "twenty dollars", {"amount": 20, "currency": "USD"}),
    ("ru", "двадцать рублей пятьдесят копеек", {"amount": 20.5, "currency": "RUB"}),
    ("ru", "сто рублей и десять копеек", {"amount": 100.1, "currency": "RUB"}),
    # halves of a gigabyte
    ("en", "one and a half gigabytes", {"gigabytes": 1.5}),
    ("en", "two and a half gigs", {"gigabytes": 2.5}),
    ("en", "half a gig", {"gigabytes": 0.5}),
    ("ru", "полтора гигабайта", {"gigabytes": 1.5}),
    ("ru", "два с половиной гигабайта", {"gigabytes": 2.5}),
    ("ru", "пол гигабайта", {"gigabytes": 0.5}),
]


@pytest.mark.parametrize(("lang", "text", "expected"), ENTITIES)
def test_entities(lang: str, text: str, expected: dict) -> None:
    found = extract_entities(text, lang)
    assert {k: found.get(k) for k in expected} == expected, found


def test_whole_amounts_stay_int_and_halves_are_float() -> None:
    """The types the hooks and prompts get: a whole amount is an int, cents or halves make a float."""
    assert type(extract_entities("twenty dollars", "en")["amount"]) is int
    assert type(extract_entities("twenty dollars and fifty cents", "en")["amount"]) is float
    assert type(extract_entities("이만 오천 원", "ko")["amount"]) is int
    assert type(extract_entities("полторы тысячи рублей", "ru")["amount"]) is int
    assert type(extract_entities("полтора гигабайта", "ru")["gigabytes"]) is float


# ---- yes / no: negation-aware; unclear answers give no value ------------------------------------
YES_NO_FORMS = [
    # English: negated yes words are no
    ("en", "absolutely not", "no"),
    ("en", "of course not", "no"),
    ("en", "definitely not", "no"),
    ("en", "certainly not", "no"),
    ("en", "not right", "no"),
    ("en", "that's not right", "no"),
    ("en", "that is not correct", "no"),
    ("en", "that's not correct", "no"),
    ("en", "not quite right", "no"),
    ("en", "that can't be right", "no"),
    ("en", "not exactly", "no"),
    ("en", "I do not think so", "no"),
    ("en", "I don't think so", "no"),
    ("en", "no it is not", "no"),
    ("en", "don't do it", "no"),
    ("en", "please don't", "no"),
    ("en", "not at all", "no"),
    ("en", "no way", "no"),
    ("en", "nope", "no"),
    ("en", "never mind", "no"),
    ("en", "not", "no"),
    # English yes, including no-words that mean yes
    ("en", "yes", "yes"),
    ("en", "yeah sure", "yes"),
    ("en", "of course", "yes"),
    ("en", "absolutely", "yes"),
    ("en", "that's right", "yes"),
    ("en", "no problem", "yes"),
    ("en", "sure why not", "yes"),
    ("en", "yep go ahead", "yes"),
    ("en", "uh yes thanks", "yes"),
    # English unclear or neither: no value (the caller is asked again)
    ("en", "yes no", None),
    ("en", "yeah no", None),
    ("en", "no yes", None),
    ("en", "right cancel it", None),
    ("en", "i'm not sure", None),
    ("en", "maybe", None),
    ("en", "i don't know", None),
    ("en", "what is my balance", None),
    # Russian
    ("ru", "конечно нет", "no"),
    ("ru", "точно нет", "no"),
    ("ru", "не правильно", "no"),
    ("ru", "не верно", "no"),
    ("ru", "не совсем верно", "no"),
    ("ru", "не согласен", "no"),
    ("ru", "не согласна", "no"),
    ("ru", "не надо", "no"),
    ("ru", "не-а", "no"),
    ("ru", "неа", "no"),
    ("ru", "не", "no"),
    ("ru", "да нет", "no"),
    ("ru", "хорошо, не надо", "no"),
    ("ru", "не подтверждаю", "no"),
    ("ru", "ни в коем случае", "no"),
    ("ru", "нет, спасибо", "no"),
    ("ru", "да", "yes"),
    ("ru", "да, конечно", "yes"),
    ("ru", "конечно", "yes"),
    ("ru", "правильно", "yes"),
    ("ru", "согласен", "yes"),
    ("ru", "ну да", "yes"),
    ("ru", "ок", "yes"),
    ("ru", "нет да", None),
    ("ru", "не знаю", None),
    ("ru", "может быть", None),
    ("ru", "какой у меня тариф", None),
    # Korean
    ("ko", "아니요", "no"),
    ("ko", "아뇨", "no"),
    ("ko", "안 돼요", "no"),
    ("ko", "안돼요", "no"),
    ("ko", "아니에요", "no"),
    ("ko", "싫어요", "no"),
    ("ko", "안 맞아요", "no"),
    ("ko", "안 좋아요", "no"),
    ("ko", "그렇지 않아요", "no"),
    ("ko", "하지 마세요", "no"),
    ("ko", "취소", "no"),
    ("ko", "네", "yes"),
    ("ko", "네 맞아요", "yes"),
    ("ko", "맞아요", "yes"),
    ("ko", "좋아요", "yes"),
    ("ko", "응", "yes"),
    ("ko", "네 아니요", None),
    ("ko", "모르겠어요", None),
    ("ko", "잔액 확인", None),
]


@pytest.mark.parametrize(("lang", "text", "answer"), YES_NO_FORMS)
def test_yes_no_is_negation_aware(lang: str, text: str, answer: str | None) -> None:
    assert extract_entities(text, lang).get("yes_no") == answer


def test_yes_and_no_together_are_unclear_not_guessed() -> None:
    assert yes_no_polarity(tokenize("yes no"), "en") == "unclear"
    assert yes_no_polarity(tokenize("네 아니요"), "ko") == "unclear"
    assert yes_no_polarity(tokenize("what is my balance"), "en") is None
    assert "yes_no" not in extract_entities("yes no", "en")


def test_plain_text_has_no_entities() -> None:
    assert extract_entities("what is my tariff", "en") == {}
    assert extract_entities("какой у меня тариф", "ru") == {}


def test_short_numbers_are_not_phones() -> None:
    found = extract_entities("one two three", "en")
    assert "phone" not in found and found["number"] == 1


def test_normalize() -> None:
    assert normalize("Top-up: $50, please!") == "top up $ 50 please"
    assert normalize("Ещё 1,5 ГБ") == "еще 1,5 гб"


# ---- property: any number spelled out reads back ---------------------------------------------

_EN_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
           "sixteen seventeen eighteen nineteen".split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_RU_ONES = "ноль один два три четыре пять шесть семь восемь девять десять одиннадцать двенадцать тринадцать " \
           "четырнадцать пятнадцать шестнадцать семнадцать восемнадцать девятнадцать".split()
_RU_TENS = "_ _ двадцать тридцать сорок пятьдесят шестьдесят семьдесят восемьдесят девяносто".split()
_RU_HUNDREDS = "_ сто двести триста четыреста пятьсот шестьсот семьсот восемьсот девятьсот".split()


def _en_below_1000(n: int, with_and: bool) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_EN_ONES[n // 100], "hundred"]
        n %= 100
        if n and with_and:
            words.append("and")
    if n >= 20:
        words.append(_EN_TENS[n // 10])
        n %= 10
        if n:
            words.append(_EN_ONES[n])
    elif n or not words:
        words.append(_EN_ONES[n])
    return words


def spell_en(n: int, with_and: bool) -> str:
    if n < 1000:
        return " ".join(_en_below_1000(n, with_and))
    words = _en_below_1000(n // 1000, with_and) + ["thousand"]
    if n % 1000:
        words += _en_below_1000(n % 1000, with_and)
    return " ".join(words)


def _ru_below_1000(n: int, feminine: bool = False) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words.append(_RU_HUNDREDS[n // 100])
        n %= 100
    if n >= 20:
        words.append(_RU_TENS[n // 10])
        n %= 10
        if not n:
            return words
    if n or not words:
        word = _RU_ONES[n]
        if feminine and n in (1, 2):
            word = {1: "одна", 2: "две"}[n]
        words.append(word)
    return words


def spell_ru(n: int) -> str:
    if n < 1000:
        return " ".join(_ru_below_1000(n))
    k = n // 1000
    last, last2 = k % 10, k % 100
    noun = "тысяча" if last == 1 and last2 != 11 else "тысячи" if 2 <= last <= 4 and not 12 <= last2 <= 14 else "тысяч"
    words = _ru_below_1000(k, feminine=True) + [noun]
    if n % 1000:
        words += _ru_below_1000(n % 1000)
    return " ".join(words)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=999_999), st.booleans())
def test_any_english_number_reads_back(n: int, with_and: bool) -> None:
    assert words_to_number(spell_en(n, with_and), "en") == n, spell_en(n, with_and)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=999_999))
def test_any_russian_number_reads_back(n: int) -> None:
    assert words_to_number(spell_ru(n), "ru") == n, spell_ru(n)
