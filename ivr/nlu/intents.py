"""Intent matching: rapidfuzz over grammar phrases, weighted by the ASR n-best.

    nlu = Nlu.load("en", settings.paths.grammars)
    nlu.understand("uh how much money have i got")            # -> Understanding(intent="balance", ...)
    nlu.understand([("top up fifty", 0.8), ("top of fifty", 0.5)], expected=["top_up"])
    nlu.phrases(["yes", "no"])                                 # for a grammar-restricted ASR

Scoring: both utterance and phrases are normalised (lower case, punctuation dropped, synonyms
mapped to their canonical word). A phrase scores the best of a whole-string similarity and a
"phrase inside the utterance" similarity (so fillers around a phrase cost little). Each n-best
alternative's score is scaled by its confidence relative to the best one; intents the current
dialog state expects get a small boost; below the grammar threshold the answer is "none".

Yes and no: fuzzy similarity cannot see negation ("absolutely not" is close to the phrase "absolutely"),
so the intents `yes`/`no` follow the negation-aware yes/no reading of each alternative
(`ivr.nlu.entities.yes_no_polarity`). When it says no, `yes` is out and `no` gets the better of the
two scores (at least ANSWER_ONLY_SCORE when the utterance is nothing but the answer: "definitely not",
"не согласен", "싫어요"); when it says yes, the other way round. When it is unclear ("yes no", "not
sure"), neither is a candidate: the caller is asked again rather than guessed for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz

from ivr.nlu.entities import extract_entities, read_yes_no
from ivr.nlu.grammar import Grammar, load_grammar
from ivr.nlu.numbers import find_numbers
from ivr.nlu.text import normalize, tokenize
from ivr.nlu.types import NONE_INTENT, Understanding

EXPECTED_BOOST = 0.08  # added to the score of intents the current state listens for
ALTERNATIVE_FLOOR = 0.5  # weight of an n-best alternative with confidence ~0 relative to the best
SHORT_PHRASE_CHARS = 4  # phrases this short ("no", "да", "네") must match a whole word, not a substring
RANKING_SIZE = 3
INSIDE_BASE = 0.75  # weight of a phrase found inside a longer utterance when it covers ~none of it


@dataclass(frozen=True)
class NluParams:
    threshold: float | None = None  # None: the grammar's threshold
    expected_boost: float = EXPECTED_BOOST
    alternative_floor: float = ALTERNATIVE_FLOOR


class Nlu:
    """Intent and entity understanding for one language, built from its grammar."""

    def __init__(self, grammar: Grammar, params: NluParams | None = None) -> None:
        self.grammar = grammar
        self.lang = grammar.lang
        self.params = params or NluParams()
        self.threshold = self.params.threshold if self.params.threshold is not None else grammar.threshold
        # longest variants first, so "credit left" wins over "credit"
        self._synonyms = sorted(
            ((normalize(v), canon.lower()) for canon, variants in grammar.synonyms.items() for v in variants),
            key=lambda pair: -len(pair[0]),
        )
        self._phrases: list[tuple[str, str]] = [
            (intent, self._prepare(phrase)) for intent, spec in grammar.intents.items() for phrase in spec.phrases
        ]
        self._entity_values = [
            (slot, value, self._prepare(way))
            for slot, values in grammar.entities.items()
            for value, ways in values.items()
            for way in [value, *ways]
        ]

    @classmethod
    def load(cls, lang: str, grammars_dir: Path | str, params: NluParams | None = None) -> Nlu:
        """Load grammars/<lang>/*.yaml; raises ConfigError (file:line) on a broken grammar."""
        return cls(load_grammar(lang, grammars_dir), params)

    @property
    def intents(self) -> list[str]:
        return list(self.grammar.intents)

    # ---- text preparation ---------------------------------------------------------------------
    def _prepare(self, text: str) -> str:
        # numbers become one "#" so a long phone number or amount does not drown the words around it
        tokens = normalize(text).split()
        for number in reversed(find_numbers(tokens, self.lang)):
            tokens[number.start : number.end] = ["#"]
        text = " ".join(tok for i, tok in enumerate(tokens) if tok != "#" or i == 0 or tokens[i - 1] != "#")
        text = f" {text} "
        for variant, canon in self._synonyms:
            text = text.replace(f" {variant} ", f" {canon} ")
        return " ".join(text.split())

    @staticmethod
    def _similarity(utterance: str, phrase: str) -> float:
        """0..1: how well `phrase` matches `utterance` (whole, or as a part of it)."""
        if not utterance or not phrase:
            return 0.0
        whole = max(fuzz.ratio(utterance, phrase), fuzz.token_sort_ratio(utterance, phrase))
        if len(phrase) >= len(utterance):
            return whole / 100.0
        if len(phrase) <= SHORT_PHRASE_CHARS:
            # "no" must not match inside "know": short phrases count only as whole words
            inside = 100.0 if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", utterance) else 0.0
        else:
            inside = fuzz.partial_ratio(phrase, utterance)
        # the phrase said with other words around it: the more of the utterance it covers, the better
        coverage = len(phrase) / len(utterance)
        inside *= INSIDE_BASE + (1 - INSIDE_BASE) * coverage
        return max(whole, inside) / 100.0

    def _scores(self, text: str) -> dict[str, float]:
        prepared = self._prepare(text)
        scores: dict[str, float] = {}
        for intent, phrase in self._phrases:
            s = self._similarity(prepared, phrase)
            if s > scores.get(intent, 0.0):
                scores[intent] = s
        return _follow_polarity(scores, *read_yes_no(tokenize(text, self.lang), self.lang))

    # ---- public API ---------------------------------------------------------------------------
    def understand(
        self,
        alternatives: Sequence[tuple[str, float]] | str,
        expected: Sequence[str] | None = None,
    ) -> Understanding:
        """The intent and entities of an utterance (a string, or the ASR n-best as (text, confidence))."""
        if isinstance(alternatives, str):
            alternatives = [(alternatives, 1.0)]
        alternatives = [(t, c) for t, c in alternatives if t and t.strip()]
        if not alternatives:
            return Understanding(text="", intent=NONE_INTENT, score=0.0)
        best_conf = max(c for _, c in alternatives) or 1.0
        combined: dict[str, tuple[float, str]] = {}
        for text, conf in alternatives:
            weight = self.params.alternative_floor + (1 - self.params.alternative_floor) * max(0.0, conf) / best_conf
            for intent, score in self._scores(text).items():
                weighted = score * weight
                if weighted > combined.get(intent, (0.0, ""))[0]:
                    combined[intent] = (weighted, text)
        expected_set = set(expected or ())
        for intent in expected_set & combined.keys():
            score, text = combined[intent]
            combined[intent] = (min(1.0, score + self.params.expected_boost), text)
        ranking = sorted(((i, round(s, 3)) for i, (s, _) in combined.items()), key=lambda p: -p[1])
        top_text = alternatives[0][0]
        if not ranking or ranking[0][1] < self.threshold:
            return Understanding(
                text=top_text,
                intent=NONE_INTENT,
                score=ranking[0][1] if ranking else 0.0,
                entities=self.entities(top_text),
                ranking=tuple(ranking[:RANKING_SIZE]),
            )
        intent, score = ranking[0]
        text = combined[intent][1]
        return Understanding(
            text=text, intent=intent, score=score, entities=self.entities(text), ranking=tuple(ranking[:RANKING_SIZE])
        )

    def entities(self, text: str) -> dict[str, Any]:
        """Built-in entities (numbers, amounts, phone...) plus the grammar's list entities (tariff...)."""
        found = extract_entities(text, self.lang)
        prepared = f" {self._prepare(text)} "
        best: dict[str, tuple[int, str]] = {}
        for slot, value, way in self._entity_values:
            if way and f" {way} " in prepared and len(way) > best.get(slot, (0, ""))[0]:
                best[slot] = (len(way), value)
        for slot, (_, value) in best.items():
            found[slot] = value
        return found

    def phrases(self, intents: Sequence[str] | None = None) -> list[str]:
        """The phrases of `intents` (all intents if None), as a grammar-restricted ASR should hear them.

        Returned as written in the grammar (lower-cased, punctuation dropped), without duplicates.
        """
        wanted = set(intents) if intents is not None else None
        seen: dict[str, None] = {}
        for intent, spec in self.grammar.intents.items():
            if wanted is None or intent in wanted:
                for phrase in spec.phrases:
                    seen.setdefault(normalize(phrase), None)
        return list(seen)

    def slot_phrases(self, slot: str) -> list[str]:
        """Phrases a grammar-restricted ASR needs to hear values of `slot` (list entity values included)."""
        out: dict[str, None] = {}
        for phrase in self.grammar.slot_phrases.get(slot, []):
            out.setdefault(normalize(phrase), None)
        for value, ways in self.grammar.entities.get(slot, {}).items():
            for way in [value, *ways]:
                out.setdefault(normalize(way), None)
        return list(out)


ANSWER_INTENTS = ("yes", "no")
ANSWER_ONLY_SCORE = 0.9  # score of yes/no for an utterance that is nothing but a clear answer


def _follow_polarity(scores: dict[str, float], polarity: str | None, answer_only: bool = False) -> dict[str, float]:
    """`scores` with the intents yes/no made to agree with what the utterance answers (module docstring)."""
    if polarity is None:  # no yes/no words: the fuzzy scores may still catch a misheard "yeah"
        return scores
    best = max(scores.get("yes", 0.0), scores.get("no", 0.0))
    if polarity in ANSWER_INTENTS and answer_only:
        best = max(best, ANSWER_ONLY_SCORE)
    out = dict(scores)  # same order: ties keep ranking as before
    for intent in ANSWER_INTENTS:
        if intent != polarity:
            out.pop(intent, None)
    if polarity in ANSWER_INTENTS and best > 0.0:
        out[polarity] = best
    return out
