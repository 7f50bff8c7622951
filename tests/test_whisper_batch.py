"""The encoder window of the call path's Whisper finals (ivr/asr/whisper_batch.py): pure arithmetic."""

from __future__ import annotations

from ivr.asr.whisper_batch import FULL_WINDOW_FRAMES, TAIL_PAD_FRAMES, encoder_frames


def test_a_turn_of_usual_length_gets_the_shorter_window() -> None:
    assert encoder_frames(308, 20.0, 2.0) == 2000  # a 3 s turn: the 20 s window
    assert encoder_frames(200, 20.0, 2.0) == 2000


def test_a_short_turn_gets_whispers_own_window() -> None:
    assert encoder_frames(199, 20.0, 2.0) == FULL_WINDOW_FRAMES
    assert encoder_frames(90, 20.0, 0.0) == 2000  # the rule off (the Korean second opinion)


def test_a_long_turn_stretches_the_window_to_whispers_own_at_most() -> None:
    assert encoder_frames(2401, 20.0, 2.0) == 2401 + TAIL_PAD_FRAMES + 1  # even: the encoder halves it
    assert encoder_frames(2950, 20.0, 2.0) == FULL_WINDOW_FRAMES
