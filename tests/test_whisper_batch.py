"""The encoder window of the call path's Whisper finals (ivr/asr/whisper_batch.py): pure arithmetic."""

from __future__ import annotations

from ivr.asr.whisper_batch import FULL_WINDOW_FRAMES, TAIL_PAD_FRAMES, encoder_frames


def test_turns_of_usual_length_get_the_shorter_window() -> None:
    assert encoder_frames([308], 20.0, 1.5) == 2000  # a 3 s turn: the 20 s window
    assert encoder_frames([150, 900], 20.0, 1.5) == 2000


def test_a_short_turn_gets_whispers_own_window() -> None:
    assert encoder_frames([90], 20.0, 1.5) == FULL_WINDOW_FRAMES  # 0.9 s
    assert encoder_frames([308, 90], 20.0, 1.5) == FULL_WINDOW_FRAMES  # one short turn in a batch decides
    assert encoder_frames([90], 20.0, 0.0) == 2000  # the rule off (the Korean second opinion)


def test_a_long_turn_stretches_the_window_to_whispers_own_at_most() -> None:
    assert encoder_frames([2401], 20.0, 1.5) == 2401 + TAIL_PAD_FRAMES + 1  # even: the encoder halves it
    assert encoder_frames([2950], 20.0, 1.5) == FULL_WINDOW_FRAMES
