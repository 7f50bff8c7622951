"""`ivr replay` as a tester runs it: a manifest in, verdicts, JUnit/HTML reports and call records out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from ivr.storage.records import CallStore

FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures"


def _manifest(tmp_path: Path) -> Path:
    for name in ("en/balance_1.wav", "en/goodbye_1.wav", "ko/roaming_1.wav"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(FIXTURES / name, tmp_path / name)
    manifest = {
        "fixtures": [
            {"file": "en/balance_1.wav", "lang": "en", "transcript": "how much money is left on my account",
             "intent": "balance", "source": "espeak-ng"},
            # a wrong expectation on purpose: the verdict must say fail and the exit code 1
            {"file": "en/goodbye_1.wav", "lang": "en", "transcript": "that's all goodbye", "intent": "top_up",
             "source": "espeak-ng"},
            {"file": "ko/roaming_1.wav", "lang": "ko", "transcript": "해외 로밍", "intent": "roaming",
             "source": "espeak-ng"},
        ],
        "calls": [{"name": "balance_call", "lang": "en", "caller": "+15550100", "route": "completed",
                   "turns": [{"file": "en/balance_1.wav", "say_contains": ["12 dollars"]},
                             {"file": "en/goodbye_1.wav", "intent": "goodbye"}]}],
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, allow_unicode=True))
    return path


def test_replay_gives_a_verdict_per_expectation_reports_and_records(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    env = {**os.environ, "IVR_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "replay", str(manifest), "--json",
         "--junit", str(tmp_path / "r.xml"), "--html", str(tmp_path / "r.html")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 1, run.stderr  # one expectation fails on purpose
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    results, totals = lines[:-1], lines[-1]["totals"]
    by_file = {(r["call"], r["file"]): r for r in results}
    balance = by_file[("", "en/balance_1.wav")]
    assert balance["verdict"] == "pass" and balance["intent"] == "balance" and balance["latency_ms"] > 0
    assert {"file", "text", "intent", "score", "entities", "latency_ms"} <= set(balance)
    wrong = by_file[("", "en/goodbye_1.wav")]
    assert wrong["verdict"] == "fail" and wrong["intent"] == "goodbye"
    assert wrong["checks"][0] == {"name": "intent", "verdict": "fail", "expected": "top_up", "got": "goodbye"}
    assert by_file[("", "ko/roaming_1.wav")]["verdict"] == "pass"
    assert by_file[("balance_call", "en/balance_1.wav")]["verdict"] == "pass"  # reply carried the amount
    assert by_file[("balance_call", "balance_call:route")]["verdict"] == "pass"
    assert totals["failed"] == 1 and totals["passed"] == len(results) - 1
    assert totals["intent_accuracy"] == (len(results) - 2) / (len(results) - 1)  # the route check has no intent
    assert "1 failed" in run.stderr
    # reports for CI and for people
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.get("failures") == "1" and int(suite.get("tests")) == len(results)
    page = (tmp_path / "r.html").read_text()
    assert "<tr class='fail'>" in page and "intent: expected &#x27;top_up&#x27;, got &#x27;goodbye&#x27;" in page
    # every replayed call left its record in real SQLite
    store = CallStore(f"sqlite:///{tmp_path / 'data' / 'calls.sqlite3'}")
    calls = store.calls()
    assert len(calls) == 4 and all(c.ended_at is not None for c in calls)
    assert {t.intent for c in calls for t in store.turns(c.id)} >= {"balance", "goodbye", "roaming"}
