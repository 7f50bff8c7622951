"""Hooks of the demo operator line: `python:ivr.demo_operator.hooks.<name>` in flows/support.yaml.

Each hook is `hook(params, context) -> dict`. The caller is found by `caller_id` (unknown numbers get
the default demo subscriber of the call's language). Results carry raw values and `*_text` forms
ready to be spoken in the call's language ("12 dollars and 50 cents", "350 рублей", "만 오천 원");
`outcome` picks the flow's next state (on_result).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivr.demo_operator import CONTEXT_KEY
from ivr.demo_operator.db import (
    ADDON_PRICE_PER_GB,
    MAX_TOP_UP,
    TARIFFS,
    OperatorDb,
    Subscriber,
)
from ivr.errors import ConfigError

APN = "internet.demo"
TARIFF_NAMES = {
    "en": {"basic": "Basic", "smart": "Smart", "unlimited": "Unlimited"},
    "ru": {"basic": "Базовый", "smart": "Смарт", "unlimited": "Безлимитный"},
    "ko": {"basic": "기본", "smart": "스마트", "unlimited": "무제한"},
}
# currency -> language -> (one, few, many) for Russian, (one, many) otherwise
CURRENCY_NAMES = {
    "USD": {"en": ("dollar", "dollars"), "ru": ("доллар", "доллара", "долларов"), "ko": ("달러",)},
    "RUB": {"en": ("ruble", "rubles"), "ru": ("рубль", "рубля", "рублей"), "ko": ("루블",)},
    "KRW": {"en": ("won", "won"), "ru": ("вона", "воны", "вон"), "ko": ("원",)},
}
CENTS = {"en": ("cent", "cents"), "ru": ("цент", "цента", "центов")}
GIGABYTES = {"en": ("gigabyte", "gigabytes"), "ru": ("гигабайт", "гигабайта", "гигабайт"), "ko": ("기가바이트",)}
UNLIMITED = {"en": "unlimited data", "ru": "безлимитный интернет", "ko": "무제한 데이터"}
PLUS = {"en": "plus", "ru": "плюс", "ko": "플러스"}


# ---- spoken forms ----------------------------------------------------------------------------
def ru_plural(n: int, forms: tuple[str, ...]) -> str:
    """Russian noun form after the number n: 1 рубль, 2 рубля, 5 рублей, 11 рублей, 21 рубль."""
    if len(forms) < 3:
        return forms[-1]
    if n % 10 == 1 and n % 100 != 11:
        return forms[0]
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return forms[1]
    return forms[2]


def korean_number(n: int) -> str:
    """Sino-Korean reading of a whole number: 15000 -> 만 오천, 350 -> 삼백오십."""
    if n == 0:
        return "영"
    digits = "영일이삼사오육칠팔구"
    out = []
    for scale_value, scale_name in ((100_000_000, "억"), (10_000, "만"), (1, "")):
        part, n = divmod(n, scale_value)
        if not part:
            continue
        words = ""
        for unit_value, unit_name in ((1000, "천"), (100, "백"), (10, "십"), (1, "")):
            d, part = divmod(part, unit_value)
            if d:
                words += ("" if d == 1 and unit_name else digits[d]) + unit_name
        out.append(("" if words == "일" and scale_name == "만" else words) + scale_name)
    return " ".join(out)


def noun(n: float, forms: tuple[str, ...], lang: str) -> str:
    if lang == "ru":
        return forms[1] if not float(n).is_integer() else ru_plural(int(n), forms)
    if lang == "ko":
        return forms[0]
    return forms[0] if n == 1 else forms[-1]


def number_text(value: float, lang: str) -> str:
    if float(value).is_integer():
        return korean_number(int(value)) if lang == "ko" else str(int(value))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    if lang == "ru":
        return text.replace(".", ",")
    if lang == "ko":
        whole, frac = text.split(".")
        return f"{korean_number(int(whole))} 점 {' '.join(korean_number(int(d)) for d in frac)}"
    return text


def money_text(amount: float, currency: str, lang: str) -> str:
    """12.5 USD in English -> "12 dollars and 50 cents"; 350 RUB in Russian -> "350 рублей"."""
    names = CURRENCY_NAMES.get(currency, {}).get(lang) or (currency,)
    whole, cents = int(amount), round((amount - int(amount)) * 100)
    if lang == "ko":
        return f"{korean_number(whole)} {names[0]}"
    text = f"{whole} {noun(whole, names, lang)}"
    if cents and currency == "USD" and lang in CENTS:
        text += f" {'and' if lang == 'en' else 'и'} {cents} {noun(cents, CENTS[lang], lang)}"
    return text


def data_text(gigabytes: float, lang: str) -> str:
    return f"{number_text(gigabytes, lang)} {noun(gigabytes, GIGABYTES[lang], lang)}"


def phone_text(phone: str, lang: str) -> str:
    """Digits one by one, as a readback: "+7916..." -> "plus 7 9 1 6 ..."."""
    digits = " ".join(ch for ch in phone if ch.isdigit())
    return f"{PLUS.get(lang, 'plus')} {digits}" if phone.startswith("+") else digits


# ---- helpers ---------------------------------------------------------------------------------
def _db(context: Mapping[str, Any]) -> OperatorDb:
    path = context.get(CONTEXT_KEY)
    if not path:
        raise ConfigError("hook context has no demo_db path",
                          fix="pass ivr.demo_operator.hook_context_for(settings) to run_hook")
    return OperatorDb(path)


def _lang(params: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    lang = str(params.get("lang") or context.get("lang") or "en")
    return lang if lang in TARIFF_NAMES else "en"


def _me(params: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[OperatorDb, Subscriber, str]:
    db = _db(context)
    lang = _lang(params, context)
    caller = str(params.get("caller_id") or context.get("caller_id") or "")
    return db, db.find(caller, lang), lang


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN


def _tariff_texts(code: str, sub: Subscriber, lang: str, prefix: str = "tariff") -> dict[str, Any]:
    data_gb, prices = TARIFFS[code]
    price = prices.get(sub.currency, 0)
    return {
        f"{prefix}_code": code,
        f"{prefix}_name": TARIFF_NAMES[lang][code],
        f"{prefix}_price_text": money_text(price, sub.currency, lang),
        f"{prefix}_data_text": UNLIMITED[lang] if not data_gb else data_text(data_gb, lang),
    }


def _state(sub: Subscriber, lang: str) -> dict[str, Any]:
    return {
        "name": sub.name,
        "msisdn": sub.msisdn,
        "balance": sub.balance,
        "currency": sub.currency,
        "balance_text": money_text(sub.balance, sub.currency, lang),
        "data_left_text": data_text(sub.data_left, lang),
        "msisdn_text": phone_text(sub.msisdn, lang),
        **_tariff_texts(sub.tariff, sub, lang),
    }


# ---- hooks -----------------------------------------------------------------------------------
def identify(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Who is calling: name, number, balance, tariff (unknown callers: the demo subscriber)."""
    _, sub, lang = _me(params, context)
    return _state(sub, lang)


def balance(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Balance and data left."""
    _, sub, lang = _me(params, context)
    return _state(sub, lang)


def _top_up_refusal(amount: float | None, sub: Subscriber, lang: str) -> dict[str, Any] | None:
    """Why a top-up of `amount` cannot be done (the hook's answer), or None if it can."""
    if amount is None or amount <= 0:
        return {"outcome": "invalid"}
    limit = MAX_TOP_UP.get(sub.currency, 500)
    if amount > limit:
        return {"outcome": "too_much", "limit_text": money_text(limit, sub.currency, lang)}
    return None


def top_up(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Add `amount` (in the account's currency) to the balance. outcome: ok | invalid | too_much."""
    db, sub, lang = _me(params, context)
    amount = _number(params.get("amount"))
    refusal = _top_up_refusal(amount, sub, lang)
    if refusal is not None:
        return refusal
    assert amount is not None  # refused above
    new_balance = round(sub.balance + amount, 2)
    db.update(sub.msisdn, "top_up", f"{amount} {sub.currency}", balance=new_balance)
    return {"outcome": "ok", "amount_text": money_text(amount, sub.currency, lang),
            "balance": new_balance, "balance_text": money_text(new_balance, sub.currency, lang)}


def top_up_quote(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Check a top-up `amount` before confirming. outcome: ok | invalid | too_much."""
    _, sub, lang = _me(params, context)
    amount = _number(params.get("amount"))
    refusal = _top_up_refusal(amount, sub, lang)
    if refusal is not None:
        return refusal
    assert amount is not None  # refused above
    return {"outcome": "ok", "amount_text": money_text(amount, sub.currency, lang)}


def tariff_info(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The current tariff: name, monthly price, data included."""
    _, sub, lang = _me(params, context)
    return _state(sub, lang)


def tariff_quote(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """What switching to `tariff` means. outcome: ok | same | unknown."""
    _, sub, lang = _me(params, context)
    code = str(params.get("tariff") or "")
    if code not in TARIFFS:
        return {"outcome": "unknown"}
    if code == sub.tariff:
        return {"outcome": "same", **_tariff_texts(code, sub, lang, "new_tariff")}
    return {"outcome": "ok", **_tariff_texts(code, sub, lang, "new_tariff")}


def tariff_change(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Switch to `tariff` (confirmed by the caller before). outcome: ok | unknown."""
    db, sub, lang = _me(params, context)
    code = str(params.get("tariff") or "")
    if code not in TARIFFS:
        return {"outcome": "unknown"}
    db.update(sub.msisdn, "tariff_change", f"{sub.tariff} -> {code}", tariff=code)
    return {"outcome": "ok", **_tariff_texts(code, sub, lang)}


def addon_quote(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Price of `gigabytes` extra data. outcome: ok | invalid | insufficient_funds."""
    _, sub, lang = _me(params, context)
    gb = _number(params.get("gigabytes"))
    if gb is None or gb <= 0 or gb > 50:
        return {"outcome": "invalid"}
    price = gb * ADDON_PRICE_PER_GB.get(sub.currency, 2)
    texts = {"gigabytes_text": data_text(gb, lang), "price_text": money_text(price, sub.currency, lang),
             "balance_text": money_text(sub.balance, sub.currency, lang)}
    return {"outcome": "ok" if price <= sub.balance else "insufficient_funds", **texts}


def addon_buy(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Buy `gigabytes` extra data from the balance. outcome: ok | invalid | insufficient_funds."""
    db, sub, lang = _me(params, context)
    quote = addon_quote(params, context)
    if quote["outcome"] != "ok":
        return quote
    gb = float(params["gigabytes"])
    price = gb * ADDON_PRICE_PER_GB.get(sub.currency, 2)
    new_balance, new_data = round(sub.balance - price, 2), round(sub.data_left + gb, 3)
    db.update(sub.msisdn, "addon", f"{gb} GB for {price} {sub.currency}", balance=new_balance, data_left=new_data)
    return {"outcome": "ok", "gigabytes_text": data_text(gb, lang),
            "balance_text": money_text(new_balance, sub.currency, lang), "data_left_text": data_text(new_data, lang)}


def share_check(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Can `gigabytes` go to `phone`? outcome: ok | invalid | not_enough_data | same_number."""
    db, sub, lang = _me(params, context)
    gb = _number(params.get("gigabytes"))
    phone = str(params.get("phone") or "")
    digits = "".join(ch for ch in phone if ch.isdigit())
    if gb is None or gb <= 0 or len(digits) < 7:
        return {"outcome": "invalid"}
    texts = {"phone_text": phone_text(phone, lang), "gigabytes_text": data_text(gb, lang),
             "data_left_text": data_text(sub.data_left, lang)}
    own = "".join(ch for ch in sub.msisdn if ch.isdigit())
    if own[-10:] == digits[-10:]:
        return {"outcome": "same_number", **texts}
    if gb > sub.data_left:
        return {"outcome": "not_enough_data", **texts}
    return {"outcome": "ok", **texts}


def share_data(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Move `gigabytes` of data to `phone` (a subscriber of ours gets them at once)."""
    db, sub, lang = _me(params, context)
    check = share_check(params, context)
    if check["outcome"] != "ok":
        return check
    gb, phone = float(params["gigabytes"]), str(params["phone"])
    new_data = round(sub.data_left - gb, 3)
    db.update(sub.msisdn, "share_out", f"{gb} GB to {phone}", data_left=new_data)
    receiver = db.find_number(phone)
    if receiver is not None:
        db.update(receiver.msisdn, "share_in", f"{gb} GB from {sub.msisdn}",
                  data_left=round(receiver.data_left + gb, 3))
    return {"outcome": "ok", **check, "data_left_text": data_text(new_data, lang)}


def block_sim(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Block the caller's SIM (lost or stolen). outcome: ok | already."""
    db, sub, lang = _me(params, context)
    if sub.blocked:
        return {"outcome": "already", "phone_text": phone_text(sub.msisdn, lang)}
    db.update(sub.msisdn, "block", str(params.get("reason", "lost")), blocked=1)
    return {"outcome": "ok", "phone_text": phone_text(sub.msisdn, lang)}


def roaming_status(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Is roaming on? outcome: on | off."""
    _, sub, _lang_ = _me(params, context)
    return {"outcome": "on" if sub.roaming else "off"}


def roaming_enable(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Turn roaming on. outcome: ok."""
    db, sub, _lang_ = _me(params, context)
    db.update(sub.msisdn, "roaming_on", roaming=1)
    return {"outcome": "ok"}


def internet_setup(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Mobile internet settings (APN); also 'sends' them by SMS (logged)."""
    db, sub, _lang_ = _me(params, context)
    db.update(sub.msisdn, "settings_sms", APN)
    return {"outcome": "ok", "apn": APN}


def request_callback(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """After hours: ask the live line to call back. outcome: ok."""
    db, sub, lang = _me(params, context)
    db.update(sub.msisdn, "callback", str(params.get("reason", "")))
    return {"outcome": "ok", "phone_text": phone_text(str(context.get("caller_id") or sub.msisdn), lang)}
