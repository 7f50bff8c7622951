"""PII redaction: tables of what must go and what must stay, plus the logging filter."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from ivr.redact import RedactingFilter, install_log_redaction, luhn_ok, redact, redact_caller
from ivr.storage.records import CallStore, StoreParams, TurnRecord

POSITIVES = [
    # cards: Luhn-valid 13-19 digits, any grouping
    ("my card is 4111 1111 1111 1111 thanks", "my card is [CARD] thanks"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("5500005555555559", "[CARD]"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "[CARD]"),  # digits an ASR wrote as numerals
    ("6011 0009 9013 9424 please", "[CARD] please"),
    # phones
    ("call me at (555) 123-4567", "call me at [PHONE]"),
    ("+1 555 123 4567", "[PHONE]"),
    ("my number is 5551234567", "my number is [PHONE]"),
    ("5 5 5 1 2 3 4 5 6 7", "[PHONE]"),
    ("010-1234-5678", "[PHONE]"),
    ("8 800 555 35 35", "[PHONE]"),
    ("мой телефон 89161234567", "мой телефон [PHONE]"),
    ("+44 20 7946 0958 or +7 916 123-45-67", "[PHONE] or [PHONE]"),
    # accounts: other long digit runs
    ("account 12345678", "account [ACCOUNT]"),
    ("my account number is 9876543210", "my account number is [ACCOUNT]"),
    ("transfer 1500 dollars to account 40817810099910004312", "transfer 1500 dollars to account [ACCOUNT]"),
    ("order 1234567", "order [ACCOUNT]"),
    ("4111 1111 1111 1112", "[ACCOUNT]"),  # card-shaped but fails Luhn: still a long number
    ("номер счёта 40817810000000000001", "номер счёта [ACCOUNT]"),
    # e-mail
    ("mail john.doe+ivr@example.co.uk now", "mail [EMAIL] now"),
]

NEGATIVES = [
    "250 dollars",
    "I want to add 250 dollars",
    "$1,250.00",
    "pay $ 250000",
    "1 500 000 рублей",
    "пополнить на 5000 рублей",
    "10000원 충전해 주세요",
    "balance is 12500.75",
    "on 2024-05-01 at 10:30",
    "press 1",
    "I need 2 tickets for 3 people",
    "room 12345",
    "PIN 1234",
    "extension 204",
    "",
    "no digits here at all",
    # what log lines carry
    "call 550e8400-e29b-41d4-a716-446655440000 started",
    "at 2026-11-23 18:00:13 ok",
    "2026-11-23T18:00:13Z",
    "listening on 127.0.0.1:4573",
    "espeak-ng 1.51.0",
]


# what ASR writes when the caller says the digits: words, possibly mixed with numerals
SPOKEN_POSITIVES = [
    # English
    ("my card is four one one one one one one one one one one one one one one one", "my card is [CARD]"),
    ("call me on five five five zero one two three four five six seven", "call me on [PHONE]"),
    ("Five, five, five. Zero, one, two, three.", "[PHONE]."),  # Whisper punctuates
    ("it's oh two oh seven nine four six oh nine five eight", "it's [PHONE]"),
    ("double five triple seven one two", "[PHONE]"),
    ("plus one five five five one two three four five six seven", "[PHONE]"),
    ("call one eight hundred five five five one two three four now", "call [PHONE] now"),
    ("five five five, forty-five sixty-seven", "[PHONE]"),
    ("forty one eleven eleven eleven eleven eleven eleven eleven", "[CARD]"),
    ("my account number is four oh eight one seven eight one oh", "my account number is [ACCOUNT]"),
    ("FOUR ONE ONE ONE ONE ONE ONE ONE ONE ONE ONE ONE ONE ONE ONE TWO", "[ACCOUNT]"),  # fails Luhn
    # Russian
    ("плюс семь девять один шесть один два три четыре пять шесть семь", "[PHONE]"),
    ("мой номер восемь девять один шесть один два три, четыре пять, шесть семь", "мой номер [PHONE]"),
    ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь", "[PHONE]"),
    (
        "номер карты четыре один один один один один один один один один один один один один один один",
        "номер карты [CARD]",
    ),
    ("счёт четыре ноль восемь один семь восемь один ноль", "счёт [ACCOUNT]"),
    ("Ноль Девять Один Шесть Одна Две Три", "[PHONE]"),
    # Korean, spaced or glued, with a particle glued on
    ("공 일 공 일 이 삼 사 오 육 칠 팔", "[PHONE]"),
    ("제 번호는 공일공 일이삼사 오육칠팔이에요", "제 번호는 [PHONE]이에요"),
    ("영일영-일이삼사-오육칠팔로 전화 주세요", "[PHONE]로 전화 주세요"),
    ("플러스 팔 이 일 공 일 이 삼 사 오 육 칠 팔", "[PHONE]"),
    ("카드 사일일일 일일일일 일일일일 일일일일", "카드 [CARD]"),
    # words mixed with numerals
    ("5 5 5 zero one two three", "[PHONE]"),
    ("my number is 555 one two three four", "my number is [PHONE]"),
    ("+7 девять один шесть 123 45 67", "[PHONE]"),
    ("010 일이삼사 5678", "[PHONE]"),
    ("card four one 11 1111 1111 1111", "card [CARD]"),
    ("top up 250 dollars, my phone is five five five 1234 thanks", "top up 250 dollars, my phone is [PHONE] thanks"),
]

SPOKEN_NEGATIVES = [
    # amounts said as compound numbers
    "two hundred fifty dollars",
    "add one thousand two hundred fifty dollars",
    "двести пятьдесят рублей",
    "пополнить на пятьсот тысяч рублей",
    "оплатить четыре тысячи пятьсот рублей",
    "이만 오천 원",
    "오천 원 충전해 주세요",
    "one 500 000 dollars",
    # short runs: menu choices, counts, a spoken PIN or code (fewer than 7 digits)
    "press one",
    "option two please",
    "PIN one two three four",
    "one two three four five six",
    "I need two tickets for three people",
    "between one and two o'clock",
    "ten thirty",
    "nineteen ninety nine",
    "in twenty twenty five",
    "일 번 눌러 주세요",
    "이 일은 오늘 해야 해요",
    "사 층 오 호실",
    "Oh, one two three four five six",  # "oh" as an interjection is no leading zero
    "on 2024-05-01 one ticket",
    "at 10:30 one two three four five six",
    "two 12.50 one",
]


@pytest.mark.parametrize(("text", "expected"), SPOKEN_POSITIVES)
def test_spoken_digits_are_redacted(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", SPOKEN_NEGATIVES)
def test_amounts_and_short_spoken_numbers_stay(text):
    assert redact(text) == text


@pytest.mark.parametrize("text", [t for t, _ in SPOKEN_POSITIVES] + SPOKEN_NEGATIVES)
def test_spoken_redaction_is_idempotent(text):
    once = redact(text)
    assert redact(once) == once


SPOKEN_VOCABULARY = (
    "one two five oh o zero double triple hundred forty eleven plus dollars and 7 42 1.5 "
    "ноль одна две пять девятьсот сорок тысяч плюс рублей 공 일 이 팔 오육칠팔이요 이만 원 [PHONE]"
).split()


@given(
    st.lists(
        st.tuples(st.sampled_from(SPOKEN_VOCABULARY), st.sampled_from([" ", ", ", "-", ". ", " - ", ":", ""])),
        max_size=30,
    )
)
def test_spoken_redaction_is_idempotent_on_word_soup(parts):
    text = "".join(word + sep for word, sep in parts)
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize(("text", "expected"), POSITIVES)
def test_pii_is_redacted(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", NEGATIVES)
def test_harmless_numbers_stay(text):
    assert redact(text) == text


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


@given(st.lists(st.integers(0, 9), min_size=13, max_size=19))
def test_any_valid_card_number_is_redacted(digits):
    body = "".join(map(str, digits))
    check = next(d for d in "0123456789" if luhn_ok(body[:-1] + d))
    number = body[:-1] + check
    grouped = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    for form in (number, grouped):
        out = redact(f"card {form} ok")
        assert out == "card [CARD] ok"


@given(st.text())
def test_redaction_is_idempotent_and_never_raises(text):
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize(
    ("caller", "expected"),
    [("+15551234567", "*******4567"), ("sip:100@pbx", "***"), ("", ""), ("Anonymous", "")],
)
def test_caller_keeps_last_four(caller, expected):
    assert redact_caller(caller) == expected


def test_logging_filter_redacts_message_and_args(caplog):
    logger = logging.getLogger("test.redact")
    handler_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("caller %s said %r", "+1 555 123 4567", "card 4111 1111 1111 1111")
        logger.warning("top up %d dollars", 250)
        logger.warning("heard %r", "call me on five five five zero one two three four five six seven")
        logger.warning("heard %r", "two hundred fifty dollars")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in handler_records] == [
        "caller [PHONE] said 'card [CARD]'",
        "top up 250 dollars",
        "heard 'call me on [PHONE]'",
        "heard 'two hundred fifty dollars'",
    ]
    assert handler_records[0].args is None


def test_install_on_root_handlers():
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        flt = install_log_redaction()
        install_log_redaction()  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        assert isinstance(flt, RedactingFilter)
    finally:
        root.removeHandler(handler)


def test_spoken_digits_are_stored_redacted_in_sqlite(tmp_path):
    """Through the real store: ASR text with spoken digits never reaches the database as said."""
    url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    said = [
        "call me on five five five zero one two three four five six seven",
        "мой номер плюс семь девять один шесть один два три четыре пять шесть семь",
        "카드 번호는 사 일 일 일 일 일 일 일 일 일 일 일 일 일 일 일",
        "top up two hundred fifty dollars",
    ]
    with CallStore(url, StoreParams(spool=False)) as store:
        cid = store.open_call(lang="en")
        for i, transcript in enumerate(said):
            store.add_turn(cid, TurnRecord(idx=i, transcript=transcript, prompt="I heard " + transcript))
        store.add_event(cid, "hook", {"phone": "five five five zero one two three four five six seven"})
    with CallStore(url, StoreParams(spool=False)) as reopened:
        turns = reopened.turns(cid)
        assert [t.transcript for t in turns] == [
            "call me on [PHONE]",
            "мой номер [PHONE]",
            "카드 번호는 [CARD]",
            "top up two hundred fifty dollars",
        ]
        assert turns[0].prompt == "I heard call me on [PHONE]"
        assert reopened.events(cid)[0].data == {"phone": "[PHONE]"}
    raw = sa.create_engine(url)
    try:
        with raw.connect() as conn:
            stored = " ".join(conn.execute(sa.text("SELECT transcript || ' ' || prompt FROM turns")).scalars())
    finally:
        raw.dispose()
    assert "five five five" not in stored and "девять один шесть" not in stored and "사 일 일 일" not in stored
