"""The Korean development set (bench/ko_devset.py) stays apart from what it must not overlap."""

from __future__ import annotations

from bench.ko_devset import ROOT, manifest, score
from ivr.nlu.classifier import ood_sentences
from ivr.nlu.grammar import load_grammar
from ivr.testing.fixtures import load_manifest


def test_the_set_shares_no_text_with_the_replay_fixtures_or_the_classifiers_data() -> None:
    rows = manifest()["fixtures"]
    replayed = {f.transcript for f in load_manifest(check_files=False).fixtures if f.lang == "ko"}
    assert not {r["transcript"] for r in rows} & replayed
    assert not {r["transcript"] for r in rows if r["intent"] == "none"} & set(ood_sentences("ko"))
    assert {r["intent"] for r in rows} - {"none"} <= set(load_grammar("ko", ROOT / "grammars").intents)
    assert len({r["file"] for r in rows}) == len(rows)  # two voices per text, every file named once


def test_scoring_tells_wrong_from_rejected() -> None:
    def line(expected: str, got: str) -> dict[str, object]:
        return {"checks": [{"name": "intent", "expected": expected, "got": got}]}

    got = score([line("balance", "balance"), line("balance", "top_up"), line("balance", "none"),
                 line("none", "none"), line("none", "roaming")])
    assert got == {"right": 1, "wrong": 1, "rejected": 1, "oos_rejected": 1, "oos_accepted": 1}
