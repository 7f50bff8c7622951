"""Endpointing on audio with known speech and exact silence (virtual clock: frames fed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ivr.audio.pcm import FRAME_MS, frames, read_wav, silence
from ivr.audio.vad import (
    DEFAULT_END_SILENCE_MS,
    BargeIn,
    Endpointer,
    EndpointParams,
    EnergyDetector,
    NoInputTimeout,
    SpeechEnded,
    SpeechStarted,
)
from ivr.errors import ConfigError

DATA = Path(__file__).parent / "data" / "asr"
LEAD_MS = 1000


def speech() -> bytes:
    """espeak-ng English speech with its own padding trimmed to exact sample boundaries."""
    pcm = np.frombuffer(read_wav(DATA / "en_check_balance.wav", target_rate=None), dtype="<i2")
    voiced = np.flatnonzero(np.abs(pcm) > 200)
    return pcm[voiced[0] : voiced[-1] + 1].tobytes()


def speech_bounds_ms(pcm: bytes) -> tuple[float, float]:
    samples = np.frombuffer(pcm, dtype="<i2")
    voiced = np.flatnonzero(np.abs(samples) > 200)
    return voiced[0] / 8, (voiced[-1] + 1) / 8


def run(ep: Endpointer, pcm: bytes) -> list[tuple[int, object]]:
    out = []
    for i, frame in enumerate(frames(pcm)):
        out += [((i + 1) * FRAME_MS, event) for event in ep.feed(frame)]
    return out


@pytest.mark.parametrize("end_silence_ms", [500, DEFAULT_END_SILENCE_MS, 1200])
def test_speech_end_fires_within_its_silence_setting(end_silence_ms: int) -> None:
    utterance = speech()
    pcm = silence(LEAD_MS) + utterance + silence(3000)
    _, speech_end = speech_bounds_ms(pcm)
    events = run(Endpointer(EndpointParams(end_silence_ms=end_silence_ms)), pcm)
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, BargeIn, SpeechEnded]
    started = events[0][1]
    assert isinstance(started, SpeechStarted)
    assert abs(started.at_ms - LEAD_MS) <= 2 * FRAME_MS
    clock_ms, ended = events[-1]
    assert isinstance(ended, SpeechEnded) and ended.reason == "silence" and ended.at_ms == clock_ms
    # fires end_silence_ms after the speech ends, give or take the soft energy tail of the last word
    waited = ended.at_ms - speech_end
    assert end_silence_ms - 3 * FRAME_MS <= waited <= end_silence_ms + 3 * FRAME_MS
    assert abs(ended.speech_ms - len(utterance) / 16) <= 3 * FRAME_MS


def test_no_speech_gives_no_input_timeout_at_its_setting() -> None:
    events = run(Endpointer(EndpointParams(no_input_ms=2000)), silence(5000))
    assert [e for _, e in events] == [NoInputTimeout(2000)]


def test_no_input_disabled_with_zero() -> None:
    assert run(Endpointer(EndpointParams(no_input_ms=0)), silence(8000)) == []


def test_max_utterance_cuts_long_speech() -> None:
    utterance = speech()
    events = run(Endpointer(EndpointParams(max_utterance_ms=1000)), silence(500) + utterance + silence(1000))
    ended = events[-1][1]
    assert isinstance(ended, SpeechEnded) and ended.reason == "max_length"
    assert ended.at_ms - events[0][1].at_ms == 1000  # type: ignore[union-attr]


def test_short_blip_is_not_barge_in() -> None:
    """A 60 ms click during a prompt neither starts speech nor barges in."""
    blip = (np.sin(np.arange(480) / 3) * 8000).astype("<i2").tobytes()
    assert run(Endpointer(EndpointParams(no_input_ms=0)), silence(500) + blip + silence(1500)) == []


def tone(ms: int) -> bytes:
    return (np.sin(np.arange(ms * 8) / 3) * 8000).astype("<i2").tobytes()


@pytest.mark.parametrize(("burst_ms", "restarts"), [(20, False), (40, True), (200, True)])
def test_trailing_silence_restarts_only_on_speech_that_lasts(burst_ms: int, restarts: bool) -> None:
    """Inside an utterance, a burst shorter than speech_resume_ms after a pause (a noise frame that passes the
    detector while the word's tail fades) does not restart the end-of-speech silence; a resumed word does."""
    params = EndpointParams(no_input_ms=0)
    assert params.speech_resume_ms == 40
    pcm = silence(500) + tone(400) + silence(300) + tone(burst_ms) + silence(2000)
    events = run(Endpointer(params), pcm)
    assert [type(e) for _, e in events] == [SpeechStarted, BargeIn, SpeechEnded]
    ended = events[-1][1]
    assert isinstance(ended, SpeechEnded)
    last_speech_ms = 500 + 400 + (300 + burst_ms if restarts else 0)
    assert ended.at_ms == last_speech_ms + params.end_silence_ms
    assert ended.speech_ms == last_speech_ms - 500


def test_speech_resume_is_a_setting() -> None:
    """A flow state may ask for longer resumed speech (e.g. on a line known to crackle)."""
    params = EndpointParams(no_input_ms=0).with_overrides({"speech_resume_ms": 100})
    pcm = silence(500) + tone(400) + silence(300) + tone(80) + silence(2000)
    ended = run(Endpointer(params), pcm)[-1][1]
    assert isinstance(ended, SpeechEnded) and ended.at_ms == 900 + params.end_silence_ms


def test_barge_in_after_min_speech() -> None:
    pcm = silence(500) + speech()
    events = run(Endpointer(EndpointParams(barge_in_min_speech_ms=600)), pcm)
    barge = next(e for _, e in events if isinstance(e, BargeIn))
    assert barge.speech_ms >= 600


def test_stationary_noise_is_not_speech_but_speech_over_it_is() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 400, 8000 * 6).astype("<i2")  # RMS 400: above the absolute floor
    utterance = np.frombuffer(speech(), dtype="<i2")
    mixed = noise.copy()
    start = 2 * 8000
    mixed[start : start + len(utterance)] = np.clip(
        noise[start : start + len(utterance)].astype(np.int32) + utterance, -32768, 32767
    )
    energy = EnergyDetector()
    ep = Endpointer(EndpointParams(no_input_ms=0), energy)
    events = run(ep, noise[:16000].tobytes())
    assert events == [] and 250 < energy.noise_rms < 450
    ep.reset(EndpointParams(no_input_ms=0))
    events = run(ep, mixed.tobytes())
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, BargeIn, SpeechEnded]
    assert 2000 <= events[0][1].at_ms <= 2000 + 200  # type: ignore[union-attr]  # soft onset under noise


def test_reset_starts_a_new_turn_with_new_params() -> None:
    ep = Endpointer(EndpointParams(no_input_ms=1000))
    assert [e for _, e in run(ep, silence(1500))] == [NoInputTimeout(1000)]
    assert ep.feed(silence(20)) == []  # done until reset
    ep.reset(ep.params.with_overrides({"no_input_ms": 400}))
    assert [e for _, e in run(ep, silence(1000))] == [NoInputTimeout(400)]


def test_explicit_clock() -> None:
    ep = Endpointer(EndpointParams(no_input_ms=1000))
    assert ep.feed(silence(20), now_ms=980) == []
    assert ep.feed(silence(20), now_ms=1000) == [NoInputTimeout(1000)]


def test_with_overrides_validates() -> None:
    params = EndpointParams().with_overrides({"end_silence_ms": "500", "min_speech_rms": 200})
    assert params.end_silence_ms == 500 and params.min_speech_rms == 200.0
    assert EndpointParams().with_overrides(None) == EndpointParams()
    with pytest.raises(ConfigError, match="unknown endpointing setting.*end_silence"):
        EndpointParams().with_overrides({"end_silence": 500})
    with pytest.raises(ConfigError, match="not a number"):
        EndpointParams().with_overrides({"no_input_ms": "soon"})
    with pytest.raises(ConfigError, match=">= 0"):
        EndpointParams(max_utterance_ms=-1)
    with pytest.raises(ConfigError, match="hysteresis"):
        EndpointParams(start_ratio=1.5, continue_ratio=2.0)


ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


@pytest.mark.skipif(not ALLISON.is_dir(), reason="needs asterisk-core-sounds-en-wav (./install.sh)")
@pytest.mark.parametrize("name", ["auth-incorrect", "pbx-invalidpark", "vm-nomore"])
def test_recorded_prompt_is_one_utterance(name: str) -> None:
    """Real telephone speech with pauses between sentences ends once, after its last word."""
    pcm = read_wav(ALLISON / f"{name}.wav", target_rate=None)
    padded = silence(LEAD_MS) + pcm + silence(2000)
    _, speech_end = speech_bounds_ms(padded)
    events = run(Endpointer(), padded)
    assert [type(e) for _, e in events] == [SpeechStarted, BargeIn, SpeechEnded]
    ended = events[-1][1]
    assert isinstance(ended, SpeechEnded) and ended.reason == "silence"
    assert speech_end < ended.at_ms <= speech_end + DEFAULT_END_SILENCE_MS + 3 * FRAME_MS
