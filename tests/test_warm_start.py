"""Warm start: `ivr serve` loads the ASR model and the prompts before its listeners take calls,
and /healthz says 503 "starting" until then (the real run_server, Whisper, espeak-ng prompts)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ivr.config import Settings
from ivr.server import run_server
from ivr.services import CallServices
from ivr.telephony.bridge import Bridge
from ivr.testing.sandbox import _free_port


def _health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())["status"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["status"]
    except OSError:
        return 0, "down"  # not listening yet


@pytest.mark.slow
def test_healthz_is_starting_until_every_model_and_prompt_is_loaded(tmp_path: Path) -> None:
    settings = Settings()
    settings.server.agi_port = settings.server.audiosocket_port = 0
    settings.server.health_port = port = _free_port()
    settings.server.warm_langs = ["en"]
    settings.paths.data = tmp_path
    settings.storage.url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    services = CallServices.create(settings, with_metrics=True, engine_override={"en": "whisper"})
    loaded_when_listening: list[bool] = []

    def listening(bridge: Bridge) -> None:  # the moment the bridge accepts calls
        welcome = services.registry.get("support", "en").prompts["welcome"]
        loaded_when_listening.append("en" in services._engines and services.prompts._memory_hit(welcome, "en")
                                     is not None)

    async def main() -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        server = asyncio.create_task(run_server(settings, services=services, started=listening))
        while not loaded_when_listening and not server.done():
            seen.append(await asyncio.to_thread(_health, port))
            await asyncio.sleep(0.05)
        seen.append(await asyncio.to_thread(_health, port))
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        return seen

    seen = asyncio.run(main())
    assert (503, "starting") in seen, seen
    assert seen[-1] == (200, "ok")
    assert loaded_when_listening == [True]  # Whisper and the greeting were in memory before the first call
