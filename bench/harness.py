"""The real server (`ivr.server.run_server`) in-process on free loopback ports, instrumented.

`InProcessServer` is what `ivr serve` runs, with three read-only taps for the benchmark and the
soak test: every TurnLog the calls record (by channel), each call's AudioSocketStats, and the
bridge itself (`calls_active`, `outcomes`). Nothing in the call path is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ivr.config import ENV_OVERRIDES, Settings, load_settings
from ivr.services import CallServices
from ivr.telephony.audiosocket import AudioSocketStats
from ivr.telephony.bridge import Bridge, HandOff, TelephonyCall

START_TIMEOUT_S = 120.0  # the server loads its ASR models before listening: slow on a loaded machine


BENCH_CALL_TIME = datetime(2026, 11, 25, 10, 0).astimezone()  # a Wednesday, inside the demo's business hours


def bench_settings(data_dir: Path, *, storage_url: str = "", max_calls: int = 100,
                   max_call_s: int = 1800, first_message_timeout_s: float = 5.0) -> Settings:
    """Default settings with free ports (0), records in `data_dir` (SQLite unless `storage_url`)."""
    settings = Settings()
    settings.server.agi_port = 0
    settings.server.audiosocket_port = 0
    settings.server.health_port = 0
    settings.server.max_calls = max_calls
    settings.server.max_call_s = max_call_s
    settings.server.first_message_timeout_s = first_message_timeout_s
    settings.paths.data = data_dir
    settings.storage.url = storage_url or f"sqlite:///{data_dir / 'calls.sqlite3'}"
    # What a run may vary through the environment, read as `ivr serve` reads it: the ASR layout
    # (IVR_WHISPER_REPLICAS, IVR_ASR_SECOND_OPINION, ...) and IVR_CALL_TIME.
    env = {var: value for var, value in os.environ.items()
           if ENV_OVERRIDES.get(var, "").startswith("asr.") or ENV_OVERRIDES.get(var) == "call_time"}
    if env:
        loaded = load_settings(env=env)
        settings.asr, settings.call_time = loaded.asr, loaded.call_time
    # The demo flow's business hours change what callers hear (after 20:00 the greeting adds an after-hours
    # notice: a 50-caller burst then played 40 % more reply audio), so unless IVR_CALL_TIME says otherwise every
    # call is placed on a weekday morning and runs at any hour compare.
    settings.call_time = settings.call_time or BENCH_CALL_TIME
    return settings


@dataclass
class ServerTaps:
    """What the instrumented server saw."""

    turns: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))  # channel -> TurnLog
    audio: dict[str, AudioSocketStats] = field(default_factory=dict)  # channel -> stats at call end
    opened: dict[str, str] = field(default_factory=dict)  # call id -> channel (record_open)
    closed: dict[str, str] = field(default_factory=dict)  # call id -> route (record_close)
    caller_names: dict[str, str] = field(default_factory=dict)  # channel -> CALLERID(name) (agi_calleridname)
    handled: int = 0


class InProcessServer:
    """`async with InProcessServer(settings, services) as server:` -> server.agi_port, server.taps."""

    def __init__(self, settings: Settings, services: CallServices) -> None:
        self.settings = settings
        self.services = services
        self.taps = ServerTaps()
        self.bridge: Bridge | None = None
        self._task: asyncio.Task[None] | None = None
        self._tap_turns()

    def _tap_turns(self) -> None:
        original = self.services.record_turn

        def record_turn(session: Any, turn: Any) -> None:
            self.taps.turns[session.channel].append(turn)
            original(session, turn)

        self.services.record_turn = record_turn  # type: ignore[method-assign]
        open_call, close_call = self.services.record_open, self.services.record_close

        def record_open(session: Any) -> None:
            self.taps.opened[session.call_id] = session.channel
            open_call(session)

        def record_close(session: Any, result: Any) -> None:
            self.taps.closed[session.call_id] = result.route
            close_call(session, result)

        self.services.record_open = record_open  # type: ignore[method-assign]
        self.services.record_close = record_close  # type: ignore[method-assign]

    def _tap_bridge(self, bridge: Bridge) -> None:
        handler = bridge.handler
        taps = self.taps

        async def tapped(call: TelephonyCall) -> HandOff | None:
            taps.handled += 1
            taps.caller_names[call.channel] = call.caller_name
            try:
                return await handler(call)
            finally:
                taps.audio[call.channel] = call.audio.stats

        bridge.handler = tapped

    async def __aenter__(self) -> InProcessServer:
        from ivr.server import run_server

        ready = asyncio.get_running_loop().create_future()

        def started(bridge: Bridge) -> None:
            self.bridge = bridge
            self._tap_bridge(bridge)
            ready.set_result(bridge)

        self._task = asyncio.create_task(run_server(self.settings, services=self.services, started=started),
                                         name="ivr-server")
        done, _ = await asyncio.wait({ready, self._task}, timeout=START_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            self._task.cancel()
            if self._task in done:
                self._task.result()  # re-raise the start-up error
            raise TimeoutError("the server did not start listening")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def agi_port(self) -> int:
        assert self.bridge is not None
        return self.bridge.agi_port

    @property
    def audiosocket_port(self) -> int:
        assert self.bridge is not None
        return self.bridge.audiosocket_port


# ------------------------------------------------------------------------------------ process gauges


def decoded_by(services: CallServices, langs: set[str]) -> Counter[str]:
    """Call-path finals so far by the model that decoded them (`WhisperEngine.decoded`: whisper, moonshine) over
    these languages' engines; empty for engines that do not count (Vosk)."""
    total: Counter[str] = Counter()
    for lang in langs:
        total += getattr(services.asr_engine(lang), "decoded", Counter())
    return total


def rss_bytes() -> int:
    """Resident set size of this process now (/proc/self/status VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads, not children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class RssSampler:
    """Peak RSS over a window, sampled on a thread (the event loop may be busy)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_bytes()
            self.peak = max(self.peak, value)
            self.samples.append((time.monotonic(), value))
            self._stop.wait(self.interval_s)


def temp_data_dir(prefix: str = "ivr-bench-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100, linear interpolation) or None for no values."""
    if not values:
        return None
    import numpy as np

    return float(np.percentile(values, q))




class ThreadedServer:
    """An InProcessServer on its own event loop in a background thread (for blocking-socket tests).

    `with ThreadedServer(settings, services) as server:` -> server.agi_port, server.run(coro)
    (run a coroutine on the server's loop and wait for it), server.submit(coro) (a Future).
    """

    def __init__(self, settings: Settings, services: CallServices) -> None:
        self.server = InProcessServer(settings, services)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ivr-server-loop", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        self.run(self.server.__aenter__(), timeout=START_TIMEOUT_S + 5)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return self.submit(coro).result(timeout)

    @property
    def agi_port(self) -> int:
        return self.server.agi_port

    @property
    def audiosocket_port(self) -> int:
        return self.server.audiosocket_port

    @property
    def taps(self) -> ServerTaps:
        return self.server.taps

    @property
    def serving(self) -> bool:
        task = self.server._task
        return task is not None and not task.done()
