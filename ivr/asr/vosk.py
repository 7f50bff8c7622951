"""Streaming Vosk (Kaldi) engine: one `vosk.Model` per process, one recognizer per call.

Grammars. Vosk compiles a runtime phrase list into a *word loop*: any sequence of the words
of any phrase is a legal hypothesis ("요금제 추가 연결" from phrases "요금제 변경", "데이터 추가",
"상담원 연결"). So the recognizer maps hypotheses back onto whole phrases itself:

1. decode with an n-best list (`SetMaxAlternatives`) and word timings (`SetWords`);
2. turn the n-best scores into posteriors (softmax) and sum them per phrase whose words the
   hypothesis spells exactly;
3. reject (empty text) unless the best phrase has enough posterior mass AND its words cover
   enough of the speech that was heard. Out-of-grammar speech is otherwise absorbed by one
   short in-grammar word ("네") with silence around it: coverage (word time / speech time, pauses
   between words not counted) catches that, and it works for models without an `[unk]` word
   (the Korean model has none).

Phrases with words the model does not know are dropped with a warning naming them (Vosk
would silently drop the word and then recognise a different phrase).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from ivr.asr.base import Alternative, AsrResult
from ivr.asr.vosk_chunking import chunked_model_dir
from ivr.audio.pcm import FRAME_BYTES, SAMPLE_RATE
from ivr.errors import ConfigError, EngineError, ModelNotFoundError

log = logging.getLogger(__name__)

# n-best list length: enough to find the in-grammar reading behind a noisy top hypothesis.
DEFAULT_MAX_ALTERNATIVES = 8
# Minimum posterior mass of the chosen phrase over the n-best list (0..1).
DEFAULT_MIN_CONFIDENCE = 0.3
# Minimum share of the detected speech that the phrase's words must cover (0..1); measured on
# espeak-ng Korean: in-grammar phrases cover 0.75-1.0, out-of-grammar speech forced onto a short
# in-grammar word 0.2-0.5.
DEFAULT_MIN_COVERAGE = 0.6
# Exact phrases only by default. 0.6 would also credit one wrong word in a phrase of three or more
# ("인터넷 안 좋아요" -> "인터넷 안 돼요"); on espeak-ng Korean with the 76-phrase support grammar that
# turned 2 rejections into right answers but 4 into wrong ones, so it stays opt-in.
DEFAULT_MIN_PHRASE_SIMILARITY = 1.0
# A 20 ms block counts as speech for the coverage measure when louder than this RMS and
# than SPEECH_PEAK_SHARE of the turn's loudest blocks.
SPEECH_MIN_RMS = 300.0
SPEECH_PEAK_SHARE = 0.1
# idle Kaldi recognizers kept per grammar for the next call (a few MB each at most)
MAX_IDLE_PER_GRAMMAR = 64
# quiet stretches at least this long inside a turn are pauses, not speech, for the coverage measure
PAUSE_MS = 300


@dataclass(frozen=True)
class VoskParams:
    """Recogniser settings; defaults are named constants above."""

    max_alternatives: int = DEFAULT_MAX_ALTERNATIVES  # 0: single best with per-word confidences
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    min_coverage: float = DEFAULT_MIN_COVERAGE
    # a hypothesis also counts for a phrase it nearly spells (word-level similarity >= this; 1.0:
    # exact only); its posterior is then weighted by the similarity
    min_phrase_similarity: float = DEFAULT_MIN_PHRASE_SIMILARITY
    # extra "garbage" words added to every grammar to absorb out-of-grammar speech; a hypothesis
    # made only of phrase words after dropping them still matches, but they count as uncovered.
    garbage_words: tuple[str, ...] = ()


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _import_vosk() -> Any:
    try:
        import vosk
    except ImportError:  # pragma: no cover - vosk is a hard dependency
        raise EngineError("the vosk package is not installed", fix="pip install vosk") from None
    vosk.SetLogLevel(-1)
    return vosk


def load_model(path: str | Path) -> Any:
    """The process-wide `vosk.Model` for `path` (loaded once, thread-safe)."""
    key = str(Path(path).resolve())
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if not Path(key).is_dir():
            raise ModelNotFoundError(f"Vosk model directory {key} does not exist", fix="ivr models list")
        vosk = _import_vosk()
        started = time.monotonic()
        try:
            model = vosk.Model(key)
        except Exception as exc:  # vosk raises a bare Exception on a bad model dir
            raise EngineError(
                f"Vosk cannot load the model at {key} ({exc})",
                fix="point to an unpacked Vosk model (it has am/ and conf/), e.g. `ivr models path ko`",
            ) from None
        log.info("loaded Vosk model %s in %.1f s", key, time.monotonic() - started)
        _MODELS[key] = model
        return model


def normalize_phrase(phrase: str) -> str:
    """Lower-case, single-spaced: the form Vosk vocabularies use."""
    return " ".join(phrase.lower().split())


class VoskEngine:
    """Process-wide Vosk engine; `recognizer()` is cheap and gives one recognizer per call."""

    name = "vosk"
    streaming = True

    def __init__(self, model_path: str | Path, params: VoskParams | None = None, *, frames_per_chunk: int = 0,
                 chunking_dir: Path | None = None) -> None:
        """`frames_per_chunk`: the acoustic network's chunk (0: the model's own; ivr/asr/vosk_chunking.py), set
        through an overlay of the model under `chunking_dir`."""
        self.model_path = Path(model_path)
        self.params = params or VoskParams()
        load_from = self.model_path
        if frames_per_chunk and self.model_path.is_dir():
            load_from = chunked_model_dir(self.model_path, frames_per_chunk,
                                          chunking_dir or self.model_path.parent / ".chunking")
        self.model = load_model(load_from)
        self._vocab_cache: dict[str, bool] = {}
        self._warned: set[str] = set()
        # Kaldi recognizers given back by finished calls and grammar changes, by grammar: building
        # one with a grammar costs ~70 ms of CPU (measured, Korean model, 21 phrases), a Reset() nothing
        self._idle: dict[str, list[Any]] = {}
        self._idle_lock = threading.Lock()
        self.kaldi_built = 0

    def take_kaldi(self, grammar: str) -> Any:
        """A reset Kaldi recognizer for `grammar` (the JSON phrase list, "" for free-form)."""
        with self._idle_lock:
            idle = self._idle.get(grammar)
            if idle:
                return idle.pop()
        self.kaldi_built += 1
        vosk = _import_vosk()
        if grammar:
            rec = vosk.KaldiRecognizer(self.model, SAMPLE_RATE, grammar)
        else:
            rec = vosk.KaldiRecognizer(self.model, SAMPLE_RATE)
        rec.SetWords(True)
        if self.params.max_alternatives > 0:
            rec.SetMaxAlternatives(self.params.max_alternatives)
        return rec

    def give_back_kaldi(self, grammar: str, rec: Any) -> None:
        rec.Reset()
        with self._idle_lock:
            idle = self._idle.setdefault(grammar, [])
            if len(idle) < MAX_IDLE_PER_GRAMMAR:
                idle.append(rec)

    def in_vocabulary(self, word: str) -> bool:
        """Does the model know this word (so a grammar can use it)?"""
        if word not in self._vocab_cache:
            self._vocab_cache[word] = self.model.vosk_model_find_word(word) >= 0
        return self._vocab_cache[word]

    def filter_phrases(self, phrases: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
        """Split phrases into usable ones and {phrase: unknown words}; logs a warning for the latter."""
        kept: list[str] = []
        dropped: dict[str, list[str]] = {}
        for phrase in dict.fromkeys(normalize_phrase(p) for p in phrases):
            if not phrase:
                continue
            unknown = [w for w in phrase.split() if not self.in_vocabulary(w)]
            if unknown:
                dropped[phrase] = unknown
            else:
                kept.append(phrase)
        if dropped and not set(dropped) <= self._warned:
            self._warned.update(dropped)  # once per phrase per process, not at every turn
            log.warning(
                "grammar phrases dropped, words not in the Vosk model vocabulary (%s): %s",
                self.model_path,
                "; ".join(f"{p!r} ({', '.join(w)})" for p, w in dropped.items()),
            )
        return kept, dropped

    def recognizer(self) -> VoskRecognizer:
        return VoskRecognizer(self)


@dataclass
class _Hyp:
    words: tuple[str, ...]
    score: float  # log domain; only differences matter
    covered_s: float  # summed duration of the words
    confs: tuple[float, ...] = ()  # per-word confidences (single-best mode only)


class VoskRecognizer:
    """One call's recognizer; implements `ivr.asr.base.Recognizer`."""

    def __init__(self, engine: VoskEngine) -> None:
        self.engine = engine
        self.params = engine.params
        self._phrases: list[str] | None = None
        self._pending: list[str] | None = None
        self._grammar_changed = False
        self._segments: list[dict[str, Any]] = []
        self._levels: list[float] = []
        self._fed_bytes = 0
        self._open_segment = False  # audio fed since the last closed segment
        self._last_partial = ""
        self._memo: tuple[tuple[int, int], AsrResult] | None = None  # _reading's answer and the turn state it read
        self._lock = threading.Lock()  # close() may come from another thread than a decode in flight
        self._grammar_key = ""
        self._closed = False
        # The Kaldi recognizer is built at first use: a call's first Listen usually sets a grammar before
        # any audio, and a free-form one costs ~70 ms of CPU to build (a grammar one ~1 ms; measured,
        # Korean model): 50 callers arriving at once built 50 free-form ones for nothing.
        self._rec: Any = None

    # --- Recognizer protocol -------------------------------------------------------------------
    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        """Restrict to `phrases` (None: free-form); applied at the next turn (now if none started)."""
        if phrases is None:
            self._pending = None
        else:
            kept, _ = self.engine.filter_phrases(phrases)
            if not kept:
                raise ConfigError(
                    f"no grammar phrase is usable with the Vosk model at {self.engine.model_path}: "
                    f"{list(phrases)[:5]}",
                    fix="use phrases made of words in the model vocabulary",
                )
            self._pending = kept
        self._grammar_changed = self._pending != self._phrases
        if self._grammar_changed and not self._fed_bytes:
            self.reset()

    def accept(self, pcm: bytes) -> AsrResult | None:
        """Feed 8 kHz slin; returns a partial result when the hypothesis changed."""
        with self._lock:
            return self._accept(pcm)

    def _accept(self, pcm: bytes) -> AsrResult | None:
        if not pcm or self._closed:
            return None
        rec = self._kaldi()
        self._fed_bytes += len(pcm)
        self._open_segment = True
        self._levels.extend(_block_levels(pcm))
        if rec.AcceptWaveform(pcm):
            # Vosk's own endpointer closed a segment (a pause inside the turn): keep it.
            self._segments.append(json.loads(rec.Result()))
            partial = ""
        else:
            partial = json.loads(rec.PartialResult()).get("partial", "")
        text = " ".join(t for t in [*(_top_text(s) for s in self._segments), partial] if t)
        if text and text != self._last_partial:
            self._last_partial = text
            return AsrResult(text=text, confidence=0.0, is_final=False, engine="vosk")
        return None

    def final(self) -> AsrResult:
        """Decode what was fed this turn; an empty text means rejected (or nothing said)."""
        with self._lock:
            if self._closed:
                raise EngineError("the recognizer was closed (the call ended)")
            return self._final()

    def close_segment(self, answer_by: float | None = None) -> None:
        """The caller went quiet: decode what was fed so far now, while the endpointer still waits
        out its silence, so the final has (almost) nothing left to do. Speech that resumes becomes
        a next segment, joined to this one as Vosk's own pauses are. (`answer_by`, when the call wants
        the turn's answer, is for engines that start more work here: this decode is done on return.)"""
        with self._lock:
            if not self._closed and self._open_segment:
                self._segments.append(json.loads(self._kaldi().FinalResult()))
                self._open_segment = False
                self._reading()  # the phrase choice too, here on the pool: the decision takes it from the loop

    def closed_reading(self) -> AsrResult | None:
        """What `final` would answer if nothing more is fed (None while a segment is still open)."""
        with self._lock:
            return self._reading() if self._turn_decoded() else None

    def decoded_final(self) -> AsrResult | None:
        """`final` when nothing is left to decode (close_segment ran and no audio came after it): the
        phrase choice close_segment made (~0.01 ms), cheap enough for the event loop, so a decided
        turn skips the ASR pool's queue and thread hand-offs. None while audio is still undecoded."""
        with self._lock:
            return self._final() if self._turn_decoded() else None

    def _turn_decoded(self) -> bool:
        """The turn has segments and all are closed (decoded): nothing is left for Kaldi."""
        return not self._closed and not self._open_segment and bool(self._segments)

    def _final(self) -> AsrResult:
        if self._open_segment or not self._segments:
            self._segments.append(json.loads(self._kaldi().FinalResult()))
        result = self._reading()
        self._begin_turn()
        return result

    def _reading(self) -> AsrResult:
        """The decision over this turn's closed segments, made once per state of the turn (the second
        opinion asks `closed_reading` and then `final` on the event loop: one phrase choice, not two)."""
        key = (len(self._segments), self._fed_bytes)
        if self._memo is None or self._memo[0] != key:
            self._memo = key, self._decide(_combine(_parse_segments(self._segments)), _speech_seconds(self._levels))
        return self._memo[1]

    def reset(self) -> None:
        """Forget this turn's audio; a grammar set since the last turn takes effect now."""
        with self._lock:
            if not self._closed:
                self._reset()

    def _reset(self) -> None:
        if self._grammar_changed:
            self._phrases = self._pending
            self._grammar_changed = False
            self._rec = self._new_kaldi()
        elif self._rec is not None:
            self._rec.Reset()
        self._begin_turn()

    # --- internals ----------------------------------------------------------------------------
    @property
    def phrases(self) -> list[str] | None:
        """The grammar in force for the current turn (None: free-form)."""
        return self._phrases

    def _begin_turn(self) -> None:
        self._memo = None
        self._segments = []
        self._levels = []
        self._fed_bytes = 0
        self._open_segment = False  # audio fed since the last closed segment
        self._last_partial = ""

    def _kaldi(self) -> Any:
        """The Kaldi recognizer for the grammar in force, built now if this call has none yet."""
        if self._rec is None:
            self._rec = self._new_kaldi()
        return self._rec

    def _new_kaldi(self) -> Any:
        """The engine's Kaldi recognizer for the grammar in force (the one in hand goes back)."""
        grammar = ""
        if self._phrases is not None:
            garbage = [w for w in self.params.garbage_words if self.engine.in_vocabulary(w)]
            grammar = json.dumps([*self._phrases, *garbage], ensure_ascii=False)
        old = self._rec
        if old is not None:
            self.engine.give_back_kaldi(self._grammar_key, old)
        self._grammar_key = grammar
        return self.engine.take_kaldi(grammar)

    def close(self) -> None:
        """The call is over: the Kaldi recognizer goes back to the engine for the next call."""
        with self._lock:
            self._closed = True
            if self._rec is not None:
                self.engine.give_back_kaldi(self._grammar_key, self._rec)
                self._rec = None

    def _decide(self, hyps: list[_Hyp], speech_s: float) -> AsrResult:
        hyps = [h for h in hyps if h.words] or hyps
        if not hyps or not hyps[0].words:
            return AsrResult(text="", confidence=0.0, is_final=True, engine="vosk")
        posts = _posteriors(hyps)
        top_confs = hyps[0].confs or (posts[0],) * len(hyps[0].words)
        raw_words = tuple((w, round(c, 3)) for w, c in zip(hyps[0].words, top_confs, strict=True))
        if self._phrases is None:
            alts = tuple(Alternative(" ".join(h.words), round(p, 3)) for h, p in zip(hyps, posts, strict=True))
            best = alts[0]
            return AsrResult(best.text, best.confidence, True, alts, raw_words, "vosk")
        garbage = set(self.params.garbage_words)
        mass: dict[str, float] = {}
        for hyp, post in zip(hyps, posts, strict=True):
            kept = tuple(w for w in hyp.words if w not in garbage)
            if _coverage(hyp, kept, speech_s) < self.params.min_coverage:
                continue
            match = self._closest_phrase(kept)
            if match is not None:
                mass[match[0]] = mass.get(match[0], 0.0) + post * match[1]
        ranked = sorted(mass.items(), key=lambda kv: -kv[1])
        if not ranked or ranked[0][1] < self.params.min_confidence:
            log.debug("rejected: n-best %s, speech %.2f s", [" ".join(h.words) for h in hyps], speech_s)
            return AsrResult(text="", confidence=0.0, is_final=True, words=raw_words, engine="vosk")
        alts = tuple(Alternative(p, round(m, 3)) for p, m in ranked)
        return AsrResult(alts[0].text, alts[0].confidence, True, alts, raw_words, "vosk")

    def _closest_phrase(self, words: tuple[str, ...]) -> tuple[str, float] | None:
        """The grammar phrase these words spell, or nearly spell (word-level similarity), with its score."""
        phrase = " ".join(words)
        phrases = self._phrases or []
        if phrase in phrases:
            return phrase, 1.0
        if not words or self.params.min_phrase_similarity >= 1.0:
            return None
        best = max(phrases, key=lambda p: Levenshtein.normalized_similarity(words, p.split()))
        score = Levenshtein.normalized_similarity(words, best.split())
        return (best, score) if score >= self.params.min_phrase_similarity else None


def _top_text(segment: dict[str, Any]) -> str:
    if "alternatives" in segment:
        alts = segment["alternatives"]
        return str(alts[0].get("text", "")) if alts else ""
    return str(segment.get("text", ""))


def _parse_segments(segments: list[dict[str, Any]]) -> list[list[_Hyp]]:
    """Each Vosk result JSON -> its hypotheses (best first)."""
    out: list[list[_Hyp]] = []
    for seg in segments:
        if "alternatives" in seg:
            hyps = [
                _Hyp(
                    tuple(str(a.get("text", "")).split()),
                    float(a.get("confidence", 0.0)),
                    sum(w["end"] - w["start"] for w in a.get("result", [])),
                )
                for a in seg["alternatives"]
            ]
        else:
            words = seg.get("result", [])
            confs = tuple(float(w.get("conf", 1.0)) for w in words)
            hyps = [
                _Hyp(
                    tuple(str(seg.get("text", "")).split()),
                    0.0,
                    sum(w["end"] - w["start"] for w in words),
                    confs,
                )
            ]
        out.append(hyps)
    return out


def _combine(segments: list[list[_Hyp]]) -> list[_Hyp]:
    """Join the segments of one turn: the best of each earlier segment + the n-best of the last."""
    spoken = [s for s in segments if s and s[0].words]
    if not spoken:
        return []
    *head, last = spoken
    prefix = [s[0] for s in head]
    words = tuple(w for h in prefix for w in h.words)
    covered = sum(h.covered_s for h in prefix)
    confs = tuple(c for h in prefix for c in h.confs)
    return [_Hyp(words + h.words, h.score, covered + h.covered_s, confs + h.confs) for h in last]


def _posteriors(hyps: list[_Hyp]) -> list[float]:
    """n-best scores -> probabilities (softmax); single-best mode: mean word confidence."""
    if len(hyps) == 1 and hyps[0].confs:
        return [sum(hyps[0].confs) / len(hyps[0].confs)]
    top = max(h.score for h in hyps)
    weights = [math.exp(h.score - top) for h in hyps]
    total = sum(weights)
    return [w / total for w in weights]


def _coverage(hyp: _Hyp, kept: tuple[str, ...], speech_s: float) -> float:
    """Share of the detected speech explained by the (non-garbage) words of a hypothesis."""
    if speech_s <= 0:
        return 1.0
    covered = hyp.covered_s * (len(kept) / len(hyp.words) if hyp.words else 0.0)
    return covered / speech_s


def _block_levels(pcm: bytes) -> list[float]:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    block = FRAME_BYTES // 2
    return [
        float(np.sqrt(np.mean(samples[i : i + block] ** 2))) for i in range(0, len(samples), block) if block
    ]


def _speech_seconds(levels: list[float]) -> float:
    """Seconds of speech in the turn: first to last loud 20 ms block, minus pauses of PAUSE_MS or more
    (a caller's pause between words is not speech the grammar words must cover; the short quiet
    stretches inside and between fluent words are)."""
    if not levels:
        return 0.0
    peak = float(np.percentile(levels, 95))
    threshold = max(SPEECH_MIN_RMS, SPEECH_PEAK_SHARE * peak)
    voiced = [i for i, level in enumerate(levels) if level >= threshold]
    if not voiced:
        return 0.0
    block_s = FRAME_BYTES / (2 * SAMPLE_RATE)
    min_pause = PAUSE_MS / 1000 / block_s
    blocks = voiced[-1] - voiced[0] + 1
    blocks -= sum(b - a - 1 for a, b in itertools.pairwise(voiced) if b - a - 1 >= min_pause)
    return blocks * block_s
