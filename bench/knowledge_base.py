"""How well the knowledge base (faq/<lang>/*.yaml) is matched, with the NLU the dialog uses.

    python3 -m bench.knowledge_base [--json]

Prints, per language: entries and questions; held-out phrasings (tests/data/faq_heldout.tsv, not in
the YAML) that reach their entry; unrelated sentences (tests/data/faq_out_of_scope.tsv) answered from
the knowledge base anyway; flow-intent fixture transcripts (audio_fixtures/manifest.yaml) still right
with the knowledge base merged in; NLU time per utterance; and the machine's load, since the figures
are taken on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from ivr.config import PROJECT_ROOT, PathSettings
from ivr.nlu import intents as intents_module
from ivr.nlu.intents import Nlu
from ivr.nlu.knowledge import FAQ_PREFIX, load_with_knowledge

DATA = PROJECT_ROOT / "tests" / "data"


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def measure(lang: str, paths: PathSettings) -> dict[str, Any]:
    started = time.perf_counter()
    grammar, kb = load_with_knowledge(lang, paths.grammars, paths.faq)
    nlu = Nlu(grammar)
    heldout = [(text, entry) for row_lang, text, entry in _rows(DATA / "faq_heldout.tsv") if row_lang == lang]
    unrelated = [text for row_lang, text in _rows(DATA / "faq_out_of_scope.tsv") if row_lang == lang]
    manifest = yaml.safe_load((paths.fixtures / "manifest.yaml").read_text(encoding="utf-8")) or {}
    fixtures = [(f["transcript"], f["intent"]) for f in manifest.get("fixtures", [])
                if f.get("lang") == lang and f.get("transcript") and f.get("intent")]
    nlu.understand("warm up")  # a trained classifier trains (or loads) on first use: not per utterance
    ready_s = time.perf_counter() - started
    times: list[float] = []

    def understand(text: str) -> str:
        t0 = time.perf_counter()
        intent = nlu.understand(text).intent
        times.append((time.perf_counter() - t0) * 1000)
        return intent

    right = [understand(text) == FAQ_PREFIX + entry for text, entry in heldout]
    answered = [text for text in unrelated if understand(text).startswith(FAQ_PREFIX)]
    fixtures_right = sum(understand(text) == intent for text, intent in fixtures)
    times.sort()
    return {
        "lang": lang,
        "entries": len(kb),
        "questions": sum(len(e.questions) for e in kb.entries.values()),
        "heldout": f"{sum(right)}/{len(right)}",
        "heldout_rate": sum(right) / len(right) if right else None,
        "unrelated_answered": f"{len(answered)}/{len(unrelated)}",
        "unrelated_answered_rate": len(answered) / len(unrelated) if unrelated else None,
        "fixtures_right": f"{fixtures_right}/{len(fixtures)}",
        "ms_median": round(statistics.median(times), 2) if times else None,
        "ms_p95": round(times[int(0.95 * (len(times) - 1))], 2) if times else None,
        "ready_s": round(ready_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    results = [measure(lang, PathSettings()) for lang in ("en", "ru")]
    matcher = (intents_module.__doc__ or "").splitlines()[0]  # which NLU: the first line of its docstring
    conditions = {"cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load], "matcher": matcher}
    if args.json:
        print(json.dumps({"conditions": conditions, "results": results}, indent=2, ensure_ascii=False))
        return
    print(f"conditions: {conditions['cpus']} CPUs, load average {conditions['loadavg_1_5_15']} (a shared machine); "
          f"NLU: {matcher}")
    for r in results:
        print(f"{r['lang']}: {r['entries']} entries, {r['questions']} questions; held-out {r['heldout']} "
              f"({100 * (r['heldout_rate'] or 0):.1f} %); unrelated answered {r['unrelated_answered']} "
              f"({100 * (r['unrelated_answered_rate'] or 0):.1f} %); fixture intents right {r['fixtures_right']}; "
              f"NLU {r['ms_median']} ms median, {r['ms_p95']} ms p95; ready in {r['ready_s']} s")


if __name__ == "__main__":
    main()
