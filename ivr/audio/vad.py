"""Voice activity detection and endpointing for one caller turn.

Sans-io: the `Endpointer` is fed one 20 ms slin frame at a time and keeps its own clock
from the amount of audio fed (or an explicit `now_ms`), never the wall clock, so a test
can replay any audio instantly and the call pipeline can drive it from AudioSocket frames.

Which frames are speech is the `SpeechDetector`'s call; the endpointer turns that per-frame
verdict into turn events. Two detectors:
- `EnergyDetector` (here, the default and the cheapest path): RMS above both an absolute floor and
  a multiple of the noise floor (the quietest frame of the last 1.5 s), with hysteresis. It takes
  steady noise for silence but flags pink noise bursts and DTMF/call-progress tones as speech.
- `SileroDetector` (ivr/audio/silero.py): the Silero VAD network, no false speech on noise or tones;
  chosen by `vad.detector` in the settings, falls back to energy when its package is missing.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ivr.audio.pcm import FRAME_MS, SAMPLE_RATE, SAMPLE_WIDTH, rms
from ivr.errors import ConfigError

# --- defaults, with the anchors they were taken from ---------------------------------------------
# How long to wait for the caller to start talking before a no-input event. VoiceXML leaves
# `timeout` platform-dependent (Plum: 3 s; Microsoft Speech Server `initialtimeout`: 3 s); callers on
# a phone line often need a beat longer after a question, so 5 s, the common IVR "Read()" timeout.
DEFAULT_NO_INPUT_MS = 5000
# Trailing silence that ends an utterance. VoiceXML `completetimeout` (Microsoft: 0.5 s) and
# `incompletetimeout` (Microsoft: 1 s; Speech Server `endsilence` 1000 ms); the Vosk models' own
# endpoint rule 2 uses 0.5 s. Commercial IVRs typically sit at 700-800 ms: 800 ms.
DEFAULT_END_SILENCE_MS = 800
# Longest utterance before we stop listening and decode what we have. Microsoft Speech Server
# `babbletimeout` defaults to 20 s; a menu answer is a few seconds, so 15 s is generous.
DEFAULT_MAX_UTTERANCE_MS = 15000
# Speech that must last this long over a prompt before it counts as barge-in (the prompt stops).
# Shorter blips (a cough, "uh", line noise) must not cut a prompt. Asterisk BackgroundDetect()
# needs min=100 ms of sound; one short syllable is ~200-300 ms: 300 ms.
DEFAULT_BARGE_IN_MIN_SPEECH_MS = 300
# Consecutive speech needed to declare "speech started" (Asterisk BackgroundDetect min=100 ms). 80, not 100:
# a real, short Russian "нет" (ru/real_no_1.wav) after 2 s of line silence gives Silero ~128 ms over its
# threshold, and depending on how the call's 20 ms frames fall on its 32 ms windows 100 ms was reached in 20 of
# 32 alignments (80 ms: 32 of 32). bench/endpointing.py with 80: the same false starts on the noise/tone set
# (energy 9, Silero 0), clean 71/71 and pink 10 dB 70/71 on time, the same --noises table.
DEFAULT_SPEECH_START_MS = 80
# Once the utterance's trailing silence has begun, consecutive speech needed before it counts as the caller
# talking again (the silence restarts). Under noise, single 20 ms noise frames passed the detector while the
# network's probability decayed after the last word, and each one restarted the 800 ms. 40 ms, not more: with
# 60 ms, speech at 5 dB SNR (white noise, music), heard in short runs, was split into two utterances
# (bench/endpointing.py and docs/performance.md, "End of speech under noise").
DEFAULT_SPEECH_RESUME_MS = 40
# Absolute RMS floor for speech, in 16-bit sample units. Asterisk dsp.conf `silencethreshold=256`
# is an average-magnitude threshold on the same scale; RMS of speech sits above it.
DEFAULT_MIN_SPEECH_RMS = 300.0
# Speech when RMS exceeds the noise floor by this factor; keep "in speech" above the lower factor
# (hysteresis, as in LiveKit's audio gate: activation 3x, deactivation 1.8x the silence floor).
DEFAULT_START_RATIO = 3.0
DEFAULT_CONTINUE_RATIO = 1.8
# Noise floor = the minimum frame level over this window ("minimum statistics", R. Martin 2001,
# tracks noise over ~1.5 s windows): stationary noise sets its own floor and is not speech, while
# speech always has quieter gaps within 1.5 s that keep the floor low.
DEFAULT_NOISE_WINDOW_MS = 1500
# Silero VAD speech probability that starts speech; speech continues above it minus 0.15. Both are
# the Silero project's own defaults (`threshold=0.5`, `neg_threshold=threshold-0.15`).
DEFAULT_SPEECH_PROBABILITY = 0.5


@dataclass(frozen=True)
class EndpointParams:
    """Per-state endpointing settings (flows may override any of them by name)."""

    no_input_ms: int = DEFAULT_NO_INPUT_MS  # 0 disables the no-input timeout
    end_silence_ms: int = DEFAULT_END_SILENCE_MS
    max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS
    barge_in_min_speech_ms: int = DEFAULT_BARGE_IN_MIN_SPEECH_MS
    speech_start_ms: int = DEFAULT_SPEECH_START_MS
    speech_resume_ms: int = DEFAULT_SPEECH_RESUME_MS
    min_speech_rms: float = DEFAULT_MIN_SPEECH_RMS
    start_ratio: float = DEFAULT_START_RATIO
    continue_ratio: float = DEFAULT_CONTINUE_RATIO
    noise_window_ms: int = DEFAULT_NOISE_WINDOW_MS
    speech_probability: float = DEFAULT_SPEECH_PROBABILITY  # Silero detector only

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(
                    f"endpointing setting {f.name}={value!r} must be a number >= 0",
                    fix=f"set {f.name} to a non-negative number (default {f.default})",
                )
        if self.noise_window_ms < FRAME_MS:
            raise ConfigError(
                f"noise_window_ms={self.noise_window_ms} is shorter than one frame",
                fix=f"use at least {FRAME_MS} (default {DEFAULT_NOISE_WINDOW_MS})",
            )
        if self.speech_probability > 1:
            raise ConfigError(
                f"speech_probability={self.speech_probability} is above 1",
                fix=f"use a probability between 0 and 1 (default {DEFAULT_SPEECH_PROBABILITY})",
            )
        if self.continue_ratio > self.start_ratio:
            raise ConfigError(
                f"continue_ratio {self.continue_ratio} is above start_ratio {self.start_ratio}",
                fix="keep continue_ratio <= start_ratio (hysteresis)",
            )

    def with_overrides(self, overrides: dict[str, Any] | None) -> EndpointParams:
        """A copy with some fields replaced, e.g. from a flow state's `endpoint:` mapping."""
        if not overrides:
            return self
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown endpointing setting(s): {', '.join(unknown)}",
                fix=f"use one of: {', '.join(known)}",
            )
        values: dict[str, Any] = {}
        for name, value in overrides.items():
            kind = int if known[name].type in (int, "int") else float
            try:
                values[name] = kind(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"endpointing setting {name}={value!r} is not a number", fix=f"give {name} a number"
                ) from None
        return dataclasses.replace(self, **values)


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started talking; `at_ms` is where the speech began (turn clock)."""

    at_ms: int


@dataclass(frozen=True)
class BargeIn:
    """Speech has lasted `barge_in_min_speech_ms`: stop any prompt that is playing."""

    at_ms: int
    speech_ms: int


@dataclass(frozen=True)
class SpeechEnded:
    """End of the utterance: decode now. `speech_ms` runs from speech start to last speech."""

    at_ms: int
    reason: Literal["silence", "max_length"]
    speech_ms: int


@dataclass(frozen=True)
class NoInputTimeout:
    """Nothing was said within `no_input_ms` of the turn start."""

    at_ms: int


EndpointEvent = SpeechStarted | BargeIn | SpeechEnded | NoInputTimeout


class SpeechDetector(Protocol):
    """Decides, frame by frame, whether the caller is talking; one instance per call (it has state)."""

    name: str

    def configure(self, params: EndpointParams) -> None:
        """New turn settings; what the detector learned about the line (noise floor) is kept."""

    def is_speech(self, frame: bytes, in_speech: bool) -> bool:
        """Is this 20 ms frame speech? `in_speech`: the endpointer is inside an utterance (hysteresis)."""
        ...


class EnergyDetector:
    """RMS against an absolute floor and an adaptive noise floor, with hysteresis (no model)."""

    name = "energy"

    def __init__(self, params: EndpointParams | None = None) -> None:
        self._levels: collections.deque[float] = collections.deque(maxlen=1)
        self.configure(params or EndpointParams())

    def configure(self, params: EndpointParams) -> None:
        self.params = params
        window = max(1, params.noise_window_ms // FRAME_MS)
        self._levels = collections.deque(list(self._levels)[-window:], maxlen=window)

    @property
    def noise_rms(self) -> float:
        """Current noise floor estimate (RMS); kept across turns of one call."""
        return min(self._levels) if self._levels else 0.0

    def level_is_speech(self, level: float, in_speech: bool) -> bool:
        p = self.params
        ratio = p.continue_ratio if in_speech else p.start_ratio
        return level >= p.min_speech_rms and level >= self.noise_rms * ratio

    def observe(self, level: float, in_speech: bool) -> bool:
        """Take one frame's RMS into the noise floor; is it speech?"""
        self._levels.append(level)
        return self.level_is_speech(level, in_speech)

    def is_speech(self, frame: bytes, in_speech: bool) -> bool:
        return self.observe(rms(frame), in_speech)


class Endpointer:
    """Turn endpointing state machine: waiting -> speaking -> done (until `reset`)."""

    def __init__(self, params: EndpointParams | None = None, detector: SpeechDetector | None = None) -> None:
        self.params = params or EndpointParams()
        self.detector: SpeechDetector = detector or EnergyDetector(self.params)
        self.reset(self.params)

    def reset(self, params: EndpointParams | None = None) -> None:
        """Start a new turn (optionally with new settings); the detector keeps what it learned of the line."""
        if params is not None:
            self.params = params
        self.detector.configure(self.params)
        self.now_ms = 0
        self.state: Literal["waiting", "speaking", "done"] = "waiting"
        self._run_start_ms: int | None = None  # start of the run of speech frames (waiting, or after a pause)
        self._speech_start_ms = 0
        self._last_speech_end_ms = 0
        self._voiced_ms = 0
        self._barged_in = False

    @property
    def in_speech(self) -> bool:
        return self.state == "speaking"

    @property
    def trailing_silence_ms(self) -> int:
        """How long the utterance in progress has been silent (0 outside an utterance)."""
        return self.now_ms - self._last_speech_end_ms if self.state == "speaking" else 0

    def feed(self, frame: bytes, now_ms: int | None = None) -> list[EndpointEvent]:
        """Feed one frame of 8 kHz slin (normally 20 ms); returns the events it caused, in order.

        `now_ms` is the turn clock at the END of this frame; by default the clock advances by
        the frame's duration.
        """
        frame_ms = max(1, len(frame) * 1000 // (SAMPLE_RATE * SAMPLE_WIDTH)) if frame else FRAME_MS
        self.now_ms = now_ms if now_ms is not None else self.now_ms + frame_ms
        start_ms = self.now_ms - frame_ms
        if self.state == "done":
            return []
        p = self.params
        speech = self.detector.is_speech(frame, self.state == "speaking")
        events: list[EndpointEvent] = []
        if self.state == "waiting":
            if speech:
                if self._run_start_ms is None:
                    self._run_start_ms = start_ms
                if self.now_ms - self._run_start_ms >= p.speech_start_ms:
                    self.state = "speaking"
                    self._speech_start_ms = self._run_start_ms
                    self._voiced_ms = self.now_ms - self._run_start_ms
                    self._last_speech_end_ms = self.now_ms
                    self._run_start_ms = None
                    events.append(SpeechStarted(self._speech_start_ms))
            else:
                self._run_start_ms = None
                if p.no_input_ms and self.now_ms >= p.no_input_ms:
                    self.state = "done"
                    events.append(NoInputTimeout(self.now_ms))
                    return events
        elif not speech:
            self._run_start_ms = None
        elif start_ms <= self._last_speech_end_ms:  # the speech goes on: no silence before this frame
            self._voiced_ms += self.now_ms - start_ms
            self._last_speech_end_ms = self.now_ms
        else:  # speech after some trailing silence: it restarts the silence once it has lasted speech_resume_ms
            if self._run_start_ms is None:
                self._run_start_ms = start_ms
            if self.now_ms - self._run_start_ms >= p.speech_resume_ms:
                self._voiced_ms += self.now_ms - self._run_start_ms
                self._last_speech_end_ms = self.now_ms
                self._run_start_ms = None
        if self.state != "speaking":
            return events
        if not self._barged_in and self._voiced_ms >= p.barge_in_min_speech_ms:
            self._barged_in = True
            events.append(BargeIn(self.now_ms, self._voiced_ms))
        speech_ms = self._last_speech_end_ms - self._speech_start_ms
        if self.now_ms - self._last_speech_end_ms >= p.end_silence_ms:
            self.state = "done"
            events.append(SpeechEnded(self.now_ms, "silence", speech_ms))
        elif p.max_utterance_ms and self.now_ms - self._speech_start_ms >= p.max_utterance_ms:
            self.state = "done"
            events.append(SpeechEnded(self.now_ms, "max_length", speech_ms))
        return events
