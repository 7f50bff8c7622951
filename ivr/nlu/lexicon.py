"""Number words of English, Russian and Korean: word -> (kind, value), in one place.

Two readers use these tables: entity parsing (`ivr.nlu.numbers`: "two hundred fifty" -> 250) and
PII redaction (`ivr.redact`: "nine one six ..." -> a phone number to mask). Each keeps its own way of
grouping words into numbers; what a word means is only written here, so a form added for one (a
Russian case form, an ASR spelling) is known to the other.

Kinds: a number is built from units (0-9), teens (10-19), tens (20-90), hundreds (100-900 as one word,
Russian), "hundred" (x100 after a unit), and scales (x1000, x1e6); a fraction ("полтора" 1.5, "пол"
0.5) only starts a number and takes only a scale after it ("полторы тысячи" 1500).
"""

from __future__ import annotations

from typing import Final

UNIT: Final = "unit"
TEEN: Final = "teen"
TENS: Final = "tens"
HUNDREDS: Final = "hundreds"
HUNDRED: Final = "hundred"
SCALE: Final = "scale"
FRACTION: Final = "fraction"
# the kinds a digit group is made of (a phone number said in groups: "nine sixteen", "девятьсот")
DIGIT_KINDS: Final = frozenset({UNIT, TEEN, TENS, HUNDREDS})

Entry = tuple[str, int | float]  # (kind, value)

_EN_UNITS = "zero one two three four five six seven eight nine".split()
_EN_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_EN_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()

EN_WORDS: Final[dict[str, Entry]] = {
    **{w: (UNIT, i) for i, w in enumerate(_EN_UNITS)},
    **{w: (TEEN, 10 + i) for i, w in enumerate(_EN_TEENS)},
    **{w: (TENS, 20 + 10 * i) for i, w in enumerate(_EN_TENS)},
    "oh": (UNIT, 0),  # "nine oh one"; a weak zero (below)
    "o": (UNIT, 0),  # how ASR often writes "oh"; a weak zero
    "nought": (UNIT, 0),
    "fourty": (TENS, 40),  # a frequent ASR/typing variant
    "hundred": (HUNDRED, 100),
    "thousand": (SCALE, 1000),
    "million": (SCALE, 1_000_000),
}
# zeros that are also an interjection or a letter ("Oh, one two ..."): a zero only inside a number
WEAK_ZEROS: Final = frozenset({"oh", "o"})

# Russian: each form a caller (or ASR) may produce, case forms included ("пяти", "двадцати");
# both е and ё spellings, as ASR writes either
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


RU_WORDS: Final[dict[str, Entry]] = {
    form: (_ru_kind(value), value) for value, forms in _RU_FORMS.items() for form in forms.split()
}
RU_WORDS.update(
    {w: (SCALE, 1000) for w in "тысяча тысячи тысяч тысячу".split()}
    | {w: (SCALE, 1_000_000) for w in "миллион миллиона миллионов".split()}
    | {w: (FRACTION, 1.5) for w in "полтора полторы полутора".split()}
    | {"пол": (FRACTION, 0.5)}
)

# "double five" (55), "triple oh" (000): the next digit said 2 or 3 times
REPEAT_WORDS: Final = {"double": 2, "triple": 3}
# "plus seven ...": the + of an international phone number
PLUS_WORDS: Final = frozenset({"plus", "плюс", "플러스", "+"})

# Korean: Sino-Korean digits and scales; a number is written together in one token ("이만오천"),
# a phone number one digit a word or glued ("공 일 공", "공일공")
KO_DIGITS: Final = {"영": 0, "공": 0, "일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "륙": 6,
                    "칠": 7, "팔": 8, "구": 9}
KO_SMALL_SCALES: Final = {"십": 10, "백": 100, "천": 1000}
KO_LARGE_SCALES: Final = {"만": 10_000, "억": 100_000_000}
# native Korean numbers, as whole tokens (counters like 두 기가, 세 개); not 네 (4): it means "yes"
KO_NATIVE: Final = {"하나": 1, "한": 1, "둘": 2, "두": 2, "셋": 3, "세": 3, "넷": 4, "다섯": 5,
                    "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9, "열": 10, "스물": 20, "스무": 20}

NUMBER_WORDS: Final[dict[str, dict[str, Entry]]] = {"en": EN_WORDS, "ru": RU_WORDS}
# every English and Russian number word: for text whose language is not known (logs, records)
ALL_WORDS: Final[dict[str, Entry]] = {**EN_WORDS, **RU_WORDS}


def words_for(lang: str) -> dict[str, Entry]:
    """The number-word table of a language (empty for languages without one, e.g. Korean)."""
    return NUMBER_WORDS.get(lang, {})
