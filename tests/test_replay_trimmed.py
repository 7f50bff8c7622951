"""`ivr replay` of recordings cut the way testers cut them: ending right where the speech ends, and
starting right where it starts. The end of the recording ends the utterance; the real pipeline
(Whisper, NLU, the support flow) must understand it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.audio.pcm import FRAME_BYTES, frames, read_wav, rms, write_wav
from ivr.config import Settings
from ivr.services import CallServices
from ivr.testing.replay import run_call
from ivr.testing.simline import CallerTurn

FIXTURE = Path(__file__).resolve().parent.parent / "audio_fixtures" / "en" / "balance_1.wav"


def _trimmed(start: bool) -> bytes:
    """The fixture cut right after its last loud frame (and right before its first, if `start`)."""
    pcm = read_wav(FIXTURE)
    loud = [i for i, frame in enumerate(frames(pcm)) if rms(frame) > 200]
    first, last = (loud[0] if start else 0), loud[-1] + 1
    return pcm[first * FRAME_BYTES: last * FRAME_BYTES]


@pytest.mark.parametrize("cut_start", [False, True], ids=["cut-at-the-end", "cut-at-both-ends"])
def test_a_clip_trimmed_at_the_speech_is_understood(cut_start: bool, tmp_path: Path) -> None:
    settings = Settings()
    settings.paths.data = tmp_path
    services = CallServices.create(settings, with_records=False, engine_override={"en": "whisper"})
    try:
        call, line = asyncio.run(run_call(services, "en", [CallerTurn(pcm=_trimmed(cut_start))]))
    finally:
        services.close()
    first = call.turns[0]
    assert not first.no_input and first.intent == "balance", first
    assert "balance" in first.reply.lower()  # and the caller got its answer before hanging up


def test_ivr_replay_of_a_trimmed_wav_says_what_it_heard(tmp_path: Path) -> None:
    clip = tmp_path / "trimmed.wav"
    write_wav(clip, _trimmed(True))
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "replay", str(clip), "--lang", "en", "--json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "IVR_DATA_DIR": str(tmp_path)})
    assert "no speech detected" not in done.stdout + done.stderr
    assert '"intent": "balance"' in done.stdout, done.stdout + done.stderr
