"""One lexicon of number words, two readers: entity parsing and PII redaction know the same words."""

from __future__ import annotations

import pytest

from ivr.nlu.entities import extract_entities
from ivr.nlu.lexicon import ALL_WORDS, DIGIT_KINDS, EN_WORDS, WEAK_ZEROS
from ivr.nlu.numbers import find_numbers
from ivr.redact import redact

DIGIT_WORDS = sorted(
    (word, "en" if word in EN_WORDS else "ru", kind, int(value))
    for word, (kind, value) in ALL_WORDS.items()
    if kind in DIGIT_KINDS
)


@pytest.mark.parametrize(("word", "lang", "kind", "value"), DIGIT_WORDS)
def test_every_digit_word_is_a_number_to_entity_parsing(word: str, lang: str, kind: str, value: int) -> None:
    tokens = ["five", word] if word in WEAK_ZEROS else [word]  # "oh" alone is an interjection
    numbers = find_numbers(tokens, lang)
    assert numbers[-1].value == value, (word, numbers)


@pytest.mark.parametrize(("word", "lang", "kind", "value"), DIGIT_WORDS)
def test_every_digit_word_is_a_digit_to_redaction(word: str, lang: str, kind: str, value: int) -> None:
    # seven digits or more said with this word alone: a phone number to mask
    repeat = -(-7 // len(str(value)))
    text = "number " + " ".join([word] * repeat) + " thanks"
    assert redact(text) == "number [PHONE] thanks"


def test_both_readers_share_the_russian_case_forms() -> None:
    # "с восьми": the genitive was unknown to redaction, which masked from "девятьсот" on
    said = "номер начинается с восьми девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь"
    assert redact(said) == "номер начинается с [PHONE]"
    # "ста двадцати трех" (123, genitive): unknown to redaction, so the number stayed in the clear
    assert redact("звоните на восемь девятьсот шестнадцать ста двадцати трех") == "звоните на [PHONE]"
    assert extract_entities("восемь девятьсот шестнадцать ста двадцати трех", "ru")["phone"] == "8916123"


def test_both_readers_know_o_for_zero() -> None:
    # ASR writes "oh" as "o": redaction read it as a zero, entity parsing split the phone number there
    said = "my number is nine o one five five five one two three four"
    assert extract_entities(said, "en")["phone"] == "9015551234"
    assert redact(said) == "my number is [PHONE]"
    # alone, "o" is no more a number than "oh" is
    assert find_numbers(["o", "well"], "en") == []
