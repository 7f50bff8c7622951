"""PII redaction: tables of what must go and what must stay, plus the logging filter."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.redact import RedactingFilter, install_log_redaction, luhn_ok, redact, redact_caller

POSITIVES = [
    # cards: Luhn-valid 13-19 digits, any grouping
    ("my card is 4111 1111 1111 1111 thanks", "my card is [CARD] thanks"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("5500005555555559", "[CARD]"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "[CARD]"),  # spoken digits, already converted
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
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in handler_records] == [
        "caller [PHONE] said 'card [CARD]'",
        "top up 250 dollars",
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
