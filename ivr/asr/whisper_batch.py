"""Whisper finals of several calls decoded together, on an encoder window fitted to the audio.

faster-whisper's `transcribe` pads every utterance to Whisper's 30 s window, and the encoder's
cost follows the window, not the speech: a 2 s "what is my balance" pays for 30 s. Here the
mel features are padded only to `min_window_s` (or the utterance + 1 s when longer; a turn shorter
than `short_turn_s` keeps the 30 s window, which short turns need), the turns of a batch that share a
window are encoded in one CTranslate2 call, and the decoder runs once per group of them that
share a prompt (CTranslate2 needs the same prompt length across a batch; calls in the same
dialog state share their phrase list, hence their prompt). With the bundled English model, a turn up
to 9 s that the ASR queue made too late for a Whisper decode goes to Moonshine tiny instead, for a third of
the CPU of a 20 s decode and a twentieth of a short turn's 30 s one (ivr/asr/moonshine.py;
WhisperParams.moonshine, WhisperEngine.late_by_queue).

Measured (docs/performance.md, one run each, shared machine): the 20 s default window doubles the
turns per CPU-second of the 30 s one with the same intents on turns of 2 s or more (shorter ones lose
on it: ivr/asr/whisper.py DEFAULT_SHORT_TURN_S); 10 s gives 3.7x but loses intents;
batching itself gained +29 % on 10 s and lost 17 % on 20 s. The result is checked like `transcribe`'s:
no-speech probability, compression ratio (repetition loops), a token budget per second of audio.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ivr.asr.moonshine import MAX_TURN_S as MOONSHINE_MAX_S
from ivr.asr.whisper_decoding import (
    EXTRA_TOKENS,
    MIN_AUDIO_S,
    TOKENS_PER_S,
    WHISPER_RATE,
    bias_prompt,
    repetitive,
)
from ivr.audio.pcm import SAMPLE_RATE, resample
from ivr.errors import EngineError

log = logging.getLogger(__name__)

# Whisper's own window (mel frames of 10 ms): 30 s
FULL_WINDOW_FRAMES = 3000
# silence kept after the speech inside the window (the decoder ends the text on it)
TAIL_PAD_FRAMES = 100
HOP = WHISPER_RATE // 100  # samples per mel frame (10 ms): the features of n samples are n // HOP + 1 frames


def decode_batch(engine: Any, items: Sequence[tuple[bytes, Sequence[str] | None]], queued: float | None = None,
                 due: float | None = None) -> list[tuple[str, float]]:
    """(text, confidence) per (8 kHz slin, phrase list); ('', 0.0) for no speech, as `transcribe`. `queued`, `due`
    (time.monotonic, from the ASR pool): the engine's Moonshine (if any) takes a turn up to 9 s that the queue made
    too late for Whisper (`moonshine: under_load`; `always`: every such turn)."""
    out: list[tuple[str, float]] = [("", 0.0)] * len(items)
    model = engine.model
    p = engine.params
    feats: list[np.ndarray] = []
    index: list[int] = []
    seconds: list[float] = []
    windows_of: list[int] = []  # each turn's encoder window, as it would be encoded alone
    fast = engine.moonshine  # None when off, or for a configured model
    for i, (pcm, _phrases) in enumerate(items):
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if len(samples) < MIN_AUDIO_S * SAMPLE_RATE:
            continue
        if len(samples) / SAMPLE_RATE > FULL_WINDOW_FRAMES / 100 - 1:  # longer than one window: the slow path
            out[i] = engine.transcribe(pcm, _phrases)
            engine.count_decoded("whisper")
            continue
        audio = resample(samples, SAMPLE_RATE, WHISPER_RATE).astype(np.float32) / 32768.0
        window = encoder_frames(len(audio) // HOP + 1, p.min_window_s, p.short_turn_s)  # from its feature frames
        if fast is not None and len(samples) / SAMPLE_RATE <= MOONSHINE_MAX_S and (
                p.moonshine == "always" or engine.late_by_queue(window, queued, due)):
            try:
                out[i] = fast.transcribe(audio)
            except Exception as exc:  # Whisper hears the turn instead: a Moonshine fault costs time, not the turn
                log.warning("Moonshine failed (%s: %s); Whisper decodes the turn", type(exc).__name__, exc)
            else:
                engine.count_decoded("moonshine")
                continue
        feats.append(model.feature_extractor(audio))
        index.append(i)
        seconds.append(len(audio) / WHISPER_RATE)
        windows_of.append(window)
    if not feats:
        return out
    engine.count_decoded("whisper", len(feats))
    windows: dict[int, list[int]] = {}  # encoder window -> rows of feats
    for row, window in enumerate(windows_of):
        windows.setdefault(window, []).append(row)
    try:
        import ctranslate2
        from faster_whisper.transcribe import get_ctranslate2_storage

        tokenizer = _tokenizer(engine)
        for frames, window_rows in windows.items():
            started = time.monotonic()
            batch = np.stack([_fit(feats[r], frames) for r in window_rows])
            encoded = np.array(model.model.encode(get_ctranslate2_storage(batch), to_cpu=True))
            groups: dict[tuple[int, ...], list[int]] = {}  # prompt -> positions in `encoded`
            for pos, row in enumerate(window_rows):
                groups.setdefault(tuple(_prompt(engine, tokenizer, items[index[row]][1])), []).append(pos)
            for prompt, positions in groups.items():
                budget = int(max(seconds[window_rows[q]] for q in positions) * TOKENS_PER_S) + EXTRA_TOKENS
                results = model.model.generate(
                    ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[positions])),
                    [list(prompt)] * len(positions),
                    beam_size=p.beam_size,
                    max_length=len(prompt) + budget,
                    return_scores=True,
                    return_no_speech_prob=True,
                    suppress_blank=True,
                    suppress_tokens=[-1],
                )
                for q, result in zip(positions, results, strict=True):
                    out[index[window_rows[q]]] = _judge(tokenizer, result, p.no_speech_threshold)
            engine.record_decode(frames, time.monotonic() - started)  # what a final queued now would wait for
    except Exception as exc:
        raise EngineError(f"Whisper batch decoding failed ({type(exc).__name__}: {exc})", fix="see the log") from exc
    return out


def encoder_frames(length: int, min_window_s: float, short_turn_s: float) -> int:
    """The encoder window (mel frames of 10 ms) of an utterance `length` frames long: Whisper's own 30 s when it
    is shorter than `short_turn_s` (the shorter window loses short turns: WhisperParams), else `min_window_s`, or
    the utterance and its trailing pad when that is longer."""
    if length < short_turn_s * 100:
        return FULL_WINDOW_FRAMES
    frames = max(int(min_window_s * 100), length + TAIL_PAD_FRAMES)
    return min(FULL_WINDOW_FRAMES, frames + frames % 2)  # the encoder halves the frames


def _fit(features: np.ndarray, frames: int) -> np.ndarray:
    if features.shape[1] >= frames:
        return features[:, :frames]
    return np.pad(features, ((0, 0), (0, frames - features.shape[1])))


def _tokenizer(engine: Any) -> Any:
    tokenizer = getattr(engine, "_batch_tokenizer", None)
    if tokenizer is None:
        from faster_whisper.tokenizer import Tokenizer

        model = engine.model
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                              language=engine.params.language)
        engine._batch_tokenizer = tokenizer
    return tokenizer


def _prompt(engine: Any, tokenizer: Any, phrases: Sequence[str] | None) -> list[int]:
    """The decoder prompt `transcribe(initial_prompt=bias_prompt(phrases))` builds."""
    text = bias_prompt(phrases)
    previous = tokenizer.encode(" " + text.strip()) if text else []
    return list(engine.model.get_prompt(tokenizer, previous, without_timestamps=True))


def _judge(tokenizer: Any, result: Any, no_speech_threshold: float) -> tuple[str, float]:
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    text = tokenizer.decode(tokens).strip()
    if not text:
        return "", 0.0
    # faster-whisper's recovery of the average log-probability from the length-normalised score
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    no_speech = result.no_speech_prob
    if no_speech > no_speech_threshold and avg_logprob < -1.0:
        return "", 0.0
    if repetitive(text):
        return "", 0.0
    confidence = math.exp(avg_logprob) * (1.0 - no_speech)
    return text, round(min(1.0, max(0.0, confidence)), 3)

