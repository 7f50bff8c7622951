"""PII redaction for stored transcripts, call records and logs.

`redact(text)` replaces, in this order:
- e-mail addresses                                   -> [EMAIL]
- card numbers: 13-19 digits (spaces/dashes allowed) passing the Luhn check -> [CARD]
- phone numbers: 7-15 digits written with a leading +, brackets or separators
  (incl. spoken digits already turned into "5 5 5 1 2 3 4"), or 10-11 plain digits
  after a phone word                                 -> [PHONE]
- account numbers: any other run of 6+ digits        -> [ACCOUNT]

What stays: amounts ("250 dollars", "$1,250.00", "1 500 000 рублей"), dates (2024-05-01),
times, short numbers (menu choices, PINs of 4 digits are NOT treated as accounts: a 4-digit
PIN should never be spoken into a transcript anyway; the flows collect PINs by DTMF).
The rules are deliberately greedy on long digit runs: a false [ACCOUNT] costs a report
a detail, a missed card number costs a compliance incident.
"""

from __future__ import annotations

import logging
import re

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# a digit run with single spaces, dashes or brackets between digits, optionally after '+';
# not inside a word, a decimal, a time (12:30), a date-time (2026-05-01T10) or a dashed id (uuid)
DIGIT_RUN = re.compile(r"(?<![\w.,:])(?<!\w-)\+?\(?\d(?:[ \-()]{0,2}\d)*(?![\w]|[.,:]\d|-\w)")
ISO_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$|^\d{1,2}-\d{1,2}-\d{4}$")
# thousands grouped with spaces ("1 500 000") followed by a currency: an amount, not a phone
THOUSANDS = re.compile(r"^\d{1,3}(?: \d{3})+$")
CURRENCY_AFTER = re.compile(
    r"^\s*(?:dollars?|bucks|cents?|euros?|pounds?|usd|eur|rub|руб\w*|р\b|₽|won|원|\$|€)", re.IGNORECASE
)
CURRENCY_BEFORE = re.compile(r"(?:\$|€|£|₽|usd|eur|rub)\s*$", re.IGNORECASE)
PHONE_WORDS = re.compile(
    r"(?:phone|mobile|cell|tel|telephone|number|call|телефон\w*|номер\w*|전화\w*|번호)\W*(?:\w+\W+){0,2}$",
    re.IGNORECASE,
)
ACCOUNT_WORDS = re.compile(r"(?:account|acct|сч[её]т\w*|계좌)\W*(?:\w+\W+){0,2}$", re.IGNORECASE)

MIN_ACCOUNT_DIGITS = 6
MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15
CARD_DIGITS = range(13, 20)


def luhn_ok(digits: str) -> bool:
    """True if the digit string passes the Luhn checksum (as every payment card number does)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _classify(run: str, before: str, after: str) -> str | None:
    """The tag for one digit run in its context, or None to keep it."""
    digits = re.sub(r"\D", "", run)
    n = len(digits)
    if n < MIN_ACCOUNT_DIGITS:
        return None
    if ISO_DATE.match(run):
        return None
    amount = CURRENCY_AFTER.match(after) or CURRENCY_BEFORE.search(before)
    if amount and (THOUSANDS.match(run) or run.isdigit()):
        return None
    if n in CARD_DIGITS and luhn_ok(digits):
        return "[CARD]"
    if ACCOUNT_WORDS.search(before):
        return "[ACCOUNT]"
    formatted = run != digits  # has '+', brackets or separators
    if MIN_PHONE_DIGITS <= n <= MAX_PHONE_DIGITS and (formatted or PHONE_WORDS.search(before)):
        return "[PHONE]"
    if n >= MIN_ACCOUNT_DIGITS:
        return "[ACCOUNT]"
    return None


def redact(text: str) -> str:
    """`text` with e-mails, card, phone and account numbers replaced by [EMAIL]/[CARD]/[PHONE]/[ACCOUNT]."""
    if not text:
        return text
    text = EMAIL.sub("[EMAIL]", text)
    out: list[str] = []
    last = 0
    for match in DIGIT_RUN.finditer(text):
        run = match.group().rstrip(" -(")
        start, end = match.start(), match.start() + len(run)
        if run.startswith("(") and ")" not in run:
            run, start = run[1:], start + 1
        tag = _classify(run, text[max(0, start - 40) : start], text[end : end + 20])
        if tag:
            out.append(text[last:start])
            out.append(tag)
            last = end
    out.append(text[last:])
    return "".join(out)


def redact_caller(caller: str) -> str:
    """A caller ID kept for reports with only its last 4 digits: '+15551234567' -> '*******4567'."""
    digits = re.sub(r"\D", "", caller or "")
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + digits[-4:]


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (attach it to handlers).

    The message is formatted once here (msg % args) and the args dropped, so no PII reaches
    a handler through the arguments either.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to logging to report
            return True
        record.msg = redact(message)
        record.args = None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach a RedactingFilter to every handler of `logger` (root by default); returns it."""
    target = logger or logging.getLogger()
    flt = RedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
