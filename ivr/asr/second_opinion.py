"""A second opinion for grammar turns: when Vosk's grammar rejects what the caller said, the same
audio is decoded by Whisper (the bundled multilingual model for the language), snapped to the same
phrases, and its reading is taken if it snaps.

Why: the two recognizers miss different utterances. On the Korean development set kept apart from the
replay fixtures (`bench/ko_devset.py`, 88 in-grammar espeak-ng utterances and 40 out-of-scope ones),
Vosk alone: right 9, wrong 4, rejected 75; Whisper base alone: right 27, wrong 10, rejected 51; Vosk then
Whisper: right 29, wrong 12, rejected 47; every out-of-scope utterance rejected in all three. Vosk stays
first: it streams (partials, barge-in words) and costs ~1 % of a core per call, where a Whisper decode
costs ~0.4 s of a core, paid only on the turns Vosk rejects.

`asr.second_opinion: false` turns it off (capacity before understanding).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ivr.asr.base import AsrResult
from ivr.asr.vosk import VoskEngine, VoskRecognizer
from ivr.asr.whisper import WhisperEngine, WhisperRecognizer

log = logging.getLogger(__name__)


class SecondOpinionEngine:
    """Vosk with Whisper behind it for the turns Vosk's grammar rejects."""

    name = "vosk"
    streaming = True

    def __init__(self, first: VoskEngine, second: WhisperEngine) -> None:
        self.first = first
        self.second = second

    def recognizer(self) -> SecondOpinionRecognizer:
        return SecondOpinionRecognizer(self.first.recognizer(), self.second.recognizer())


class SecondOpinionRecognizer:
    """One call's pair; implements `ivr.asr.base.Recognizer` plus Vosk's `close_segment` and `close`."""

    def __init__(self, first: VoskRecognizer, second: WhisperRecognizer) -> None:
        self.first = first
        self.second = second  # only buffers the turn's audio until asked

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        self.first.set_grammar(phrases)
        self.second.set_grammar(phrases)

    def accept(self, pcm: bytes) -> AsrResult | None:
        self.second.accept(pcm)
        return self.first.accept(pcm)

    def close_segment(self) -> None:
        self.first.close_segment()

    def final(self) -> AsrResult:
        first = self.first.final()
        grammar = self.first.phrases is not None
        if first.text or not grammar or not self.second.buffered_bytes:
            self.second.reset()
            return first
        second = self.second.final()  # snapped to the same phrases, or rejected ("")
        if second.text:
            log.info("second opinion: Vosk rejected the turn, Whisper heard %r (%.2f)", second.text, second.confidence)
            return second
        return first

    def reset(self) -> None:
        self.first.reset()
        self.second.reset()

    @property
    def phrases(self) -> list[str] | None:
        return self.first.phrases

    def close(self) -> None:
        self.first.close()
        self.second.reset()
