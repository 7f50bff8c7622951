"""The simulated caller: speaks on cue, full duplex while the assistant plays, hangs up when done."""

import asyncio

from ivr.audio.pcm import FRAME_BYTES
from ivr.frames import AudioIn, DtmfIn, HangupIn
from ivr.testing.simline import CallerTurn, SimulatedLine

SPEECH = b"\x10\x27" * 160  # one loud frame (sample value 10000)


def _is_speech(item):
    return isinstance(item, AudioIn) and item.pcm == SPEECH


async def _collect(line, limit=2000):
    got = []
    async for item in line.events():
        got.append(item)
        if len(got) >= limit or isinstance(item, HangupIn):
            break
    return got


def test_caller_waits_for_the_cue_then_a_human_gap_then_speaks_and_hangs_up():
    line = SimulatedLine([CallerTurn(pcm=SPEECH * 10)], gap_ms=100)
    line.attach(lambda: True)  # the assistant is listening
    got = asyncio.run(asyncio.wait_for(_collect(line), 10))
    first_speech = next(i for i, item in enumerate(got) if _is_speech(item))
    # 100 ms (5 frames) of human gap after the cue, then the utterance
    assert first_speech == 5 - 1
    assert sum(_is_speech(item) for item in got) == 10
    assert isinstance(got[-1], HangupIn)
    assert all(len(item.pcm) == FRAME_BYTES for item in got if isinstance(item, AudioIn))


def test_barge_in_turn_speaks_part_way_into_a_prompt_and_playback_reports_the_cut():
    async def scenario():
        line = SimulatedLine([CallerTurn(pcm=SPEECH * 50, barge_in_after_ms=200)])
        line.attach(lambda: False)
        inbound = []

        async def read():
            async for item in line.events():
                inbound.append(item)
                if sum(_is_speech(i) for i in inbound) == 5:
                    line.stop_playback()

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.01)
        completed = await line.play(b"\x00" * FRAME_BYTES * 100)  # a 2 s prompt
        line.close()
        reader.cancel()
        return completed, line, inbound

    completed, line, inbound = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert completed is False
    assert line.barged == 1
    # the caller started 200 ms (on the 10th frame) into the prompt ...
    first_speech = next(i for i, item in enumerate(inbound) if _is_speech(item))
    assert first_speech == 9
    # ... and the prompt stopped within one frame of the 5th speech frame, when the reader cut it
    assert first_speech + 5 <= len(line.heard) // FRAME_BYTES <= first_speech + 5 + 1


def test_keys_are_sent_as_dtmf_events():
    line = SimulatedLine([CallerTurn(dtmf="12")], gap_ms=20)
    line.attach(lambda: True)
    got = asyncio.run(asyncio.wait_for(_collect(line), 10))
    assert [item.digit for item in got if isinstance(item, DtmfIn)] == ["1", "2"]
