"""No call record is lost: a full or read-only data dir at shutdown, a bridge killed mid-call.

The data dir is a real small tmpfs mounted here (root only), filled by real SQLite writes or
remounted read-only; the killed bridge is a real process killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ivr.report import build_report
from ivr.services import RecordWriter
from ivr.storage.reaper import reap_lost_calls
from ivr.storage.records import ACTIVE, ERROR, TRANSFERRED, CallStore, StoreParams, TurnRecord, utcnow

CALLS = 20
SERVE_CALLS = 8  # fills the 200 KB data dir; more only add minutes on 2 cores
ROOT = Path(__file__).resolve().parents[1]
TURNS = 4
SPEECH = "I would like to know why my last bill was so much higher than usual " * 12  # ~800 bytes a turn


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A 200 KB tmpfs: a few calls fill it."""
    path = tmp_path / "data"
    _mount(path, "200k")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _params(tmp_path: Path) -> StoreParams:
    return StoreParams(fallback_spool_path=tmp_path / "state" / "spool.jsonl")


def _write_calls(writer: RecordWriter[CallStore], prefix: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        call_id = f"{prefix}-{n:02d}"
        writer.open_call(call_id, lang="en", flow="support", caller="+15550100")
        for idx in range(TURNS):
            writer.add_turn(call_id, TurnRecord(idx=idx, prompt="How can I help?", transcript=SPEECH))
        writer.close_call(call_id, status=TRANSFERRED, route="support", handoff_reason="caller_asked")
        ids.append(call_id)
    return ids


def _all_stored(url: str, params: StoreParams, ids: list[str]) -> CallStore:
    """The next start: a new store replays the spools; every call is there, closed, with its turns."""
    store = CallStore(url, params)
    assert store.flush(timeout_s=10)
    calls = {c.id: c for c in store.calls()}
    assert sorted(calls) == sorted(ids)
    assert all(c.status == TRANSFERRED and c.ended_at is not None for c in calls.values())
    assert all(len(store.turns(i)) == TURNS for i in ids)
    assert not params.fallback_spool_path.exists()  # type: ignore[union-attr]  # replayed, then removed
    return store


def test_full_data_dir_at_shutdown_keeps_every_record(data_dir: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{data_dir / 'calls.sqlite3'}"
    params = _params(tmp_path)
    writer = RecordWriter(CallStore(url, params))
    with caplog.at_level(logging.WARNING):
        ids = _write_calls(writer, "full", CALLS)
        writer.close()  # what `ivr serve` does on SIGTERM
    assert "database or disk is full" in caplog.text  # the disk really filled up
    kept = [r.getMessage() for r in caplog.records if "not stored in" in r.getMessage()]
    assert len(kept) == 1 and str(params.fallback_spool_path) in kept[0], caplog.text
    assert int(kept[0].split("call records: ")[1].split(" ")[0]) > 0  # the count is said
    assert params.fallback_spool_path.exists()  # type: ignore[union-attr]

    _remount(data_dir, "size=20m")  # ops free some space; the server starts again
    _all_stored(url, params, ids).close()


def test_read_only_data_dir_keeps_every_record(data_dir: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    _remount(data_dir, "size=2m")
    url = f"sqlite:///{data_dir / 'calls.sqlite3'}"
    params = _params(tmp_path)
    first = RecordWriter(CallStore(url, params))
    ids = _write_calls(first, "before", 1)
    first.close()
    _remount(data_dir, "ro")  # e.g. the file system went read-only after an I/O error
    writer = RecordWriter(CallStore(url, params))
    with caplog.at_level(logging.WARNING):
        ids += _write_calls(writer, "ro", 3)
        writer.close()
    kept = [r.getMessage() for r in caplog.records if "not stored in" in r.getMessage()]
    writes = 3 * (1 + TURNS + 1)  # open, turns, close
    assert len(kept) == 1 and f"call records: {writes} write(s)" in kept[0], caplog.text

    _remount(data_dir, "rw")
    _all_stored(url, params, ids).close()


KILLED_BRIDGE = """
import sys, time
from ivr.storage.records import CallStore, TurnRecord
store = CallStore(sys.argv[1])
store.open_call("killed-call", lang="en", flow="support", caller="+15550100")
store.add_turn("killed-call", TurnRecord(idx=0, prompt="How can I help?", transcript="my bill"))
print("in call", flush=True)
time.sleep(120)
"""


def test_a_killed_bridge_leaves_no_record_active(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    bridge = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_BRIDGE), url], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert bridge.stdout is not None and bridge.stdout.readline().strip() == "in call"
    finally:
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)
    store = CallStore(url)
    assert store.call("killed-call").status == ACTIVE  # type: ignore[union-attr]
    assert build_report(store).outcomes[ACTIVE] == 1
    assert reap_lost_calls(store, max_call_s=0.5, margin_s=0.5) == 0  # could still be in progress

    time.sleep(1.2)  # past max_call_s (+ margin): no bridge runs a call that long
    assert reap_lost_calls(store, max_call_s=0.5, margin_s=0.5) == 1
    call = store.call("killed-call")
    assert call is not None and call.status == ERROR and call.handoff_reason == "bridge_lost"
    assert call.ended_at is not None and call.started_at < call.ended_at <= call.started_at + timedelta(seconds=0.5)
    assert [e.data["reason"] for e in store.events("killed-call") if e.kind == "record_closed"] == ["bridge_lost"]
    report = build_report(store)
    assert report.outcomes[ACTIVE] == 0 and report.outcomes[ERROR] == 1 and report.ended == 1
    assert reap_lost_calls(store, max_call_s=0.5, margin_s=0.5) == 0  # once only
    store.close()


def test_the_reaper_closes_only_calls_past_max_call_s(tmp_path: Path) -> None:
    store = CallStore(f"sqlite:///{tmp_path / 'calls.sqlite3'}")
    now = utcnow()
    store.open_call("lost", started_at=now - timedelta(hours=2))
    store.open_call("in-progress", started_at=now - timedelta(seconds=30))
    assert reap_lost_calls(store, max_call_s=1800) == 1  # the periodic round: any server, any database
    lost, live = store.call("lost"), store.call("in-progress")
    assert lost is not None and lost.status == ERROR and lost.handoff_reason == "bridge_lost"
    assert lost.ended_at == lost.started_at + timedelta(seconds=1800)  # it cannot have lasted longer
    assert live is not None and live.status == ACTIVE
    store.close()


@pytest.mark.slow
def test_ivr_serve_stopped_with_a_full_data_dir_loses_no_record(data_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case end to end: `ivr serve` with its data dir on a 200 KB tmpfs, calls, SIGTERM.
    Was (20 calls): 13 of 20 records missing, 3 left active, nothing logged."""
    import asyncio
    import re

    sys.path.insert(0, str(ROOT))  # bench/ is not a package on the path
    from bench.fake_asterisk import CallerScript, fake_call
    from ivr.audio.pcm import read_wav

    state = tmp_path / "state"  # where the fallback spool goes (outside the data dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(state), "IVR_DATA_DIR": str(data_dir)}
    server = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve", "--agi-port", "0", "--audiosocket-port", "0",
                               "--health-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=tmp_path)
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        port = int(re.search(r"agi://127\.0\.0\.1:(\d+)/", banner).group(1))  # type: ignore[union-attr]
        speech = read_wav(ROOT / "audio_fixtures" / "ko" / "balance_1.wav")

        async def calls() -> list[bool]:
            reports = await asyncio.gather(*(fake_call("127.0.0.1", port, CallerScript(
                pcm=speech, lang="ko", channel=f"Local/full-{i}", listen_s=0.5, max_call_s=90),
                uniqueid=f"full.{i}") for i in range(SERVE_CALLS)))
            return [r.audiosocket for r in reports]

        assert all(asyncio.run(calls()))
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=60)
    assert "not stored in" in err and "replayed at the next start" in err, err[-3000:]

    _remount(data_dir, "size=20m")  # space again; the next start replays the spools
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    store = CallStore(f"sqlite:///{data_dir / 'calls.sqlite3'}")
    assert store.flush(timeout_s=10)
    calls = {c.id: c for c in store.calls()}
    assert sorted(calls) == sorted(f"full.{i}" for i in range(SERVE_CALLS))
    assert all(c.status != ACTIVE and c.ended_at is not None for c in calls.values())
    store.close()
