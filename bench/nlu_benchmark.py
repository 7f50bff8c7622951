"""NLU figures with their conditions: held-out accuracy, training/cache/inference time, CLINC150.

    python3 bench/nlu_benchmark.py                       # held-out demo phrasings (EN, RU) + conditions
    python3 bench/nlu_benchmark.py --scale 150x100       # train/cache/inference time on 150 intents x 100
    python3 bench/nlu_benchmark.py --clinc --per-intent 20,100 --skip-held-out

--clinc runs the public CLINC150 benchmark (kept in bench/data/clinc150/, see its README; another
copy of clinc/oos-eval's data_full.json or data_oos_plus.json may be passed: their train and test
splits are the same). It trains on the first N train phrases per intent (oos_train is NOT used: no
tuning on the benchmark's own out-of-scope data; the threshold is chosen automatically from the
phrases) and evaluates on the TEST split: in-scope accuracy (right intent among the 150, accepted),
out-of-scope recall (oos_test rejected), and top-1 accuracy without any threshold. Design choices
were compared on the val split only.

--scale builds a synthetic grammar (phrases from templates over distinct made-up words): its accuracy
means nothing, it measures time only. Everything prints the machine load (`uptime`): the machine
is shared, and times on a busy one are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLINC = ROOT / "bench/data/clinc150/data_oos_plus.json"
sys.path.insert(0, str(ROOT))

from ivr.nlu import classifier as clf_mod  # noqa: E402
from ivr.nlu.evaluation import evaluate, read_tsv  # noqa: E402
from ivr.nlu.grammar import Grammar, IntentSpec  # noqa: E402
from ivr.nlu.intents import Nlu, NluParams  # noqa: E402
from ivr.nlu.knowledge import load_with_knowledge  # noqa: E402


def conditions() -> str:
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    emb = clf_mod.default_embedder()
    return (f"conditions: {os.cpu_count()} cores, {load}; embeddings: {emb.name if emb else 'none (n-grams only)'}; "
            f"classifier code v{clf_mod.CODE_VERSION}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def held_out() -> None:
    print("held-out caller phrasings of the demo line (tests/data/nlu_heldout_<lang>.tsv, never in grammars):")
    empty_faq = Path(tempfile.mkdtemp())
    for lang in ("en", "ru"):
        rows = read_tsv(ROOT / f"tests/data/nlu_heldout_{lang}.tsv")
        for label, faq in (("grammar only", empty_faq), ("grammar + knowledge base", ROOT / "faq")):
            grammar, _ = load_with_knowledge(lang, ROOT / "grammars", faq)
            nlu = Nlu(grammar)
            r = evaluate(nlu, rows)
            print(f"  {lang} {label:25} {r.lines} lines ({len(grammar.intents)} intents): accuracy {r.accuracy:.1%}, "
                  f"in scope {r.in_scope_accuracy:.1%}, out-of-scope recall {r.oos_recall:.1%} "
                  f"(precision {r.oos_precision:.1%}), threshold {r.threshold:.3f}, "
                  f"{r.ms_per_utterance:.1f} ms/utterance (p95 {r.ms_p95:.1f})")
            for text, want, got, score in r.errors:
                print(f"      {text!r}: {want} -> {got} ({score:.2f})")


def timed_training(examples: dict[str, list[str]], lang: str, probes: list[str]) -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ[clf_mod.CACHE_ENV] = cache
        grammar = Grammar(lang=lang, intents={k: IntentSpec(phrases=v) for k, v in examples.items()})
        started = time.perf_counter()
        nlu = Nlu(grammar).train()
        trained = time.perf_counter() - started
        clf_mod._memory.clear()
        started = time.perf_counter()
        Nlu(grammar).train()
        loaded = time.perf_counter() - started
        times = []
        for text in probes:
            t0 = time.perf_counter()
            nlu.understand(text)
            times.append((time.perf_counter() - t0) * 1000)
        del os.environ[clf_mod.CACHE_ENV]
    n = sum(len(v) for v in examples.values())
    print(f"  {len(examples)} intents, {n} phrases: trained in {trained:.1f} s, loaded from the cache in "
          f"{loaded:.2f} s; understand() {percentile(times, 0.5):.1f} ms median, {percentile(times, 0.95):.1f} ms p95 "
          f"over {len(times)} utterances; threshold {nlu.threshold:.3f}")


def scale(spec: str) -> None:
    n_intents, per_intent = (int(x) for x in spec.lower().split("x"))
    syllables = ["ba", "ko", "mi", "tu", "re", "sa", "lo", "ni", "pe", "du", "fa", "gi"]
    actions = ["check", "renew", "cancel", "order", "update", "repair", "move", "pause", "open", "close"]
    frames = ["i want to {a} my {o}", "please {a} the {o}", "can you {a} {o} for me", "{o} {a} now",
              "help me {a} a {o}", "i need to {a} my {o} today", "how do i {a} the {o}", "{a} {o} please",
              "is it possible to {a} my {o}", "could someone {a} the {o}"]
    examples: dict[str, list[str]] = {}
    for i in range(n_intents):
        obj = "".join(syllables[(i // 12**k) % 12] for k in range(3)) + "o"
        phrases = [frames[j % len(frames)].format(a=actions[(i + j // len(frames)) % len(actions)], o=obj)
                   + ("" if j < len(frames) * len(actions) else f" {j}") for j in range(per_intent)]
        examples[f"intent_{i:03d}"] = list(dict.fromkeys(phrases))[:per_intent]
    probes = [f"could you {actions[i % 10]} my {list(examples.values())[i % n_intents][0].split()[-1]}"
              for i in range(200)]
    print(f"synthetic grammar {n_intents} x {per_intent} (timing only):")
    timed_training(examples, "en", probes)


def clinc(path: Path, per_intent: list[int]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    train: dict[str, list[str]] = {}
    for text, intent in data["train"]:
        train.setdefault(intent, []).append(text)
    test = [(t, i) for t, i in data["test"]] + [(t, "none") for t, _ in data["oos_test"]]
    for n in per_intent:
        examples = {intent: phrases[:n] for intent, phrases in train.items()}
        grammar = Grammar(lang="en", intents={k: IntentSpec(phrases=v) for k, v in examples.items()})
        started = time.perf_counter()
        nlu = Nlu(grammar, NluParams(cache=False)).train()
        trained = time.perf_counter() - started
        r = evaluate(nlu, test)
        print(f"CLINC150 {n} phrases/intent ({len(examples)} intents), test split {r.lines} lines: in scope "
              f"{r.in_scope_accuracy:.1%}, out-of-scope recall {r.oos_recall:.1%} (precision {r.oos_precision:.1%}), "
              f"overall {r.accuracy:.1%}; top-1 without a threshold {r.top1_accuracy:.1%}; "
              f"threshold {r.threshold:.3f} (automatic); trained in {trained:.0f} s; "
              f"{r.ms_per_utterance:.1f} ms/utterance (p95 {r.ms_p95:.1f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="", help="NxM: time a synthetic grammar of N intents x M phrases")
    ap.add_argument("--clinc", nargs="?", const=str(CLINC), default=None,
                    help=f"run CLINC150 (default file: {CLINC.relative_to(ROOT)})")
    ap.add_argument("--per-intent", default="20,100", help="CLINC150 phrases per intent to train on")
    ap.add_argument("--skip-held-out", action="store_true")
    args = ap.parse_args()
    print(conditions())
    if not args.skip_held_out:
        held_out()
    if args.scale:
        scale(args.scale)
    if args.clinc:
        clinc(Path(args.clinc), [int(x) for x in args.per_intent.split(",")])
    print(conditions())
    return 0


if __name__ == "__main__":
    sys.exit(main())
