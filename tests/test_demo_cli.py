"""`ivr demo`, the README's main command, as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ivr.storage.records import CallStore


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IVR_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ivr.cli", "demo", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_demo_plays_a_whole_call_and_writes_its_record(tmp_path: Path) -> None:
    run = _demo(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "speech engine: whisper" in out  # says which engine it found offline
    assert "money is left on my account" in out.lower()  # the caller's words, as Whisper heard them
    assert "Your balance is 12 dollars and 50 cents" in out  # from the subscriber database
    assert "route as expected" in out
    (call,) = CallStore(f"sqlite:///{tmp_path / 'calls.sqlite3'}").calls()
    assert call.status == "contained" and call.engine == "whisper"


def test_demo_lists_calls_and_names_a_wrong_one(tmp_path: Path) -> None:
    listing = _demo(tmp_path, "--list")
    assert listing.returncode == 0 and "ko_operator_handoff" in listing.stdout
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert "engine vosk" in lines["ko_operator_handoff"] and "engine whisper" in lines["ru_balance_then_goodbye"]
    wrong = _demo(tmp_path, "--call", "no_such_call")
    assert wrong.returncode == 1
    assert "no call named 'no_such_call'" in wrong.stderr and "ivr demo --list" in wrong.stderr
