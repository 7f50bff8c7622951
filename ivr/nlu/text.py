"""Text as the NLU reads it: `normalize` (lower case, ё -> е, punctuation dropped) and `tokenize`."""

from __future__ import annotations

import re

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
