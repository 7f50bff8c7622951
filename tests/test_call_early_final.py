"""Whisper's final starts while the endpointer waits out its silence (ivr/call.py, ASR_TRAILING_SILENCE_MS):
real tiny.en on real fixtures through the whole call pipeline, and the pool's handling of a discarded one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from test_asr_scheduler import Gate  # holds the pool's worker busy until released

from ivr.asr.scheduler import AsrScheduler, final_deadline
from ivr.audio.pcm import FRAME_BYTES, read_wav, silence
from ivr.config import Settings
from ivr.services import CallServices
from ivr.testing.replay import run_call
from ivr.testing.simline import CallerTurn

FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures"
QUIET_SHARE = 0.05  # frames under this share of the peak RMS are trimmed off an utterance's ends


def _speech_only(name: str) -> bytes:
    """A fixture cut to its speech: from its first to its last frame above QUIET_SHARE of its peak RMS."""
    pcm = read_wav(FIXTURES / "en" / name)
    n = len(pcm) // FRAME_BYTES
    samples = np.frombuffer(pcm[: n * FRAME_BYTES], dtype="<i2").astype(np.float64).reshape(n, -1)
    rms = np.sqrt(np.mean(samples**2, axis=1))
    loud = np.nonzero(rms > rms.max() * QUIET_SHARE)[0]
    return pcm[loud[0] * FRAME_BYTES : (loud[-1] + 1) * FRAME_BYTES]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallServices]:
    pytest.importorskip("faster_whisper")
    from ivr.asr.whisper import whisper_available

    if not whisper_available():
        pytest.skip("no Whisper weights installed")
    settings = Settings()
    settings.paths.data = tmp_path_factory.mktemp("early")
    settings.call_time = datetime(2026, 11, 23, 10, 0)  # the demo line is open
    s = CallServices.create(settings, with_records=False, engine_override={"en": "whisper"})
    yield s
    s.close()


def _first_turn(services: CallServices, pcm: bytes):
    stats = services.asr.stats
    before = (stats.early_finals, stats.early_discarded, stats.finals)
    result, _line = asyncio.run(run_call(services, "en", [CallerTurn(pcm=pcm)], caller_id="+15550100"))
    after = (stats.early_finals, stats.early_discarded, stats.finals)
    return result.turns[0], [a - b for a, b in zip(after, before, strict=True)]


def test_a_caller_who_stops_gets_the_early_final_and_nothing_is_decoded_twice(services: CallServices) -> None:
    turn, (early, discarded, finals) = _first_turn(services, read_wav(FIXTURES / "en" / "balance_1.wav"))
    assert turn.transcript.lower().startswith("how much money is left on my account")
    assert turn.intent == "balance"
    assert (early, discarded, finals) == (1, 0, 0)  # the decision took the early final


@pytest.mark.parametrize("pause_ms", [450, 600])
def test_speech_resumed_after_a_pause_is_in_the_transcript(services: CallServices, pause_ms: int) -> None:
    # a pause longer than the 300 ms that starts the early final, shorter than the endpointer's 800 ms
    pcm = _speech_only("balance_1.wav") + silence(pause_ms) + _speech_only("operator_1.wav") + silence(1500)
    turn, (early, discarded, finals) = _first_turn(services, pcm)
    text = turn.transcript.lower()
    assert "money is left on my account" in text and "real person" in text, text
    assert early == 2 and discarded == 1  # the first early final was dropped when the caller spoke again
    assert finals == 0  # the second one, after the resumed words, was the turn's final


class _Turn:
    """What the pool decodes an early final of (a WhisperRecognizer's EarlyTurn, without the model)."""

    def __init__(self, decoded: list[str], name: str) -> None:
        self.decoded, self.name = decoded, name

    def final(self) -> str:
        self.decoded.append(self.name)
        return self.name


def test_an_early_final_discarded_before_it_starts_is_never_decoded_and_the_next_one_is() -> None:
    async def scenario() -> tuple[list[str], str, int, int]:
        pool = AsrScheduler(workers=1)
        gate, decoded = Gate(), []
        busy = asyncio.ensure_future(pool.run(gate.hold))
        await asyncio.to_thread(gate.entered.wait, 5)
        due = final_deadline(time.monotonic())
        dropped = pool.early_final(_Turn(decoded, "before the pause"), None, due)
        kept = pool.early_final(_Turn(decoded, "whole turn"), None, due + 0.5)
        pool.discard_early(dropped)  # the caller spoke again while it was still queued
        gate.release.set()
        (result, _decode_s), _ = await asyncio.gather(kept, busy)
        stats = pool.stats
        pool.close()
        return decoded, result, stats.early_finals, stats.early_discarded

    decoded, result, early, discarded = asyncio.run(scenario())
    assert decoded == ["whole turn"] and result == "whole turn"
    assert (early, discarded) == (2, 1)
