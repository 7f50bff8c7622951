"""Built-in entities: numbers, money amounts, gigabytes, phone numbers, yes/no (EN, RU, KO).

`extract_entities(text, lang)` returns a flat dict with the keys it found:

    number     int|float  the first number that is not part of a phone number
    amount     int|float  a number said with a currency ("fifty dollars", "сто рублей", "오천원")
    currency   str        ISO code of that currency (USD, RUB, KRW, EUR, GBP)
    gigabytes  int|float  a data volume in GB ("two gigs", "5 GB", "три гигабайта", "500 megabytes" -> 0.5)
    phone      str        digits said one by one or in groups, 7+ digits, "+" kept ("plus seven ...")
    yes_no     "yes"|"no" the first yes-like or no-like expression ("yeah", "nope", "конечно", "아니요")

Grammar-defined list entities (tariff names, add-ons) are matched by `ivr.nlu.intents.Nlu`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ivr.nlu.numbers import SpokenNumber, find_numbers

MIN_PHONE_DIGITS = 7  # shorter digit groups are amounts, PINs or menu choices, not phone numbers

CURRENCY_WORDS: dict[str, dict[str, str]] = {
    "en": {
        **dict.fromkeys(["dollar", "dollars", "buck", "bucks", "usd", "$"], "USD"),
        **dict.fromkeys(["euro", "euros", "eur", "€"], "EUR"),
        **dict.fromkeys(["pound", "pounds", "quid", "gbp", "£"], "GBP"),
        **dict.fromkeys(["ruble", "rubles", "rouble", "roubles", "rub", "₽"], "RUB"),
        **dict.fromkeys(["won", "krw", "₩"], "KRW"),
    },
    "ru": {
        **dict.fromkeys(["рубль", "рубля", "рублей", "рублям", "рублями", "руб", "р", "₽"], "RUB"),
        **dict.fromkeys(["доллар", "доллара", "долларов", "бакс", "бакса", "баксов", "$"], "USD"),
        **dict.fromkeys(["евро", "€"], "EUR"),
    },
    "ko": {**dict.fromkeys(["원", "₩"], "KRW"), **dict.fromkeys(["달러", "$"], "USD")},
}

# unit word -> gigabytes per unit
DATA_WORDS: dict[str, dict[str, float]] = {
    "en": {
        **dict.fromkeys(["gig", "gigs", "gigabyte", "gigabytes", "gb", "gbs", "g"], 1.0),
        **dict.fromkeys(["megabyte", "megabytes", "meg", "megs", "mb"], 0.001),
    },
    "ru": {
        **dict.fromkeys(["гигабайт", "гигабайта", "гигабайтов", "гигабайтами", "гига", "гиг", "гига",
                         "гигов", "гигу", "гб", "gb"], 1.0),
        **dict.fromkeys(["мегабайт", "мегабайта", "мегабайтов", "мб", "mb"], 0.001),
    },
    "ko": {**dict.fromkeys(["기가", "기가바이트", "gb"], 1.0), **dict.fromkeys(["메가", "mb"], 0.001)},
}

PLUS_WORDS = {"plus", "плюс", "플러스", "+"}

YES_NO: dict[str, dict[str, list[str]]] = {
    "en": {
        "yes": ["yes", "yeah", "yea", "yep", "yup", "ya", "sure", "ok", "okay", "correct", "right",
                "that's right", "of course", "absolutely", "definitely", "certainly", "go ahead",
                "please do", "affirmative", "confirm", "do it", "indeed", "uh huh", "aye", "alright",
                "all right", "exactly", "i do", "that is correct"],
        "no": ["no", "nope", "nah", "not really", "no thanks", "no thank you", "don't", "do not",
               "negative", "cancel", "never mind", "wrong", "incorrect", "not now", "not that",
               "no way", "i don't", "that's wrong"],
    },
    "ru": {
        "yes": ["да", "ага", "угу", "конечно", "верно", "точно", "правильно", "давай", "давайте",
                "хорошо", "ладно", "подтверждаю", "согласен", "согласна", "именно", "да да", "ок",
                "окей", "разумеется", "естественно"],
        "no": ["нет", "неа", "не надо", "не нужно", "не хочу", "отмена", "отменить", "отмени",
               "неверно", "неправильно", "не так", "не то", "ни в коем случае", "нет спасибо"],
    },
    "ko": {
        "yes": ["네", "예", "응", "그래요", "맞아요", "좋아요", "네네", "맞습니다", "그렇습니다"],
        "no": ["아니요", "아니오", "아니", "아뇨", "싫어요", "취소", "아닙니다", "괜찮아요"],
    },
}

# letters next to digits are split ("5gb" -> "5 gb"), currency signs become tokens
_SPLIT_RE = re.compile(r"(?<=\d)(?=[^\d\s.,])|(?<=[^\d\s.,+])(?=\d)|([$€£₽₩+])")
_PUNCT_RE = re.compile(r"[^\w\s'$€£₽₩+.,]|(?<!\d)[.,]|[.,](?!\d)")


def normalize(text: str) -> str:
    """Lower-case, ё -> е, punctuation dropped (decimal points kept), spaces collapsed."""
    text = text.lower().replace("ё", "е").replace("-", " ").replace("’", "'")
    text = _PUNCT_RE.sub(" ", text)
    text = _SPLIT_RE.sub(lambda m: f" {m.group(1) or ''} ", text)
    return " ".join(text.split())


def tokenize(text: str, lang: str = "en") -> list[str]:
    """Tokens of `normalize(text)`."""
    return normalize(text).split()


def _find_phrase(tokens: Sequence[str], phrases: Sequence[str]) -> int | None:
    """Index of the first token where any phrase (space-separated words) starts, or None."""
    best: int | None = None
    for phrase in phrases:
        words = phrase.split()
        for i in range(len(tokens) - len(words) + 1):
            if list(tokens[i : i + len(words)]) == words:
                best = i if best is None else min(best, i)
                break
    return best


def yes_no(tokens: Sequence[str], lang: str) -> str | None:
    """"yes" or "no" if the tokens contain a yes-like or no-like expression (the earlier one wins)."""
    table = YES_NO.get(lang, YES_NO["en"])
    yes, no = _find_phrase(tokens, table["yes"]), _find_phrase(tokens, table["no"])
    if lang != "en":  # callers mix in English "ok", "yes", "no"
        yes = _min(yes, _find_phrase(tokens, ["yes", "ok", "okay"]))
        no = _min(no, _find_phrase(tokens, ["no"]))
    if yes is None and no is None:
        return None
    if no is not None and (yes is None or no <= yes):
        return "no"
    return "yes"


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _phone(tokens: Sequence[str], numbers: list[SpokenNumber]) -> tuple[str, set[int]] | None:
    """The longest run of adjacent numbers with 7+ digits in all, and the indexes of its numbers."""
    best: tuple[str, set[int]] | None = None
    i = 0
    while i < len(numbers):
        j, digits = i, numbers[i].digits
        while j + 1 < len(numbers) and numbers[j + 1].start == numbers[j].end:
            j += 1
            digits += numbers[j].digits
        if len(digits) >= MIN_PHONE_DIGITS and all(isinstance(n.value, int) for n in numbers[i : j + 1]):
            if numbers[i].start > 0 and tokens[numbers[i].start - 1] in PLUS_WORDS:
                digits = "+" + digits
            if best is None or len(digits) > len(best[0]):
                best = (digits, set(range(i, j + 1)))
        i = j + 1
    return best


def extract_entities(text: str, lang: str) -> dict[str, Any]:
    """Entities found in `text` (see the module docstring for the keys); {} if none."""
    tokens = tokenize(text, lang)
    numbers = find_numbers(tokens, lang)
    found: dict[str, Any] = {}
    phone = _phone(tokens, numbers)
    used: set[int] = set()
    if phone:
        found["phone"], used = phone
    currencies = CURRENCY_WORDS.get(lang, {}) | CURRENCY_WORDS["en"]
    data_units = DATA_WORDS.get(lang, {}) | DATA_WORDS["en"]
    for idx, number in enumerate(numbers):
        if idx in used:
            continue
        after = tokens[number.end] if number.end < len(tokens) else ""
        before = tokens[number.start - 1] if number.start > 0 else ""
        if "amount" not in found and (after in currencies or before in ("$", "€", "£", "₽", "₩")):
            found["amount"] = number.value
            found["currency"] = currencies.get(after) or currencies.get(before) or "KRW"
            used.add(idx)
        elif "gigabytes" not in found and after in data_units:
            gb = number.value * data_units.get(after, 1.0)
            found["gigabytes"] = int(gb) if float(gb).is_integer() else round(gb, 3)
            used.add(idx)
    if lang == "ko":  # Korean glues units to numbers: 오천원, 삼기가
        for idx, number in enumerate(numbers):
            token = tokens[number.start]
            if idx in used or number.end - number.start != 1:
                continue
            if token.endswith("원") and "amount" not in found:
                found["amount"], found["currency"] = number.value, "KRW"
                used.add(idx)
            elif token.endswith(("기가", "기가바이트")) and "gigabytes" not in found:
                found["gigabytes"] = number.value
                used.add(idx)
    rest = [n for idx, n in enumerate(numbers) if idx not in (phone[1] if phone else set())]
    if rest:
        found["number"] = rest[0].value
    answer = yes_no(tokens, lang)
    if answer:
        found["yes_no"] = answer
    return found
