"""The Korean development set (bench/ko_devset.py) stays apart from what it must not overlap."""

from __future__ import annotations

import yaml

from bench.ko_devset import ROOT, manifest, score


def test_the_set_shares_no_text_with_the_replay_fixtures_or_the_classifiers_data() -> None:
    rows = manifest()["fixtures"]
    fixtures = yaml.safe_load((ROOT / "audio_fixtures/manifest.yaml").read_text(encoding="utf-8"))["fixtures"]
    replayed = {f["transcript"] for f in fixtures if f["lang"] == "ko"}
    ood = set((ROOT / "ivr/nlu/data/ood_ko.txt").read_text(encoding="utf-8").splitlines())
    assert not {r["transcript"] for r in rows} & replayed
    assert not {r["transcript"] for r in rows if r["intent"] == "none"} & ood
    grammar = yaml.safe_load((ROOT / "grammars/ko/support.yaml").read_text(encoding="utf-8"))
    intents = {{True: "yes", False: "no"}.get(k, k) for k in grammar["intents"]}
    assert {r["intent"] for r in rows} - {"none"} <= intents
    assert len({r["file"] for r in rows}) == len(rows)  # two voices per text, every file named once


def test_scoring_tells_wrong_from_rejected() -> None:
    def line(expected: str, got: str) -> dict[str, object]:
        return {"checks": [{"name": "intent", "expected": expected, "got": got}]}

    got = score([line("balance", "balance"), line("balance", "top_up"), line("balance", "none"),
                 line("none", "none"), line("none", "roaming")])
    assert got == {"right": 1, "wrong": 1, "rejected": 1, "oos_rejected": 1, "oos_accepted": 1}
