"""Intent understanding: a trained classifier over the grammar's phrases, fused over the ASR n-best.

    nlu = Nlu.load("en", settings.paths.grammars)
    nlu.understand("uh how much money have i got")            # -> Understanding(intent="balance", ...)
    nlu.understand([("top up fifty", 0.8), ("top of fifty", 0.5)], expected=["top_up"])
    nlu.phrases(["yes", "no"])                                 # for a grammar-restricted ASR

Scoring: utterance and phrases are normalised alike (lower case, punctuation dropped, numbers as
"#", synonyms mapped to their canonical word). `ivr.nlu.classifier` turns the prepared text into a
calibrated probability per intent (sentence embeddings + n-gram TF-IDF -> logistic regression,
trained from the grammar's phrases, cached by their hash). rapidfuzz stays where string similarity
is the right tool: an utterance that is (nearly) one of the phrases ("menu", "yeah", a misspelt
keyword) scores at least that similarity, and list entities are matched by their ways of saying.
An utterance that is exactly a phrase of one intent is that intent with probability 1, and the
classifier is not asked (the finals of a grammar-restricted recognizer always are phrases).

n-best fusion: each alternative's probabilities are weighted by its confidence (relative to the
best, never below `alternative_floor`) and averaged: P(intent) = sum_i w_i P(intent | reading_i) /
sum_i w_i. The reading that contributed most to the winning intent is the chosen `text`. Intents the
current dialog state expects get a small boost. Below the threshold (the grammar's `threshold`, or
the one the classifier chose from the data) the answer is "none". When the two best intents are
close, `Understanding.ambiguous` names both, and the dialog asks which one was meant.

Yes and no: a classifier, like fuzzy similarity, cannot be trusted with negation ("absolutely not"
is close to "absolutely"), so the intents `yes`/`no` follow the negation-aware yes/no reading of each
alternative (`ivr.nlu.entities.yes_no_polarity`). When it says no, `yes` is out and `no` gets the
better of the two scores (at least ANSWER_ONLY_SCORE when the utterance is nothing but the answer:
"definitely not", "не согласен", "싫어요"); when it says yes, the other way round. When it is unclear
("yes no", "not sure"), neither is a candidate: the caller is asked again rather than guessed for.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

from ivr.nlu.classifier import ClassifierParams, IntentClassifier, load_or_train
from ivr.nlu.entities import extract_entities, read_yes_no
from ivr.nlu.grammar import Grammar, load_grammar
from ivr.nlu.numbers import find_numbers
from ivr.nlu.text import normalize, tokenize
from ivr.nlu.types import NONE_INTENT, Understanding

EXPECTED_BOOST = 0.08  # added to the score of intents the current state listens for
ALTERNATIVE_FLOOR = 0.5  # weight of an n-best alternative with confidence ~0 relative to the best
RANKING_SIZE = 3
PHRASE_MATCH = 0.9  # an utterance this similar to one phrase (whole-string) scores at least that
AMBIGUITY_MARGIN = 0.15  # the two best intents closer than this (and both plausible): ask which one
HINT_MIN_CHARS = 4  # domain words for a recognizer prompt: shorter ones are mostly function words
AMBIGUITY_FLOOR = 0.25  # ... where "plausible" is at least this probability each
PREPARED_CACHE_SIZE = 4096  # prepared readings kept per grammar (strings; a few hundred KB at most)


@dataclass(frozen=True)
class NluParams:
    threshold: float | None = None  # None: the grammar's threshold, else the classifier's automatic one
    expected_boost: float = EXPECTED_BOOST
    alternative_floor: float = ALTERNATIVE_FLOOR
    ambiguity_margin: float = AMBIGUITY_MARGIN
    classifier: ClassifierParams = ClassifierParams()
    embeddings: bool = True  # False: n-gram features only (what a missing embedding model degrades to)
    cache: bool = True  # keep trained classifiers on disk (ivr.nlu.classifier.cache_dir())


class Nlu:
    """Intent and entity understanding for one language, built from its grammar."""

    def __init__(self, grammar: Grammar, params: NluParams | None = None) -> None:
        self.grammar = grammar
        self.lang = grammar.lang
        self.params = params or NluParams()
        # Readings are prepared more than once per turn (understands_at_once on the event loop, then _scores,
        # then entities for the chosen one), and callers say the same few phrases: one preparation each.
        self._prepare = functools.lru_cache(maxsize=PREPARED_CACHE_SIZE)(self._prepare_text)
        # longest variants first, so "credit left" wins over "credit"
        self._synonyms = sorted(
            ((normalize(v), canon.lower()) for canon, variants in grammar.synonyms.items() for v in variants),
            key=lambda pair: -len(pair[0]),
        )
        self._phrases: list[tuple[str, str]] = [
            (intent, self._prepare(phrase)) for intent, spec in grammar.intents.items() for phrase in spec.phrases
        ]
        self._phrase_texts = [phrase for _, phrase in self._phrases]
        intents_of: dict[str, set[str]] = {}
        for intent, phrase in self._phrases:
            intents_of.setdefault(phrase, set()).add(intent)
        # a phrase of exactly one intent: an utterance that is that phrase needs no classifier
        self._exact: dict[str, str] = {p: next(iter(i)) for p, i in intents_of.items() if len(i) == 1}
        self._entity_values = [
            (slot, value, self._prepare(way))
            for slot, values in grammar.entities.items()
            for value, ways in values.items()
            for way in [value, *ways]
        ]
        self._classifier: IntentClassifier | None = None
        self._train_lock = threading.Lock()

    @classmethod
    def load(cls, lang: str, grammars_dir: Path | str, params: NluParams | None = None) -> Nlu:
        """Load grammars/<lang>/*.yaml; raises ConfigError (file:line) on a broken grammar."""
        return cls(load_grammar(lang, grammars_dir), params)

    @property
    def intents(self) -> list[str]:
        return list(self.grammar.intents)

    @property
    def classifier(self) -> IntentClassifier:
        """The trained classifier (trained, or read from the cache, on first use; `train()` does it now)."""
        if self._classifier is None:
            with self._train_lock:
                if self._classifier is None:
                    examples: dict[str, list[str]] = {}
                    for intent, phrase in self._phrases:
                        examples.setdefault(intent, []).append(phrase)
                    self._classifier = load_or_train(examples, self.lang, self.params.classifier,
                                                     embedder=self.params.embeddings, use_cache=self.params.cache)
        return self._classifier

    def train(self) -> Nlu:
        """Train (or load from the cache) now rather than on the first utterance; returns self."""
        _ = self.classifier
        return self

    @property
    def threshold(self) -> float:
        """Below this probability the answer is "none": set by ops (params, grammar) or chosen from the data."""
        chosen = self._chosen_threshold()
        return chosen if chosen is not None else self.classifier.threshold

    def _chosen_threshold(self) -> float | None:
        """The threshold ops set (params, then the grammar); None: the classifier's, chosen from the data."""
        return self.params.threshold if self.params.threshold is not None else self.grammar.threshold

    # ---- text preparation ---------------------------------------------------------------------
    def _prepare_text(self, text: str) -> str:
        # numbers become one "#" so a long phone number or amount does not drown the words around it
        tokens = normalize(text).split()
        for number in reversed(find_numbers(tokens, self.lang)):
            tokens[number.start : number.end] = ["#"]
        text = " ".join(tok for i, tok in enumerate(tokens) if tok != "#" or i == 0 or tokens[i - 1] != "#")
        text = f" {text} "
        for variant, canon in self._synonyms:
            text = text.replace(f" {variant} ", f" {canon} ")
        return " ".join(text.split())

    def _phrase_match(self, prepared: str) -> tuple[str, float] | None:
        """The intent of the phrase this utterance (nearly) is, with the similarity; None if none is close."""
        if not prepared or not self._phrase_texts:
            return None
        found = process.extractOne(prepared, self._phrase_texts, scorer=fuzz.ratio,
                                   score_cutoff=PHRASE_MATCH * 100)
        if found is None:
            return None
        _, score, index = found
        return self._phrases[index][0], score / 100.0

    def _scores(self, text: str) -> dict[str, float]:
        prepared = self._prepare(text)
        exact = self._exact.get(prepared)
        if exact is not None:
            # One of the grammar's own phrases (every final of a grammar-restricted recognizer is one):
            # its intent, certain, without the classifier's embedding (5-16 ms by engine), which 50 callers
            # finishing at once would queue for (docs/performance.md).
            return _follow_polarity({exact: 1.0}, *read_yes_no(tokenize(text, self.lang), self.lang))
        scores: dict[str, float] = {}
        # numbers alone ("five five five zero one two three" -> "#") answer a slot, they ask for nothing
        if prepared and set(prepared.split()) != {"#"}:
            scores = dict(self.classifier.rank(prepared))
        match = self._phrase_match(prepared)
        if match is not None and match[1] > scores.get(match[0], 0.0):
            scores[match[0]] = match[1]
            scores = dict(sorted(scores.items(), key=lambda p: -p[1]))
        return _follow_polarity(scores, *read_yes_no(tokenize(text, self.lang), self.lang))

    # ---- public API ---------------------------------------------------------------------------
    def understands_at_once(self, alternatives: Sequence[tuple[str, float]]) -> bool:
        """`understand` needs no classifier for these readings: each is one of the grammar's own
        phrases (every final of a grammar-restricted recognizer is) and the classifier is loaded (its
        threshold is read). Then it is a lookup (~0.1 ms), cheap enough for the event loop."""
        ready = self._classifier is not None or self._chosen_threshold() is not None
        return ready and all(self._prepare(text) in self._exact for text, _ in alternatives if text and text.strip())

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
        floor = self.params.alternative_floor
        fused: dict[str, float] = {}
        # per intent, the reading that gave it the most weighted probability: the chosen reading
        support: dict[str, tuple[float, str]] = {}
        total_weight = 0.0
        for text, conf in alternatives:
            weight = floor + (1 - floor) * max(0.0, conf) / best_conf
            total_weight += weight
            for intent, score in self._scores(text).items():
                fused[intent] = fused.get(intent, 0.0) + weight * score
                if weight * score > support.get(intent, (0.0, ""))[0]:
                    support[intent] = (weight * score, text)
        combined = {intent: score / total_weight for intent, score in fused.items()}
        for intent in set(expected or ()) & combined.keys():
            combined[intent] = min(1.0, combined[intent] + self.params.expected_boost)
        ranking = sorted(((i, round(s, 3)) for i, s in combined.items()), key=lambda p: -p[1])
        ambiguous = self._ambiguous(ranking)
        if not ranking or ranking[0][1] < self.threshold:
            top_text = alternatives[0][0]
            return Understanding(
                text=top_text,
                intent=NONE_INTENT,
                score=ranking[0][1] if ranking else 0.0,
                entities=self.entities(top_text),
                ranking=tuple(ranking[:RANKING_SIZE]),
                ambiguous=ambiguous,
                nbest=tuple(alternatives),
            )
        intent, score = ranking[0]
        text = support[intent][1]
        return Understanding(
            text=text, intent=intent, score=score, entities=self.entities(text),
            ranking=tuple(ranking[:RANKING_SIZE]), ambiguous=ambiguous, nbest=tuple(alternatives),
        )

    def _ambiguous(self, ranking: list[tuple[str, float]]) -> tuple[str, ...]:
        """The two best intents when they are too close to choose between (answers never are)."""
        if len(ranking) < 2:
            return ()
        (first, p1), (second, p2) = ranking[0], ranking[1]
        if first in ANSWER_INTENTS or second in ANSWER_INTENTS:
            return ()
        if p2 >= AMBIGUITY_FLOOR and p1 - p2 < self.params.ambiguity_margin and p1 + p2 >= self.threshold:
            return (first, second)
        return ()

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

    def domain_words(self, intents: Sequence[str] | None = None) -> list[str]:
        """The grammar's key words for a free-form recognizer's prompt (Whisper initial_prompt): words of
        the `intents` a state expects first, then the rest of the grammar's, each group most frequent
        first; words shorter than HINT_MIN_CHARS (mostly function words) left out. The recognizer cuts
        the list to its prompt budget."""
        wanted = set(intents or ())
        groups: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        for intent, spec in self.grammar.intents.items():
            for phrase in spec.phrases:
                for word in normalize(phrase).split():
                    if len(word) >= HINT_MIN_CHARS and not word.isdigit():
                        groups[0 if intent in wanted else 1][word] += 1
        out: dict[str, None] = {}
        for group in groups:
            for word, _ in group.most_common():
                out.setdefault(word, None)
        return list(out)

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
