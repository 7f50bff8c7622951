"""Numbers said in words -> values, for English, Russian and Korean.

`find_numbers(tokens, lang)` finds every spoken number in a token list. A run of number
words is split where it cannot continue one number, so "nine one six" is three numbers
(9, 1, 6: a phone number said digit by digit) while "two hundred fifty" is one (250),
"one thousand two hundred" is 1200 and "a hundred and five" is 105. Halves: "one and a half",
"half a", "полтора", "два с половиной", "пол" (-> 1.5, 0.5, 1.5, 2.5, 0.5).

Korean: a number is one token ("이만오천") or several that make one number together ("이만 오천",
"만 오천", "삼 만": scales 십/백/천/만/억 in them); single digits said one by one ("공 일 공") stay
separate numbers, as phone numbers are said.

Pure functions over tokens; no I/O. Tokens are lower-case words as produced by
`ivr.nlu.entities.tokenize`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# word kinds: a number is built from units (0-9), teens (10-19), tens (20-90),
# hundreds (100-900 as one word, Russian), and scales (x100, x1000, x1e6); a fraction ("полтора" 1.5,
# "пол" 0.5) only starts a number and takes only a scale after it ("полторы тысячи" 1500)
UNIT, TEEN, TENS, HUNDREDS, HUNDRED, SCALE = "unit", "teen", "tens", "hundreds", "hundred", "scale"
FRACTION = "fraction"

_EN_UNITS = "zero one two three four five six seven eight nine".split()
_EN_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_EN_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()

EN_WORDS: dict[str, tuple[str, int | float]] = {
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


RU_WORDS: dict[str, tuple[str, int | float]] = {
    form: (_ru_kind(value), value) for value, forms in _RU_FORMS.items() for form in forms.split()
}
RU_WORDS.update(
    {w: (SCALE, 1000) for w in "тысяча тысячи тысяч тысячу".split()}
    | {w: (SCALE, 1_000_000) for w in "миллион миллиона миллионов".split()}
    | {w: (FRACTION, 1.5) for w in "полтора полторы полутора".split()}
    | {"пол": (FRACTION, 0.5)}
)
# "... and a half", "... с половиной": a half added to the number before
HALF_AFTER = {"en": (("and", "a", "half"), ("and", "one", "half")), "ru": (("с", "половиной"),)}
# "half a gig": a half said before what it counts (the article is part of the number)
HALF_BEFORE = {"en": (("half", "a"), ("half", "an"))}

# Korean: Sino-Korean digits and scales, written together in one token ("이만오천")
_KO_DIGITS = {"영": 0, "공": 0, "일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "륙": 6,
              "칠": 7, "팔": 8, "구": 9}
KO_DIGIT_WORDS = frozenset(_KO_DIGITS)  # what a Korean phone number is said with, one digit a word
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


def words_for(lang: str) -> dict[str, tuple[str, int | float]]:
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


def _korean_body(token: str) -> str:
    """`token` without its unit suffix (오천원 -> 오천)."""
    for suffix in KO_SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix):
            return token[: -len(suffix)]
    return token


def _korean_well_formed(body: str) -> bool:
    """Scales in a Sino-Korean number go down: 천 before 백 before 십 in a section, 억 before 만."""
    large_seen: list[int] = []
    small_seen: list[int] = []
    for ch in body:
        if ch in _KO_SMALL:
            if small_seen and _KO_SMALL[ch] >= small_seen[-1]:
                return False
            small_seen.append(_KO_SMALL[ch])
        elif ch in _KO_LARGE:
            if large_seen and _KO_LARGE[ch] >= large_seen[-1]:
                return False
            large_seen.append(_KO_LARGE[ch])
            small_seen = []
    return True


def _korean_compound(tokens: Sequence[str], i: int) -> tuple[int, int] | None:
    """A Korean number said in several tokens from tokens[i] ("이만 오천" -> (25000, 2 tokens)), or None.

    Only Sino-Korean tokens join, only while the joined text is one well-formed number with a scale in
    it; a unit suffix (원, 기가...) ends the number. "공 일 공" (digit by digit) never joins.
    """
    body, used = tokens[i], 1
    if _korean_body(body) != body or parse_korean(body) is None or tokens[i] in KO_NATIVE:
        return None
    while i + used < len(tokens):
        nxt = tokens[i + used]
        if nxt in KO_NATIVE or parse_korean(nxt) is None:
            break
        joined = body + nxt
        joined_body = _korean_body(joined)
        if not any(ch in _KO_SMALL or ch in _KO_LARGE for ch in joined_body) or not _korean_well_formed(joined_body):
            break
        if parse_korean(joined) is None:
            break
        body, used = joined, used + 1
        if _korean_body(nxt) != nxt:  # 오천원: the unit closes the number
            break
    if used == 1:
        return None
    value = parse_korean(body)
    return (value, used) if value is not None else None


class _Builder:
    """Accumulates one number; `accepts(kind, value)` says whether the next word continues it."""

    def __init__(self) -> None:
        self.total: int | float = 0
        self.current: int | float = 0
        self.last: str | None = None

    def accepts(self, kind: str, value: int | float) -> bool:
        last, small = self.last, self.current % 100
        if last is None:
            return True
        if kind == FRACTION:  # "полтора" only starts a number
            return False
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

    def add(self, kind: str, value: int | float) -> None:
        if kind in (UNIT, TEEN, TENS, HUNDREDS, FRACTION):
            self.current += value
        elif kind == HUNDRED:
            self.current = max(self.current, 1) * 100
        else:
            self.total += max(self.current, 1) * value
            self.current = 0
        self.last = kind

    @property
    def value(self) -> int | float:
        return _tidy(self.total + self.current)


def _tidy(value: int | float) -> int | float:
    """1500.0 -> 1500; 1.5 stays."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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
        entry: tuple[str, int | float] | None = table.get(tok)
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
        if entry is None and lang == "ko":
            compound = _korean_compound(tokens, i)
            if compound is not None:
                close(i - filler)
                filler = 0
                joined, used = compound
                found.append(SpokenNumber(i, i + used, joined, str(joined)))
                i += used
                continue
        if entry is None and lang in HALF_BEFORE and tuple(tokens[i : i + 2]) in HALF_BEFORE[lang]:
            close(i - filler)
            filler = 0
            found.append(SpokenNumber(i, i + 2, 0.5, "0.5"))
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
    return _add_halves(tokens, found, lang)


def _add_halves(tokens: Sequence[str], found: list[SpokenNumber], lang: str) -> list[SpokenNumber]:
    """"one and a half" -> 1.5, "два с половиной" -> 2.5: the half joins the number before it."""
    tails = HALF_AFTER.get(lang, ())
    if not tails:
        return found
    out: list[SpokenNumber] = []
    for number in found:
        if out and number.start < out[-1].end:  # "one and one half": the second "one" is in the half
            continue
        for tail in tails:
            if tuple(tokens[number.end : number.end + len(tail)]) == tail and isinstance(number.value, int):
                value = number.value + 0.5
                number = SpokenNumber(number.start, number.end + len(tail), value, str(value))
                break
        out.append(number)
    return out


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


def _next_is(tokens: Sequence[str], i: int, table: dict[str, tuple[str, int | float]], kinds: tuple[str, ...]) -> bool:
    return i + 1 < len(tokens) and table.get(tokens[i + 1], ("", 0))[0] in kinds


def words_to_number(text: str, lang: str = "en") -> int | float | None:
    """The single number in `text` ("two hundred fifty" -> 250), or None if there is not exactly one."""
    from ivr.nlu.entities import tokenize  # local: entities imports this module

    numbers = find_numbers(tokenize(text, lang), lang)
    return numbers[0].value if len(numbers) == 1 else None
