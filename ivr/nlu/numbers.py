"""Numbers said in words -> values, for English, Russian and Korean.

`find_numbers(tokens, lang)` finds every spoken number in a token list. A run of number
words is split where it cannot continue one number, so "nine one six" is three numbers
(9, 1, 6: a phone number said digit by digit) while "two hundred fifty" is one (250),
"one thousand two hundred" is 1200 and "a hundred and five" is 105.

Pure functions over tokens; no I/O. Tokens are lower-case words as produced by
`ivr.nlu.entities.tokenize`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# word kinds: a number is built from units (0-9), teens (10-19), tens (20-90),
# hundreds (100-900 as one word, Russian), and scales (x100, x1000, x1e6)
UNIT, TEEN, TENS, HUNDREDS, HUNDRED, SCALE = "unit", "teen", "tens", "hundreds", "hundred", "scale"

_EN_UNITS = "zero one two three four five six seven eight nine".split()
_EN_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_EN_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()

EN_WORDS: dict[str, tuple[str, int]] = {
    **{w: (UNIT, i) for i, w in enumerate(_EN_UNITS)},
    **{w: (TEEN, 10 + i) for i, w in enumerate(_EN_TEENS)},
    **{w: (TENS, 20 + 10 * i) for i, w in enumerate(_EN_TENS)},
    "oh": (UNIT, 0),  # "nine oh one": only counts inside a run (see _is_weak)
    "nought": (UNIT, 0),
    "fourty": (TENS, 40),  # a frequent ASR/typing variant
    "hundred": (HUNDRED, 100),
    "thousand": (SCALE, 1000),
    "million": (SCALE, 1_000_000),
}

# Russian: each form a caller (or ASR) may produce; case forms of the common ones
_RU_FORMS: dict[int, str] = {
    0: "ноль нуль",
    1: "один одна одно одну одного одной",
    2: "два две двух двум двумя",
    3: "три трех трёх трем трём тремя",
    4: "четыре четырех четырёх четырем четырём",
    5: "пять пяти",
    6: "шесть шести",
    7: "семь семи",
    8: "восемь восьми",
    9: "девять девяти",
    10: "десять десяти",
    11: "одиннадцать",
    12: "двенадцать",
    13: "тринадцать",
    14: "четырнадцать",
    15: "пятнадцать",
    16: "шестнадцать",
    17: "семнадцать",
    18: "восемнадцать",
    19: "девятнадцать",
    20: "двадцать двадцати",
    30: "тридцать тридцати",
    40: "сорок сорока",
    50: "пятьдесят пятидесяти",
    60: "шестьдесят",
    70: "семьдесят",
    80: "восемьдесят",
    90: "девяносто",
    100: "сто ста",
    200: "двести",
    300: "триста",
    400: "четыреста",
    500: "пятьсот",
    600: "шестьсот",
    700: "семьсот",
    800: "восемьсот",
    900: "девятьсот",
}


def _ru_kind(value: int) -> str:
    if value < 10:
        return UNIT
    if value < 20:
        return TEEN
    if value < 100:
        return TENS
    return HUNDREDS


RU_WORDS: dict[str, tuple[str, int]] = {
    form: (_ru_kind(value), value) for value, forms in _RU_FORMS.items() for form in forms.split()
}
RU_WORDS.update(
    {w: (SCALE, 1000) for w in "тысяча тысячи тысяч тысячу".split()}
    | {w: (SCALE, 1_000_000) for w in "миллион миллиона миллионов".split()}
)

# Korean: Sino-Korean digits and scales, written together in one token ("이만오천")
_KO_DIGITS = {"영": 0, "공": 0, "일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "륙": 6,
              "칠": 7, "팔": 8, "구": 9}
_KO_SMALL = {"십": 10, "백": 100, "천": 1000}
_KO_LARGE = {"만": 10_000, "억": 100_000_000}
# native Korean numbers, as whole tokens (counters like 두 기가, 세 개); not 네 (4): it means "yes"
KO_NATIVE = {"하나": 1, "한": 1, "둘": 2, "두": 2, "셋": 3, "세": 3, "넷": 4, "다섯": 5,
             "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9, "열": 10, "스물": 20, "스무": 20}
# unit suffixes glued to Korean numbers: 오천원, 삼기가
KO_SUFFIXES = ("원", "기가바이트", "기가", "개", "번")

_DIGITS_RE = re.compile(r"^\d+(?:[.,]\d+)?$")


@dataclass(frozen=True)
class SpokenNumber:
    """One number found in a token list: tokens[start:end] said `value`.

    `digits` is what the caller said as a digit string ("oh five" -> "05"), used to build phone numbers.
    """

    start: int
    end: int
    value: int | float
    digits: str


def words_for(lang: str) -> dict[str, tuple[str, int]]:
    """The number-word table of a language (empty for languages without one)."""
    return {"en": EN_WORDS, "ru": RU_WORDS}.get(lang, {})


def parse_korean(token: str) -> int | None:
    """A Sino-Korean number written as one token ("이만오천" -> 25000), or None.

    A trailing unit suffix (원, 기가, ...) is ignored; a bare suffix is not a number.
    """
    for suffix in KO_SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix):
            token = token[: -len(suffix)]
            break
    if token in KO_NATIVE:
        return KO_NATIVE[token]
    if not token or any(ch not in _KO_DIGITS and ch not in _KO_SMALL and ch not in _KO_LARGE for ch in token):
        return None
    total, section, digit = 0, 0, None
    for ch in token:
        if ch in _KO_DIGITS:
            if digit is not None:  # two digits in a row: not a Sino-Korean number
                return None
            digit = _KO_DIGITS[ch]
        elif ch in _KO_SMALL:
            section += (1 if digit is None else digit) * _KO_SMALL[ch]
            digit = None
        else:
            section += digit or 0
            total += (section or 1) * _KO_LARGE[ch]
            section, digit = 0, None
    return total + section + (digit or 0)


class _Builder:
    """Accumulates one number; `accepts(kind, value)` says whether the next word continues it."""

    def __init__(self) -> None:
        self.total = 0
        self.current = 0
        self.last: str | None = None

    def accepts(self, kind: str, value: int) -> bool:
        last, small = self.last, self.current % 100
        if last is None:
            return True
        if kind == UNIT:  # "twenty five", "hundred five"; never "nine one"
            return last in (TENS, HUNDRED, HUNDREDS, SCALE) and small % 10 == 0
        if kind in (TEEN, TENS):
            return last in (HUNDRED, HUNDREDS, SCALE) and small == 0
        if kind == HUNDREDS:  # Russian "тысяча двести"
            return last == SCALE and self.current == 0
        if kind == HUNDRED:
            return last in (UNIT, TEEN) and 0 < self.current < 10 or last == TEEN and self.current < 100
        # a scale closes what came before it and must be smaller than the scales already used
        return last != SCALE and (self.total == 0 or self.total > max(self.current, 1) * value)

    def add(self, kind: str, value: int) -> None:
        if kind in (UNIT, TEEN, TENS, HUNDREDS):
            self.current += value
        elif kind == HUNDRED:
            self.current = max(self.current, 1) * 100
        else:
            self.total += max(self.current, 1) * value
            self.current = 0
        self.last = kind

    @property
    def value(self) -> int:
        return self.total + self.current


def find_numbers(tokens: Sequence[str], lang: str) -> list[SpokenNumber]:
    """Every number in `tokens`: digit strings ("250", "1.5") and numbers said in words."""
    table = words_for(lang)
    found: list[SpokenNumber] = []
    builder: _Builder | None = None
    start = 0
    filler = 0  # "and" inside a number ("a hundred and five"): part of it only if the number goes on

    def close(end: int) -> None:
        nonlocal builder
        if builder is not None:
            found.append(SpokenNumber(start, end, builder.value, str(builder.value)))
            builder = None

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        entry = table.get(tok)
        if tok == "oh" and builder is None and not _next_is(tokens, i, table, (UNIT,)):
            entry = None  # "oh" alone is an interjection; "oh five" is zero five
        if entry is None and lang == "en" and tok == "a" and _next_is(tokens, i, table, (HUNDRED, SCALE)):
            entry = (UNIT, 1)  # "a hundred", "a thousand"
        if entry is None and lang == "en" and tok in _REPEATS and _next_is(tokens, i, table, (UNIT,)):
            close(i - filler)
            filler = 0
            digit = str(table[tokens[i + 1]][1])
            found.append(SpokenNumber(i, i + 2, int(digit * _REPEATS[tok]), digit * _REPEATS[tok]))
            i += 2
            continue
        if entry is None and (lang == "ko" or _DIGITS_RE.match(tok)):
            single = _single_token_number(tok, lang)
            if single is not None:
                close(i - filler)
                filler = 0
                found.append(SpokenNumber(i, i + 1, *single))
                i += 1
                continue
        if entry is None:
            if builder is not None and tok in ("and", "и") and _next_is(tokens, i, table, _ALL_KINDS):
                filler += 1
            else:
                close(i - filler)
                filler = 0
            i += 1
            continue
        kind, value = entry
        if builder is not None and not builder.accepts(kind, value):
            close(i - filler)
        filler = 0
        if builder is None:
            builder, start = _Builder(), i
        builder.add(kind, value)
        i += 1
    close(len(tokens) - filler)
    return found


_REPEATS = {"double": 2, "triple": 3}
_ALL_KINDS = (UNIT, TEEN, TENS, HUNDREDS, HUNDRED, SCALE)


def _single_token_number(tok: str, lang: str) -> tuple[int | float, str] | None:
    """(value, digits) of a number written in one token: "250", "1.5", "0916", Korean "오천"."""
    if _DIGITS_RE.match(tok):
        text = tok.replace(",", ".")
        return (float(text), text) if "." in text else (int(text), tok)
    if lang == "ko":
        if len(tok) > 1 and all(ch in _KO_DIGITS for ch in tok):  # 공일공: digit by digit
            return int("".join(str(_KO_DIGITS[ch]) for ch in tok)), "".join(str(_KO_DIGITS[ch]) for ch in tok)
        value = parse_korean(tok)
        if value is not None:
            return value, str(value)
    return None


def _next_is(tokens: Sequence[str], i: int, table: dict[str, tuple[str, int]], kinds: tuple[str, ...]) -> bool:
    return i + 1 < len(tokens) and table.get(tokens[i + 1], ("", 0))[0] in kinds


def words_to_number(text: str, lang: str = "en") -> int | float | None:
    """The single number in `text` ("two hundred fifty" -> 250), or None if there is not exactly one."""
    from ivr.nlu.entities import tokenize  # local: entities imports this module

    numbers = find_numbers(tokenize(text, lang), lang)
    return numbers[0].value if len(numbers) == 1 else None
