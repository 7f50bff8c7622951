"""PII redaction for stored transcripts, call records and logs.

`redact(text)` replaces, in this order:
- e-mail addresses                                   -> [EMAIL]
- runs of spoken digits (see below)                  -> [CARD] / [PHONE] / [ACCOUNT]
- card numbers: 13-19 digits (spaces/dashes allowed) passing the Luhn check -> [CARD]
- phone numbers: 7-15 digits written with a leading +, brackets or separators
  ("5 5 5 1 2 3 4"), or 10-11 plain digits after a phone word -> [PHONE]
- account numbers: any other run of 6+ digits        -> [ACCOUNT]

Spoken digits. ASR writes what the caller said, so numbers often arrive as words. A run of
digit words, optionally mixed with numerals, separated by spaces, commas, periods, hyphens or
brackets, is read as one digit string (the words and what they mean are `ivr.nlu.lexicon`'s, the
same entity parsing reads; how they group into digits is this module's):
- English: zero/oh/o/nought, one..nine, "double five" (55), "triple oh" (000), "plus";
  tens and teens as two-digit groups ("forty five sixty seven" = 4567) and "eight hundred"
  (800, as in "one eight hundred ...");
- Russian: ноль/нуль, один/одна/одно, два/две, три ... девять (case forms too: восьми, двух), "плюс",
  and the groups Russians read phone numbers in: десять..девяносто, сто..девятьсот ("восемь девятьсот
  шестнадцать сто двадцать три сорок пять шестьдесят семь" = 89161234567);
- Korean: 공/영, 일, 이, 삼, 사, 오, 육(륙), 칠, 팔, 구, spaced or glued ("공일공 일이삼사"),
  the last one possibly with a particle ("오육칠팔이에요": the particle is kept);
  "플러스". Korean numbers with 십/백/천/만 are amounts, never part of a run.
A run that contains at least one word and 7 or more digits is masked with the same tags and
rules as the numerals (Luhn-valid 13-19 digits -> [CARD], after an account word -> [ACCOUNT],
7-15 digits -> [PHONE], longer -> [ACCOUNT]). Shorter spoken runs stay: menu choices ("press
one"), counts, and 4-6 digit codes said aloud ("one two three four"): PINs are collected by
DTMF, and a short spoken run is too often a quantity, a time or a year (numerals keep their
own threshold of 6, below). A leading "oh" before a comma or period is an interjection, not a
zero. Amounts said as compound numbers stay: a compound number is one group of at most 3
digits and scale words (thousand, тысяча, 만 ...) end a run, so "two hundred fifty dollars",
"двести пятьдесят рублей", "пятьсот тысяч", "이만 오천 원" are never 7 digits. A number read
digit by digit goes on across "and"/"и" ("five five five and one two three four" is one run of 7
digits); a compound number ends there ("one hundred and five").

Numerals. ASR punctuates digits it hears one by one: Whisper writes a card as
"4, 5, 3, 9 1, 4, 8, 8 ..." and a phone as "555.012.3456" or "555, 0123, 4567". A run of numeral
groups separated by spaces, dashes, brackets, or a comma or dot (with or without a space) is one
digit string. Runs with a comma or dot that read as quantities stay: decimals (12500.75), grouped
amounts (1,250,000.00), dotted dates (12.05.2024), versions and IP addresses (1.51.0,
127.0.0.1), lists of years ("2019, 2020") - unless the digits are a Luhn-valid card number, and
grouped amounts and versions only up to 9 digits ("408,178,100,999" is an account). Known gap: a
dotted quad of numbers up to 255 ("100.200.150.120") is read as an IP address and stays.

What stays: amounts ("250 dollars", "$1,250.00", "1 500 000 рублей"), dates (2024-05-01),
times, short numbers (menu choices, PINs of 4 digits are NOT treated as accounts: a 4-digit
PIN should never be spoken into a transcript anyway; the flows collect PINs by DTMF).
The rules are deliberately greedy on long digit runs: a false [ACCOUNT] costs a report
a detail, a missed card number costs a compliance incident.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

from ivr.nlu.lexicon import (
    ALL_WORDS,
    DIGIT_KINDS,
    HUNDRED,
    HUNDREDS,
    KO_DIGITS,
    PLUS_WORDS,
    REPEAT_WORDS,
    TEEN,
    TENS,
    UNIT,
    WEAK_ZEROS,
)

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# a run of digit groups, optionally after '+', with what ASR and people put between the groups:
# spaces, dashes, brackets, or a comma or dot with or without a space ("4, 5, 3, 9 1, 4, 8, 8",
# "4111.1111.1111.1111", "555, 0123, 4567"); not inside a word, a time (12:30), a date-time
# (2026-05-01T10) or a dashed id (uuid). Which of these runs are quantities, not identifiers
# (decimals, amounts, dates, addresses, lists of years), `_is_quantity` decides.
DIGIT_RUN = re.compile(r"(?<![\w:])(?<!\w-)(?<!\d[.,])\+?\(?\d+(?:(?:[ \-()]{1,3}| ?[.,] ?)\d+)*(?!\w|:\d|-\w)")
ISO_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$|^\d{1,2}-\d{1,2}-\d{4}$")
# what a number with dots or commas in it may be besides an identifier
DOTTED_DATE = re.compile(r"^(?:\d{1,2}([./])\d{1,2}\1\d{4}|\d{4}([./])\d{1,2}\2\d{1,2})$")  # 12.05.2024
DECIMAL = re.compile(r"^\d+[.,]\d+$")  # 12500.75, 3,5
GROUPED_AMOUNT = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?$|^\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?$")  # 1,250,000.00
IPV4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$")
VERSION = re.compile(r"^\d{1,3}(?:\.\d{1,3}){1,3}$")  # 1.51.0: a version (or an address, above)
# a grouped amount or a version longer than this is an identifier written in groups ("408,178,100,999")
MAX_QUANTITY_DIGITS = 9
YEARS = re.compile(r"^(?:19|20)\d\d(?: ?[,\-] ?(?:19|20)\d\d)+$")  # "2019, 2020", "2020 - 2021"
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
    if ISO_DATE.match(run) or _is_quantity(run, digits):
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


def _is_quantity(run: str, digits: str) -> bool:
    """A run that reads as a quantity, a date or a range of years, not an identifier. A Luhn-valid
    card length is never one: however it is punctuated, a card number goes."""
    if len(digits) in CARD_DIGITS and luhn_ok(digits):
        return False
    if YEARS.match(run):
        return True
    if "." not in run and "," not in run:
        return False
    if len(digits) <= MAX_QUANTITY_DIGITS and (GROUPED_AMOUNT.match(run) or VERSION.match(run)):
        return True
    return any(p.match(run) for p in (DOTTED_DATE, DECIMAL, IPV4))


# ---- spoken digits ----------------------------------------------------------------------
MIN_SPOKEN_DIGITS = 7

# what redaction adds to the lexicon's kinds: a numeral written as digits, Korean digits said one by one
_NUMERAL, _KOREAN = "numeral", "korean"
# particles and endings ASR glues to the last Korean digit ("오육칠팔이에요", "공일공으로");
# not bare 이/가/만, which are also digits or numbers themselves
KO_TAILS = frozenset(
    "이에요 예요 입니다 이고 이요 요 로 으로 로요 으로요 번 번이요 번입니다 번이에요 은 는 을 를 에 도 "
    "이랑 랑 하고 까지 이라고 라고 이야 야".split()
)
_WORD = re.compile(r"[^\W_]+|\+")
_GAP = re.compile(r"[\s,.\-–—()]*")
_NUMERAL_WORD = re.compile(r"\d+")
# "five five five and one two three four": a number read digit by digit goes on across "and";
# a compound number does not ("one hundred and five", "five and twenty")
_AND_WORDS = frozenset({"and", "и"})
# a run needs at least one digit word: looked for first, so most log lines cost one scan
_DIGIT_WORDS = frozenset(w for w, (kind, _) in ALL_WORDS.items() if kind in DIGIT_KINDS)
_LETTERS = re.compile(r"[^\W\d_]+")
_DATES = re.compile(r"(?<![\d-])(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}-\d{4})(?![\d-])")


def _korean_digits(token: str) -> tuple[str, int] | None:
    """(digits, length of the digit part) of a Korean token said digit by digit, or None."""
    for k in range(1, len(token) + 1):
        if token[k - 1] not in KO_DIGITS:
            return None
        if k == len(token) or token[k:] in KO_TAILS:
            return "".join(str(KO_DIGITS[ch]) for ch in token[:k]), k
    return None


class _Run:
    """One run of spoken digits being read: its start, end, digit groups and whether it has a word."""

    def __init__(self, start: int, plus: bool = False) -> None:
        self.start = self.end = start
        self.plus = plus
        self.items: list[str] = []  # closed digit groups
        self.value: int | None = None  # the compound number being built ("сто двадцать ..."), if any
        self.last: str | None = None  # kind of the last word of that number
        self.words = False
        self.by_digit = True  # read digit by digit so far (no teens, tens or hundreds)

    def _close_group(self) -> None:
        if self.value is not None:
            self.items.append(str(self.value))
            self.value, self.last = None, None

    def accepts_hundred(self) -> bool:
        return self.value is not None and self.last == UNIT and 1 <= self.value <= 9

    def add(self, kind: str, value: int, digits: str = "") -> None:
        """Add one word (or numeral: kind _NUMERAL with `digits`) to the run."""
        cur, last = self.value, self.last
        if kind == _NUMERAL:
            self._close_group()
            self.items.append(digits)
            return
        self.words = True
        if kind != UNIT:
            self.by_digit = False
        if kind == HUNDRED and cur is not None:
            self.value, self.last = cur * 100, HUNDRED
            return
        after_hundreds = last in (HUNDREDS, HUNDRED) and cur is not None and cur % 100 == 0
        after_tens = last == TENS and cur is not None and cur % 10 == 0
        joins = (kind == UNIT and value > 0 and (after_tens or after_hundreds)) or (
            kind in (TEEN, TENS) and after_hundreds
        )
        if joins and cur is not None:
            self.value, self.last = cur + value, kind
            return
        self._close_group()
        if kind == UNIT and value == 0:  # "oh", "ноль": a digit of its own, never "twenty oh"
            self.items.append("0")
        else:
            self.value, self.last = value, kind

    def add_digits(self, digits: str) -> None:
        """Add digits said one by one (Korean tokens, "double five")."""
        self._close_group()
        self.items.append(digits)
        self.words = True

    def text(self) -> str:
        """The run written as numerals, groups spaced: "+7 916 123 45 67"."""
        self._close_group()
        return ("+" if self.plus else "") + " ".join(self.items)


def _spoken_runs(text: str) -> list[tuple[int, int, str]]:
    """(start, end, digits written as numerals) of every run of spoken digits with a word and 7+ digits."""
    if not any(w in _DIGIT_WORDS or w[0] in KO_DIGITS for w in _LETTERS.findall(text.lower())):
        return []
    tokens = list(_WORD.finditer(text))
    dates = [m.span() for m in _DATES.finditer(text)]
    found: list[tuple[int, int, str]] = []
    run: _Run | None = None

    def close() -> None:
        nonlocal run
        if run is not None and run.words:
            written = run.text()
            if len(re.sub(r"\D", "", written)) >= MIN_SPOKEN_DIGITS:
                found.append((run.start, run.end, written))
        run = None

    def item(i: int) -> tuple[str, int, str, int] | None:
        """(kind, value, digits, end) of token i as a run item (not plus/double/hundred), or None."""
        tok = tokens[i]
        word = tok.group()
        if _NUMERAL_WORD.fullmatch(word):
            before, after = text[max(0, tok.start() - 2) : tok.start()], text[tok.end() : tok.end() + 2]
            # not part of a decimal, a time, a thousands group or a date written with / or .
            if re.fullmatch(r"\d[.,:/]", before) or re.fullmatch(r"[.,:/]\d", after):
                return None
            if any(a <= tok.start() < b for a, b in dates):  # 2024-05-01
                return None
            return _NUMERAL, 0, word, tok.end()
        entry = ALL_WORDS.get(word.lower())
        if entry is not None:  # a digit group; a scale or a fraction ends the run
            return (entry[0], int(entry[1]), "", tok.end()) if entry[0] in DIGIT_KINDS else None
        korean = _korean_digits(word)
        if korean is not None:
            return _KOREAN, 0, korean[0], tok.start() + korean[1]
        return None

    def joined(i: int) -> bool:
        """Token i follows token i-1 with only separators between them."""
        return i > 0 and _GAP.fullmatch(text, tokens[i - 1].end(), tokens[i].start()) is not None

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if run is not None and not joined(i):
            close()
        word = tok.group().lower()
        entry = ALL_WORDS.get(word)
        kind = entry[0] if entry else None
        if word in _AND_WORDS and run is not None and run.by_digit and i + 1 < len(tokens) and joined(i + 1):
            nxt = item(i + 1)
            if nxt is not None and nxt[0] in (UNIT, _NUMERAL, _KOREAN):
                i += 1  # the run goes on after "and"
                continue
        if word in PLUS_WORDS:
            close()
            if i + 1 < len(tokens) and joined(i + 1) and item(i + 1) is not None:
                run = _Run(tok.start(), plus=True)
                run.end = tok.end()
            i += 1
            continue
        if word in REPEAT_WORDS:
            nxt = item(i + 1) if i + 1 < len(tokens) and joined(i + 1) else None
            if nxt is not None and (nxt[0] == UNIT or nxt[0] == _NUMERAL and len(nxt[2]) == 1):
                run = run or _Run(tok.start())
                run.add_digits((nxt[2] or str(nxt[1])) * REPEAT_WORDS[word])
                run.end = nxt[3]
                i += 2
            else:
                close()
                i += 1
            continue
        if kind == HUNDRED:
            if run is not None and run.accepts_hundred():
                run.add(HUNDRED, 100)
                run.end = tok.end()
            else:
                close()
            i += 1
            continue
        got = item(i)
        if (
            got is not None
            and run is None
            and word in WEAK_ZEROS
            and not (
                i + 1 < len(tokens)
                and re.fullmatch(r"[\s\-]+", text[tok.end() : tokens[i + 1].start()])
                and item(i + 1) is not None
            )
        ):
            got = None  # "Oh, one two ...": an interjection, not a leading zero ("oh two oh seven ...")
        if got is None:
            close()
            i += 1
            continue
        run = run or _Run(tok.start())
        if got[0] == _KOREAN:
            run.add_digits(got[2])
        else:
            run.add(got[0], got[1], got[2])
        run.end = got[3]
        if got[3] < tok.end():  # a particle glued on ends the run
            close()
        i += 1
    close()
    return found


def _numeral_runs(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, digits as written) of every run of numerals (with its separators) in `text`."""
    for match in DIGIT_RUN.finditer(text):
        run = match.group().rstrip(" -(")
        start, end = match.start(), match.start() + len(run)
        if run.startswith("(") and ")" not in run:
            run, start = run[1:], start + 1
        yield start, end, run


def _substitute(text: str, runs: Iterable[tuple[int, int, str]]) -> str:
    """`text` with each run that `_classify` tags (from the run and the words around it) replaced by its tag."""
    out: list[str] = []
    last = 0
    for start, end, written in runs:
        tag = _classify(written, text[max(0, start - 40) : start], text[end : end + 20])
        if tag:
            out.append(text[last:start])
            out.append(tag)
            last = end
    out.append(text[last:])
    return "".join(out)


def redact(text: str) -> str:
    """`text` with e-mails, card, phone and account numbers replaced by [EMAIL]/[CARD]/[PHONE]/[ACCOUNT].

    Spoken digits go first (each run becomes numerals for `_classify`), then numerals, by the same rules.
    """
    if not text:
        return text
    text = EMAIL.sub("[EMAIL]", text)
    text = _substitute(text, _spoken_runs(text))
    return _substitute(text, _numeral_runs(text))


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
