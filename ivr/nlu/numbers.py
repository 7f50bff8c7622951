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
`ivr.nlu.text.tokenize`; what each number word means is in `ivr.nlu.lexicon`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ivr.nlu.lexicon import (
    FRACTION,
    HUNDRED,
    HUNDREDS,
    KO_DIGITS,
    KO_LARGE_SCALES,
    KO_NATIVE,
    KO_SMALL_SCALES,
    REPEAT_WORDS,
    SCALE,
    TEEN,
    TENS,
    UNIT,
    WEAK_ZEROS,
    Entry,
    words_for,
)
from ivr.nlu.text import tokenize

# "... and a half", "... с половиной": a half added to the number before
HALF_AFTER = {"en": (("and", "a", "half"), ("and", "one", "half")), "ru": (("с", "половиной"),)}
# "half a gig": a half said before what it counts (the article is part of the number)
HALF_BEFORE = {"en": (("half", "a"), ("half", "an"))}

KO_DIGIT_WORDS = frozenset(KO_DIGITS)  # what a Korean phone number is said with, one digit a word
_KO_SCALES = frozenset(KO_SMALL_SCALES) | frozenset(KO_LARGE_SCALES)
_KO_CHARS = KO_DIGIT_WORDS | _KO_SCALES  # what a Sino-Korean number token is written with
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
    if not token or any(ch not in _KO_CHARS for ch in token):
        return None
    total, section, digit = 0, 0, None
    for ch in token:
        if ch in KO_DIGITS:
            if digit is not None:  # two digits in a row: not a Sino-Korean number
                return None
            digit = KO_DIGITS[ch]
        elif ch in KO_SMALL_SCALES:
            section += (1 if digit is None else digit) * KO_SMALL_SCALES[ch]
            digit = None
        else:
            section += digit or 0
            total += (section or 1) * KO_LARGE_SCALES[ch]
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
        if ch in KO_SMALL_SCALES:
            if small_seen and KO_SMALL_SCALES[ch] >= small_seen[-1]:
                return False
            small_seen.append(KO_SMALL_SCALES[ch])
        elif ch in KO_LARGE_SCALES:
            if large_seen and KO_LARGE_SCALES[ch] >= large_seen[-1]:
                return False
            large_seen.append(KO_LARGE_SCALES[ch])
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
        if not any(ch in _KO_SCALES for ch in joined_body) or not _korean_well_formed(joined_body):
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
        entry: Entry | None = table.get(tok)
        if tok in WEAK_ZEROS and builder is None and not _next_is(tokens, i, table, (UNIT,)):
            entry = None  # "oh" alone is an interjection; "oh five" is zero five
        if entry is None and lang == "en" and tok == "a" and _next_is(tokens, i, table, (HUNDRED, SCALE)):
            entry = (UNIT, 1)  # "a hundred", "a thousand"
        if entry is None and lang == "en" and tok in REPEAT_WORDS and _next_is(tokens, i, table, (UNIT,)):
            close(i - filler)
            filler = 0
            digit = str(table[tokens[i + 1]][1])
            found.append(SpokenNumber(i, i + 2, int(digit * REPEAT_WORDS[tok]), digit * REPEAT_WORDS[tok]))
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


_ALL_KINDS = (UNIT, TEEN, TENS, HUNDREDS, HUNDRED, SCALE)


def _single_token_number(tok: str, lang: str) -> tuple[int | float, str] | None:
    """(value, digits) of a number written in one token: "250", "1.5", "0916", Korean "오천"."""
    if _DIGITS_RE.match(tok):
        text = tok.replace(",", ".")
        return (float(text), text) if "." in text else (int(text), tok)
    if lang == "ko":
        if len(tok) > 1 and all(ch in KO_DIGITS for ch in tok):  # 공일공: digit by digit
            return int("".join(str(KO_DIGITS[ch]) for ch in tok)), "".join(str(KO_DIGITS[ch]) for ch in tok)
        value = parse_korean(tok)
        if value is not None:
            return value, str(value)
    return None


def _next_is(tokens: Sequence[str], i: int, table: dict[str, Entry], kinds: tuple[str, ...]) -> bool:
    return i + 1 < len(tokens) and table.get(tokens[i + 1], ("", 0))[0] in kinds


def words_to_number(text: str, lang: str = "en") -> int | float | None:
    """The single number in `text` ("two hundred fifty" -> 250), or None if there is not exactly one."""
    numbers = find_numbers(tokenize(text, lang), lang)
    return numbers[0].value if len(numbers) == 1 else None
