"""The sound-device layer for real: PortAudio -> ALSA -> a private PulseAudio server with null sinks.

The test starts its own PulseAudio (no sound card needed) whose default sink is a null sink and whose
default source is that sink's monitor: what `SoundDevice.play` sends to the "speaker" comes back on
the "microphone". Each check runs in a child process, because PortAudio lists devices once, when
sounddevice is imported, and the child must see this server's environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.config import PROJECT_ROOT
from ivr.nlu.classifier import CACHE_ENV, cache_dir

ALSA_PULSE_PLUGIN = "libasound_module_pcm_pulse.so"
START_TIMEOUT_S = 10.0


def _pulse_unavailable() -> str | None:
    if shutil.which("pulseaudio") is None:
        return "pulseaudio is not installed (apt-get install pulseaudio)"
    plugin_dirs = [Path("/usr/lib/alsa-lib"), Path("/usr/lib64/alsa-lib"), *Path("/usr/lib").glob("*/alsa-lib")]
    if not any((d / ALSA_PULSE_PLUGIN).exists() for d in plugin_dirs):
        return "the ALSA pulse plugin is missing (apt-get install libasound2-plugins)"
    return None


@pytest.fixture(scope="module")
def pulse_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables that point a child process at a private PulseAudio with null sinks."""
    reason = _pulse_unavailable()
    if reason:
        pytest.skip(reason)
    runtime = tmp_path_factory.mktemp("pulse")
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(runtime),  # the cookie and state go here, not into the user's ~/.config/pulse
        "PULSE_SERVER": f"unix:{runtime}/pulse/native",
        # HOME moved for PulseAudio only: keep the trained intent classifiers the rest of the suite shares
        # (a cold cache would retrain every language inside `ivr talk`'s first greeting)
        CACHE_ENV: str(cache_dir()),
    }
    env.pop("PULSE_SINK", None)
    env.pop("PULSE_SOURCE", None)
    server = subprocess.Popen(
        [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "--log-target=stderr",
            "-L", "module-native-protocol-unix",
            "-L", "module-null-sink sink_name=line rate=8000",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (runtime / "pulse" / "native").exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.skip(f"PulseAudio did not start: {server.stderr.read().decode()[-500:] if server.stderr else ''}")
        time.sleep(0.05)
    subprocess.run(["pactl", "set-default-sink", "line"], env=env, check=False, capture_output=True)
    try:
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()


# The child: play a fixture through SoundDevice while recording, then report the alignment and match.
LOOPBACK_CHILD = """
import asyncio, json, sys, time
import numpy as np
from ivr.audio.device import DeviceParams, SoundDevice
from ivr.audio.pcm import FRAME_BYTES, read_wav

rate = int(sys.argv[1]) or None
stop_after_s = float(sys.argv[2])
source = read_wav(sys.argv[3])

async def main():
    async with SoundDevice(DeviceParams(sample_rate=rate)) as dev:
        got, started = [], asyncio.Event()
        async def record():
            async for frame in dev.frames():
                got.append(frame)
                started.set()
        task = asyncio.create_task(record())
        await asyncio.wait_for(started.wait(), 10)  # PulseAudio sources start up to ~2 s late
        await asyncio.sleep(0.2)
        first = len(got)
        t0 = time.monotonic()
        play = asyncio.create_task(dev.play(source))
        if stop_after_s:
            await asyncio.sleep(stop_after_s)
            dev.stop_playback()
        completed = await play
        play_s = time.monotonic() - t0
        await asyncio.sleep(0.8)
        dev.close()
        await task
        info = dict(input_rate=dev.input_rate, output_rate=dev.output_rate, input_name=dev.input_name)
    heard = b"".join(got[first:])
    a = np.frombuffer(source, "<i2").astype(float)
    b = np.frombuffer(heard, "<i2").astype(float)
    corr = np.correlate(b, a, "full")
    lag = int(np.argmax(corr)) - (len(a) - 1)
    lag = max(lag, 0)
    seg = b[lag : lag + len(a)]
    n = len(seg)
    match = float(np.dot(seg, a[:n]) / np.sqrt(np.dot(seg, seg) * np.dot(a[:n], a[:n]) + 1e-9))
    cut = int(stop_after_s * 8000) if stop_after_s else len(a)
    after = b[lag + cut + 2400 :] if stop_after_s else b[lag + len(a) :]  # 300 ms after the stop / the end
    print(json.dumps(dict(
        info, completed=completed, play_s=play_s, source_s=len(a) / 8000, lag_ms=lag / 8, match=match,
        frame_sizes=sorted({len(f) for f in got}), frames=len(got),
        heard_rms=float(np.sqrt(np.mean(seg ** 2))), source_rms=float(np.sqrt(np.mean(a ** 2))),
        after_rms=float(np.sqrt(np.mean(after ** 2))) if len(after) else 0.0,
        dropped=dev.dropped_frames,
    )))

asyncio.run(main())
"""

SPEECH = PROJECT_ROOT / "audio_fixtures" / "en" / "balance_1.wav"
LONG_SPEECH = PROJECT_ROOT / "audio_fixtures" / "en" / "long_balance_1.wav"


def loopback(env: dict[str, str], rate: int, wav: Path, stop_after_s: float = 0.0) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", LOOPBACK_CHILD, str(rate), str(stop_after_s), str(wav)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_speaker_to_microphone_round_trip_at_8khz(pulse_env: dict[str, str]) -> None:
    result = loopback(pulse_env, 0, SPEECH)
    assert (result["input_rate"], result["output_rate"]) == (8000, 8000)  # PulseAudio takes 8 kHz as is
    assert result["frame_sizes"] == [320] and result["dropped"] == 0
    assert result["completed"] is True
    assert result["play_s"] >= result["source_s"] - 0.1  # play() waits until the audio went out
    # the same samples come back (PulseAudio at 8 kHz, 100 % volume: bit-exact or nearly)
    assert result["match"] > 0.99
    assert result["heard_rms"] == pytest.approx(result["source_rms"], rel=0.05)


@pytest.mark.slow
def test_round_trip_through_a_48khz_device(pulse_env: dict[str, str]) -> None:
    """Device at 48 kHz: playback upsampled and the microphone downsampled by the device layer."""
    result = loopback(pulse_env, 48000, SPEECH)
    assert (result["input_rate"], result["output_rate"]) == (48000, 48000)
    assert result["frame_sizes"] == [320]
    assert result["completed"] is True
    assert result["match"] > 0.95


@pytest.mark.slow
def test_stop_playback_cuts_the_prompt(pulse_env: dict[str, str]) -> None:
    """Barge-in: stop_playback() ends play() early with False, and the speaker goes quiet."""
    result = loopback(pulse_env, 0, LONG_SPEECH, stop_after_s=1.5)
    assert result["completed"] is False
    assert result["play_s"] < result["source_s"] - 1.0
    assert result["after_rms"] < 0.01 * result["source_rms"]  # silence after the cut (+300 ms margin)


def test_list_devices_shows_pulseaudio(pulse_env: dict[str, str]) -> None:
    code = "from ivr.audio.device import list_devices; print(list_devices())"
    proc = subprocess.run([sys.executable, "-c", code], env=pulse_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "pulse" in proc.stdout


# ---- `ivr talk` end to end: a virtual caller speaks into the "mic" sink, the assistant answers on "spk" ----
TALK_CHILD = """
import sys
from ivr.cli import main
sys.exit(main(sys.argv[1:]))
"""
SPEAKING_RMS = 200.0  # a 20 ms block of the assistant's voice on the speaker monitor
QUIET_S = 1.0  # the assistant has finished a prompt after this much silence


class SpeakerMonitor:
    """Reads what `ivr talk` plays (the monitor of its output sink) and tells when a prompt is over."""

    def __init__(self, env: dict[str, str], sink: str) -> None:
        self.proc = subprocess.Popen(
            ["parec", f"--device={sink}.monitor", "--rate=8000", "--channels=1", "--format=s16le", "--raw"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )

    def wait_prompt_done(self, timeout_s: float, talk: subprocess.Popen) -> None:
        """Wait until the assistant speaks, then falls quiet for QUIET_S (fail early if `talk` exits)."""
        import numpy as np

        assert self.proc.stdout is not None
        spoke, quiet = False, 0.0
        for _ in range(int(timeout_s / 0.02)):
            if talk.poll() is not None:
                raise AssertionError(f"ivr talk exited early ({talk.returncode}): {talk.communicate()}")
            block = np.frombuffer(self.proc.stdout.read(320), dtype="<i2").astype(float)
            loud = bool(block.size) and float(np.sqrt(np.mean(block**2))) > SPEAKING_RMS
            spoke = spoke or loud
            quiet = 0.0 if loud else quiet + 0.02
            if spoke and quiet >= QUIET_S:
                return
        raise AssertionError("the assistant did not finish a prompt in time")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.mark.slow
def test_ivr_talk_conversation_through_virtual_mic_and_speaker(pulse_env: dict[str, str]) -> None:
    """The whole `ivr talk`: greeting, balance question, answer, goodbye, survey answered with "five"."""
    env = dict(pulse_env)
    for sink in ("spk", "mic"):
        subprocess.run(["pactl", "load-module", "module-null-sink", f"sink_name={sink}", "rate=8000"],
                       env=env, check=True, capture_output=True)
    env.update(PULSE_SINK="spk", PULSE_SOURCE="mic.monitor", IVR_DATA_DIR=env["HOME"])
    speaker = SpeakerMonitor(env, "spk")
    talk = subprocess.Popen([sys.executable, "-c", TALK_CHILD, "talk", "--lang", "en"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        speaker.wait_prompt_done(60, talk)  # the greeting (first call also loads the speech models)
        for turn in ("balance_1.wav", "goodbye_1.wav", "real_five_1.wav"):
            subprocess.run(["paplay", "--device=mic", str(PROJECT_ROOT / "audio_fixtures" / "en" / turn)],
                           env=env, check=True, timeout=30)
            if not turn.startswith("real_five"):
                speaker.wait_prompt_done(60, talk)  # the balance answer; the survey question
        out, err = talk.communicate(timeout=60)
    finally:
        talk.kill()
        speaker.close()
    assert talk.returncode == 0, err[-3000:]
    assert "-> balance" in out and "-> goodbye" in out, out
    assert "Your balance is 12 dollars and 50 cents" in out, out  # the demo subscriber's seeded balance
    assert "survey score 5" in out, out
    assert "call ended: completed" in out, out
