"""bench/traffic.py --asterisk: the SIP caller's planned timeline and how its turns are read off the
wire (bench/sip_traffic.py). Pure: no SIPp, no Asterisk."""

from __future__ import annotations

import numpy as np
import pytest

from bench.sip_traffic import PlannedTurn, heard_turns, plan_call
from ivr.audio import g711
from ivr.audio.pcm import FRAME_BYTES, silence
from ivr.telephony.rtp import PT_PCMU, RtpPacket
from ivr.testing.sipcaller import HeardCall, Pause, Speak, caller_packets


def _speech(ms: int, trailing_ms: int = 0) -> bytes:
    t = np.arange(8 * ms) / 8000
    return (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes() + silence(trailing_ms)


def test_turns_start_after_each_prompt_plus_the_pause_or_into_it_on_a_barge_in() -> None:
    speech = _speech(800, trailing_ms=200)  # 1 s: speech ends 0.8 s in
    turns = [PlannedTurn(speech, 0.8, barge_in=False, pause_s=0.5), PlannedTurn(speech, 0.8, barge_in=True)]
    plan = plan_call(turns, [3.0, 2.0, 4.0], lead_s=0.5, reply_wait_s=1.0, barge_in_after_s=1.0, listen_last_s=2.0)

    # greeting 0.5-3.5 s, pause 0.5 s: speaks 4.0-5.0 s, speech ends at 4.8 s; the reply is planned at
    # 5.8 s and the caller barges in 1 s into it (6.8 s), speech ending at 7.6 s; the last reply is
    # planned at 8.6 s and heard for 2 s: the call lasts 10.6 s
    assert plan.script == [Pause(4000), Speak(speech), Pause(1800), Speak(speech), Pause(2800)]
    assert plan.speech_end_packet == [240, 380]
    assert plan.speech_end_s == pytest.approx([4.8, 7.6])
    assert plan.length_s == pytest.approx(10.6)

    # in the RTP the caller sends, the packet at each end index is the first one after the speech
    packets = [RtpPacket.parse(p) for p in caller_packets(plan.script, "ulaw")]
    assert len(packets) == 530
    loud = [int(np.abs(np.frombuffer(g711.decode(p.payload, "ulaw"), "<i2")).max()) > 100 for p in packets]
    for end in plan.speech_end_packet:
        assert loud[end - 1] and not any(loud[end:end + 10])


def test_a_turn_never_starts_before_the_previous_one_has_been_said() -> None:
    speech = _speech(500, trailing_ms=500)  # speech ends halfway: the reply is planned before the audio ends
    plan = plan_call([PlannedTurn(speech, 0.5), PlannedTurn(speech, 0.5, pause_s=0.0)], [0.0, 0.0, 0.0],
                     lead_s=0.0, reply_wait_s=0.0)
    assert plan.script[:3] == [Pause(500), Speak(speech), Speak(speech)]
    assert plan.speech_end_packet == [50, 100]


def test_prompt_lengths_must_cover_the_greeting_and_every_reply() -> None:
    with pytest.raises(ValueError, match="2 turns need 3 prompt lengths, got 2"):
        plan_call([PlannedTurn(b"", 0.0)] * 2, [1.0, 1.0])


def _packet(seq: int, loud: bool) -> RtpPacket:
    pcm = _speech(20) if loud else silence(20)
    return RtpPacket(PT_PCMU, seq, seq * 160, 1, g711.encode(pcm[:FRAME_BYTES], "ulaw"))


def test_heard_turns_times_the_first_loud_packet_after_each_end_of_speech() -> None:
    call = HeardCall("c1", media_port=6000)
    call.sent = [(100.0 + i * 0.02, _packet(i + 1, False)) for i in range(300)]  # the caller's stream
    # what Asterisk sent: a steady 20 ms stream, loud 0-1 s (greeting), 2.7-3.2 s (reply 1) and
    # 4.0-4.5 s (still talking when the caller's second turn ends at 4.2 s)
    for i in range(300):
        if i in (140, 141):  # two packets of the reply lost: the next comes 60 ms after the previous
            continue
        call.rtp.append(_packet(i, 0 <= i < 50 or 135 <= i < 160 or 200 <= i < 225))
        call.rtp_at.append(100.0 + i * 0.02 + 0.005)
    turns = heard_turns(call, [100, 210])  # ends of speech at 2.0 s and 4.2 s

    assert turns.latency_ms[0] == pytest.approx(705.0)  # 2.0 s -> 2.705 s
    assert turns.latency_ms[1] is None and turns.overlapped == 1
    assert turns.playback_frames == 297 and turns.late_frames == 1
    assert turns.greeting_after_s == pytest.approx(0.005)


def test_heard_turns_without_a_reply() -> None:
    call = HeardCall("c2", media_port=6002)
    call.sent = [(10.0 + i * 0.02, _packet(i + 1, False)) for i in range(100)]
    turns = heard_turns(call, [50])
    assert turns.latency_ms == [None] and turns.overlapped == 0
