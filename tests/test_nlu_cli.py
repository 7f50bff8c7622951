"""`ivr nlu --json` and `ivr chat` as a user runs them (subprocess, real grammars, real demo DB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ivr.config import PROJECT_ROOT
from ivr.nlu.classifier import FUSION_WEIGHTS


def run_ivr(args: list[str], stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m ivr.cli ARGS` as a user runs it."""
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=env, timeout=120)


def test_nlu_json_lines() -> None:
    lines = ["how much money do I have", "top up fifty dollars", "", "order a pizza",
             "share two gigs with nine one six five five five one two three four",
             "roaming\t0.4\toperator\t0.9"]
    done = run_ivr(["nlu", "--lang", "en", "--json"], "\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["intent"] for r in rows] == ["balance", "top_up", "none", "share_data", "operator"]
    assert set(rows[0]) >= {"text", "intent", "score", "entities"}
    assert rows[1]["entities"] == {"amount": 50, "currency": "USD", "number": 50}
    assert rows[3]["entities"]["phone"] == "9165551234" and rows[3]["entities"]["gigabytes"] == 2
    assert all(0 <= r["score"] <= 1 for r in rows)


def test_nlu_russian_and_korean() -> None:
    ru = run_ivr(["nlu", "--lang", "ru", "--json"], "сколько у меня денег\nпополнить на сто рублей\n")
    assert [json.loads(x)["intent"] for x in ru.stdout.splitlines()] == ["balance", "top_up"]
    assert json.loads(ru.stdout.splitlines()[1])["entities"]["amount"] == 100
    ko = run_ivr(["nlu", "--lang", "ko", "--json"], "잔액 확인\n상담원\n")
    assert [json.loads(x)["intent"] for x in ko.stdout.splitlines()] == ["balance", "operator"]


def test_nlu_human_output() -> None:
    done = run_ivr(["nlu", "--lang", "en"], "check my balance\n")
    assert done.returncode == 0 and "balance" in done.stdout


CHATS = {
    "en": (["what is my balance", "yes", "top up twenty dollars", "yes", "no", "#5"],
           ["Your balance is 12 dollars and 50 cents", "Your balance is now 32 dollars and 50 cents",
            "survey recorded: 5/5", "hang up (completed)"]),
    "ru": (["какой у меня баланс", "нет", "четыре"],
           ["На вашем счёте 350 рублей", "survey recorded: 4/5"]),
    "ko": (["잔액 확인", "아니요", "#3"], ["고객님의 잔액은 만 오천 원", "survey recorded: 3/5"]),
}


def test_chat_in_every_language(tmp_path: Path) -> None:
    for lang, (lines, expected) in CHATS.items():
        done = run_ivr(["chat", "--lang", lang, "--now", "2026-11-23T10:00:00", "--db", str(tmp_path / "d.sqlite3")],
                       "\n".join(lines) + "\n", env={"IVR_DATA_DIR": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        for text in expected:
            assert text in done.stdout, (lang, text, done.stdout)


def test_chat_operator_handoff_prints_summary(tmp_path: Path) -> None:
    done = run_ivr(["chat", "--lang", "en", "--now", "2026-11-23T10:00:00"], "I want a real person\n",
                   env={"IVR_DATA_DIR": str(tmp_path)})
    assert "transfer to queue support (reason: caller_asked)" in done.stdout
    assert "summary: reason=caller_asked; intent=operator" in done.stdout


def test_nlu_eval_scores_a_tsv(tmp_path: Path) -> None:
    tsv = tmp_path / "lines.tsv"
    tsv.write_text("# a comment\nhow much money have i got\tbalance\nput ten dollars on my phone\ttop_up\n"
                   "what is the capital of peru\tnone\nplease block my sim\tbalance\n", encoding="utf-8")
    html = tmp_path / "report.html"
    done = run_ivr(["nlu", "eval", str(tsv), "--lang", "en", "--json", "--html", str(html)])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["lines"] == 4 and report["in_scope"] == 3 and report["out_of_scope"] == 1
    assert report["accuracy"] == 0.75 and report["oos_recall"] == 1.0  # the block_sim line is labelled wrong
    assert report["confused"] == [{"expected": "balance", "got": "block_sim", "count": 1}]
    assert report["per_intent"]["balance"]["recall"] == 0.5 and report["ms_per_utterance"] > 0
    assert report["fusion_weight"] in FUSION_WEIGHTS  # chosen for the shipped grammar by its calibration
    assert "Most confused" in html.read_text(encoding="utf-8")
    tsv.write_text("no tab on this line\n", encoding="utf-8")
    bad = run_ivr(["nlu", "eval", str(tsv), "--lang", "en"])
    assert bad.returncode == 1 and "lines.tsv:1: expected 'utterance<TAB>intent'" in bad.stderr
