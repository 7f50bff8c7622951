"""Decoding rules both Whisper paths share: the one-file path (ivr/asr/whisper.py) and the batched
call-path finals (ivr/asr/whisper_batch.py; the repetition test also for Moonshine's, ivr/asr/moonshine.py).
Here so neither imports the other."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

WHISPER_RATE = 16000
# shortest audio worth decoding: below this Whisper hallucinates on noise
MIN_AUDIO_S = 0.2
# Whisper's own hallucination test: a transcript whose gzip compression ratio exceeds this is a
# repetition loop ("no, no, no, ..."), typical of noise decoded with a phrase-list prompt
MAX_COMPRESSION_RATIO = 2.4
# token budget per second of audio (fast speech is ~4 tokens/s) plus a constant: bounds the time
# a hallucination loop can burn
TOKENS_PER_S = 8
EXTRA_TOKENS = 10

# Whisper's decoder holds 448 tokens: the prompt gets at most half. A phrase list of a whole menu
# (~450 tokens) overflows it, so the bias prompt keeps the first phrases up to ~80 words.
MAX_PROMPT_CHARS = 400


def bias_prompt(phrases: Sequence[str] | None) -> str | None:
    """The decoding prompt for a phrase list: distinct phrases, in order, within MAX_PROMPT_CHARS."""
    if not phrases:
        return None
    kept: list[str] = []
    size = 0
    for phrase in dict.fromkeys(p.strip() for p in phrases if p.strip()):
        if size + len(phrase) + 2 > MAX_PROMPT_CHARS:
            break
        kept.append(phrase)
        size += len(phrase) + 2
    return ", ".join(kept) or None


def repetitive(text: str) -> bool:
    """A transcript that compresses this well is a repetition loop, not speech (MAX_COMPRESSION_RATIO)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) > MAX_COMPRESSION_RATIO
