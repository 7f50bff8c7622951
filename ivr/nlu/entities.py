"""Built-in entities: numbers, money amounts, gigabytes, phone numbers, yes/no (EN, RU, KO).

`extract_entities(text, lang)` returns a flat dict with the keys it found:

    number     int|float  the first number that is not part of a phone number
    amount     int|float  a number said with a currency ("fifty dollars", "сто рублей", "오천원", "이만 오천 원");
                          cents said after it count ("twenty dollars and fifty cents" -> 20.5)
    currency   str        ISO code of that currency (USD, RUB, KRW, EUR, GBP)
    gigabytes  int|float  a data volume in GB ("two gigs", "5 GB", "три гигабайта", "500 megabytes" -> 0.5)
    phone      str        digits said one by one or in groups, 7+ digits, "+" kept ("plus seven ...")
    yes_no     "yes"|"no" the caller's answer, negation-aware ("yeah", "nope", "конечно", "아니요"; "absolutely
                          not", "конечно нет", "안 돼요" are no); absent when unclear ("yes no", "not sure")

Grammar-defined list entities (tariff names, add-ons) are matched by `ivr.nlu.intents.Nlu`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ivr.nlu.lexicon import PLUS_WORDS
from ivr.nlu.numbers import KO_DIGIT_WORDS, SpokenNumber, find_numbers
from ivr.nlu.text import tokenize

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

# sub-units of a currency, said after the amount: "twenty dollars and fifty cents" -> 20.5
SUBUNIT_WORDS: dict[str, set[str]] = {
    "en": {"cent", "cents", "penny", "pennies", "pence"},
    "ru": {"копейка", "копейки", "копеек", "копейку", "коп", "цент", "цента", "центов"},
    "ko": {"전"},
}
SUBUNIT_CURRENCY = {"en": "USD", "ru": "RUB", "ko": "KRW"}  # "fifty cents" alone

# yes/no expressions; "unsure" ones ("not sure", "не знаю") make the answer unclear. Longer phrases win
# over the words in them ("not really" is no, "no problem" is yes, "not sure" is unsure).
YES_NO: dict[str, dict[str, list[str]]] = {
    "en": {
        "yes": ["yes", "yeah", "yea", "yep", "yup", "ya", "yah", "sure", "ok", "okay", "correct", "right",
                "that's right", "that is right", "of course", "absolutely", "definitely", "certainly",
                "go ahead", "please do", "affirmative", "confirm", "do it", "indeed", "uh huh", "aye",
                "alright", "all right", "exactly", "i do", "that is correct", "that's correct",
                "no problem", "no worries", "not a problem", "why not", "no doubt", "i think so",
                "i guess so", "sounds good", "yes please", "go for it"],
        "no": ["no", "nope", "nah", "not really", "no thanks", "no thank you", "don't", "do not",
               "negative", "cancel", "never mind", "wrong", "incorrect", "not now", "not that",
               "no way", "i don't", "i do not", "that's wrong", "not at all", "by no means", "never",
               "don't think so", "do not think so", "i don't think so", "i do not think so",
               "that's not", "that is not", "it's not", "it is not", "nuh uh", "not yet", "stop",
               "please don't", "don't do it", "do not do it"],
        "unsure": ["not sure", "i'm not sure", "i am not sure", "don't know", "do not know", "i don't know",
                   "i do not know", "no idea", "maybe", "perhaps", "not certain", "dunno"],
    },
    "ru": {
        "yes": ["да", "ага", "угу", "конечно", "верно", "точно", "правильно", "давай", "давайте",
                "хорошо", "ладно", "подтверждаю", "согласен", "согласна", "именно", "да да", "ок",
                "окей", "разумеется", "естественно", "все верно", "так точно", "безусловно",
                "обязательно", "ну да", "да пожалуйста"],
        "no": ["нет", "неа", "не а", "не надо", "не нужно", "не хочу", "отмена", "отменить", "отмени",
               "отменяю", "неверно", "неправильно", "не так", "не то", "ни в коем случае", "нет спасибо",
               "да нет", "не стоит", "не подтверждаю", "ни за что"],
        "unsure": ["не знаю", "не уверен", "не уверена", "может быть", "наверное", "возможно",
                   "не помню"],
    },
    "ko": {
        "yes": ["네", "예", "응", "그래요", "맞아요", "좋아요", "네네", "맞습니다", "그렇습니다", "맞아",
                "그래", "좋아", "좋습니다", "알겠습니다", "알겠어요", "그럼요", "물론이죠", "물론입니다",
                "부탁합니다", "부탁해요", "돼요", "됩니다", "그렇게 해 주세요", "맞네요"],
        "no": ["아니요", "아니오", "아니", "아뇨", "싫어요", "취소", "아닙니다", "괜찮아요", "아니에요",
               "아니예요", "아니야", "아녜요", "싫어", "싫습니다", "안 돼요", "안돼요", "안 돼", "안돼",
               "안 됩니다", "안됩니다", "하지 마세요", "하지마세요", "됐어요", "됐습니다", "필요 없어요",
               "틀려요", "틀렸어요", "틀립니다", "그렇지 않아요", "맞지 않아요", "없어요", "없습니다"],
        "unsure": ["모르겠어요", "모르겠습니다", "잘 모르겠어요", "글쎄요"],
    },
}
# callers mix English into other languages: "ok", "yes", "no"
_MIXED_IN = {"yes": ["yes", "ok", "okay"], "no": ["no"], "unsure": []}
# a negation before a yes word makes it a no ("not right", "не правильно", "안 좋아요"); fillers may
# stand between ("not quite right", "не совсем верно")
NEGATION_BEFORE: dict[str, set[str]] = {
    "en": {"not", "don't", "dont", "isn't", "isnt", "ain't", "aren't", "wasn't", "doesn't", "didn't",
           "won't", "can't", "cannot", "never", "hardly"},
    "ru": {"не", "ни"},
    "ko": {"안", "못"},
}
# ... and so does a negation right after it ("absolutely not", "конечно нет", "좋지 않아요")
NEGATION_AFTER: dict[str, set[str]] = {
    "en": {"not", "never"},
    "ru": {"нет", "не"},
    "ko": {"않아요", "않습니다", "않아"},
}
# words between a negation and the yes word it negates
NEGATION_FILLERS: dict[str, set[str]] = {
    "en": {"quite", "really", "exactly", "entirely", "totally", "completely", "so", "very", "that", "it",
           "too", "all", "at", "be"},
    "ru": {"совсем", "очень", "так", "уж", "вполне", "это", "то"},
    "ko": {"별로", "전혀", "잘"},
}
# words that may go with an answer without making it more than an answer ("uh yes thanks", "ну да")
ANSWER_FILLERS: dict[str, set[str]] = {
    "en": {"uh", "um", "umm", "er", "erm", "hmm", "well", "oh", "please", "thanks", "thank", "you", "that's",
           "it's", "is", "sir", "ma'am"},
    "ru": {"ну", "а", "э", "пожалуйста", "спасибо", "вот"},
    "ko": {"음", "어", "저", "감사합니다"},
}
# a negation said alone is a no ("не", "not"); inside an utterance it only negates the yes word after it
BARE_NO = {"not", "не", "안"}

@lru_cache(maxsize=8)
def _phrase_table(lang: str) -> tuple[tuple[list[str], str], ...]:
    """(words, "yes"|"no"|"unsure") of every yes/no expression of `lang`, longest first."""
    table = YES_NO.get(lang, YES_NO["en"])
    pairs = [(phrase.split(), kind) for kind in ("yes", "no", "unsure") for phrase in table[kind]]
    if lang != "en":
        pairs += [(phrase.split(), kind) for kind, phrases in _MIXED_IN.items() for phrase in phrases]
    return tuple(sorted(pairs, key=lambda pair: -len(pair[0])))  # "not really" before "really"


def yes_no_polarity(tokens: Sequence[str], lang: str) -> str | None:
    """What the caller answered: "yes", "no", "unclear" (both, or "not sure"), or None (no such words).

    Negation-aware: a yes word with a negation before or after it is a no ("not right", "absolutely
    not", "конечно нет", "не согласен", "안 좋아요"). A yes and a no in one utterance ("yes no", "no,
    that's right") are unclear: better asked again than guessed.
    """
    return read_yes_no(tokens, lang)[0]


def read_yes_no(tokens: Sequence[str], lang: str) -> tuple[str | None, bool]:
    """(`yes_no_polarity`, whether the utterance is nothing but that answer: every word is part of a
    yes/no expression, a negation or a filler, as in "definitely not", "uh no thanks", "не согласен")."""
    tokens = list(tokens)
    claimed: list[str | None] = [None] * len(tokens)
    found: list[tuple[int, int, str]] = []
    for words, kind in _phrase_table(lang):
        n = len(words)
        for i in range(len(tokens) - n + 1):
            if tokens[i : i + n] == words and all(c is None for c in claimed[i : i + n]):
                claimed[i : i + n] = [kind] * n
                found.append((i, i + n, kind))
    before = NEGATION_BEFORE.get(lang, set()) | NEGATION_BEFORE["en"]
    after = NEGATION_AFTER.get(lang, set()) | NEGATION_AFTER["en"]
    fillers = NEGATION_FILLERS.get(lang, set())
    kinds: set[str] = set()
    for start, end, kind in found:
        if kind == "yes":
            j = start - 1
            while j >= 0 and tokens[j] in fillers and claimed[j] is None:
                j -= 1
            if j >= 0 and tokens[j] in before and claimed[j] != "yes":
                kind = "no"
            elif end < len(tokens) and tokens[end] in after and claimed[end] != "yes":
                kind = "no"
        kinds.add(kind)
    if not kinds:
        if tokens and all(tok in BARE_NO for tok in tokens):
            return "no", True
        return None, False
    answer_only = all(
        claimed[i] is not None or tok in before or tok in after or tok in fillers
        or tok in ANSWER_FILLERS.get(lang, set()) or tok in ANSWER_FILLERS["en"]
        for i, tok in enumerate(tokens)
    )
    if "unsure" in kinds or len(kinds) > 1:
        return "unclear", answer_only
    return kinds.pop(), answer_only


def yes_no(tokens: Sequence[str], lang: str) -> str | None:
    """"yes" or "no" if the tokens answer yes or no (see `yes_no_polarity`); None if unclear or neither."""
    answer = yes_no_polarity(tokens, lang)
    return answer if answer in ("yes", "no") else None


def _digit_by_digit(tokens: Sequence[str], number: SpokenNumber, lang: str) -> bool:
    """Whether a number was said as digits: any number in English/Russian ("nine sixteen" is a group of a
    phone number); in Korean only digit words one by one (공 일 공, 공일공) or digits, never 이만 or 오천."""
    if lang != "ko":
        return True
    return all(tok.isdigit() or all(ch in KO_DIGIT_WORDS for ch in tok) for tok in tokens[number.start : number.end])


def _phone(tokens: Sequence[str], numbers: list[SpokenNumber], lang: str = "en") -> tuple[str, set[int]] | None:
    """The longest run of adjacent numbers with 7+ digits in all, and the indexes of its numbers."""
    best: tuple[str, set[int]] | None = None
    i = 0
    while i < len(numbers):
        j, digits = i, numbers[i].digits
        while j + 1 < len(numbers) and numbers[j + 1].start == numbers[j].end:
            j += 1
            digits += numbers[j].digits
        run = numbers[i : j + 1]
        if len(digits) >= MIN_PHONE_DIGITS and all(isinstance(n.value, int) for n in run) \
                and all(_digit_by_digit(tokens, n, lang) for n in run):
            if numbers[i].start > 0 and tokens[numbers[i].start - 1] in PLUS_WORDS:
                digits = "+" + digits
            if best is None or len(digits) > len(best[0]):
                best = (digits, set(range(i, j + 1)))
        i = j + 1
    return best


def _subunits(tokens: Sequence[str], numbers: list[SpokenNumber], idx: int, lang: str) -> int | None:
    """Index of the number said as cents right after the amount numbers[idx] and its currency word
    ("twenty dollars [and] fifty cents", "двадцать рублей пятьдесят копеек"), or None."""
    pos = numbers[idx].end + 1  # after the currency word
    if pos < len(tokens) and tokens[pos] in ("and", "и"):
        pos += 1
    subunits = SUBUNIT_WORDS.get(lang, set()) | SUBUNIT_WORDS["en"]
    for k in range(idx + 1, len(numbers)):
        n = numbers[k]
        if n.start == pos and n.end < len(tokens) and tokens[n.end] in subunits \
                and isinstance(n.value, int) and 0 < n.value < 100:
            return k
    return None


def extract_entities(text: str, lang: str) -> dict[str, Any]:
    """Entities found in `text` (see the module docstring for the keys); {} if none."""
    tokens = tokenize(text, lang)
    numbers = find_numbers(tokens, lang)
    found: dict[str, Any] = {}
    phone = _phone(tokens, numbers, lang)
    used: set[int] = set()
    if phone:
        found["phone"], used = phone
    used = set(used)
    currencies = CURRENCY_WORDS.get(lang, {}) | CURRENCY_WORDS["en"]
    data_units = DATA_WORDS.get(lang, {}) | DATA_WORDS["en"]
    subunits = SUBUNIT_WORDS.get(lang, set()) | SUBUNIT_WORDS["en"]
    for idx, number in enumerate(numbers):
        if idx in used:
            continue
        after = tokens[number.end] if number.end < len(tokens) else ""
        before = tokens[number.start - 1] if number.start > 0 else ""
        if "amount" not in found and (after in currencies or before in ("$", "€", "£", "₽", "₩")):
            value = number.value
            if after in currencies:
                cents = _subunits(tokens, numbers, idx, lang)
                if cents is not None and isinstance(value, int):
                    value = _money(value + numbers[cents].value / 100)
                    used.add(cents)
            found["amount"] = value
            found["currency"] = currencies.get(after) or currencies.get(before) or "KRW"
            used.add(idx)
        elif "gigabytes" not in found and after in data_units:
            gb = number.value * data_units.get(after, 1.0)
            found["gigabytes"] = int(gb) if float(gb).is_integer() else round(gb, 3)
            used.add(idx)
    if "amount" not in found:  # "fifty cents"
        for idx, number in enumerate(numbers):
            after = tokens[number.end] if number.end < len(tokens) else ""
            if idx not in used and after in subunits and isinstance(number.value, int) and 0 < number.value < 100:
                found["amount"] = _money(number.value / 100)
                found["currency"] = SUBUNIT_CURRENCY.get(lang, "USD")
                used.add(idx)
                break
    if lang == "ko":  # Korean glues units to numbers: 오천원, 삼기가, 이만 오천원
        for idx, number in enumerate(numbers):
            token = tokens[number.end - 1]
            if idx in used:
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


def _money(value: float) -> int | float:
    """20.5 -> 20.5, 20.0 -> 20 (the type a whole amount has everywhere else)."""
    value = round(value, 2)
    return int(value) if value.is_integer() else value
