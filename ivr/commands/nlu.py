"""`ivr nlu`: understand utterances read one per line on stdin (intent, score, entities).

    echo "how much money do I have" | ivr nlu --lang en --json
    {"text": "how much money do I have", "intent": "balance", "score": 0.93, "entities": {}, ...}

An ASR n-best can be given on one line as `text<TAB>confidence<TAB>text<TAB>confidence...`.

    ivr nlu eval tests/data/nlu_heldout_en.tsv --lang en [--json] [--html report.html]

scores labelled utterances (`utterance<TAB>intent` or `none`): accuracy, out-of-scope recall and
precision, per-intent F1, the most confused pairs, ms per utterance (ivr.nlu.evaluation).
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("nlu", help="intent + entities of utterances read one per line on stdin; "
                              "`ivr nlu eval FILE.tsv` scores labelled ones")
    p.add_argument("action", nargs="?", choices=["eval"], help="eval: score FILE.tsv (utterance<TAB>intent|none)")
    p.add_argument("file", nargs="?", help="the TSV file for eval")
    p.add_argument("--html", default=None, metavar="FILE", help="eval: also write an HTML report")
    p.add_argument("--lang", default=None, help="en, ru or ko (default: settings default_lang)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: text, intent, score, entities")
    p.add_argument("--expected", default="", help="comma-separated intents the dialog state expects (boosted)")
    p.add_argument("--grammars", default=None, help="grammars directory (default: settings paths.grammars)")
    p.add_argument("--faq", default=None, help="knowledge-base directory (default: settings paths.faq; "
                   "its entries are intents faq.<id>, as in calls)")
    p.set_defaults(func=run)


def parse_line(line: str) -> list[tuple[str, float]] | str:
    """A plain utterance, or an n-best `text<TAB>conf<TAB>text<TAB>conf`."""
    if "\t" not in line:
        return line
    parts = line.split("\t")
    out = []
    for i in range(0, len(parts) - 1, 2):
        try:
            out.append((parts[i], float(parts[i + 1])))
        except ValueError:
            return line.replace("\t", " ")
    return out


def run(args: argparse.Namespace) -> int:
    from ivr.config import load_settings
    from ivr.nlu.intents import Nlu
    from ivr.nlu.knowledge import load_with_knowledge

    settings = load_settings(args.config)
    lang = args.lang or settings.default_lang
    grammar, _ = load_with_knowledge(lang, args.grammars or settings.paths.grammars, args.faq or settings.paths.faq)
    nlu = Nlu(grammar)
    if args.action == "eval":
        return run_eval(args, nlu)
    expected = [e.strip() for e in args.expected.split(",") if e.strip()] or None
    if sys.stdin.isatty() and not args.json:
        console.print(f"[dim]ivr nlu ({lang}): type an utterance per line, Ctrl-D to end[/]")
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        u = nlu.understand(parse_line(line), expected=expected)
        if args.json:
            print(json.dumps({"text": u.text, "intent": u.intent, "score": round(u.score, 3),
                              "entities": u.entities, "ranking": [list(r) for r in u.ranking]},
                             ensure_ascii=False), flush=True)
        else:
            colour = "red" if u.intent == "none" else "green"
            ents = f"  {escape(json.dumps(u.entities, ensure_ascii=False))}" if u.entities else ""
            others = u.ranking if u.intent == "none" else u.ranking[1:]
            runners = ", ".join(f"{i} {s:.2f}" for i, s in others)
            console.print(f"{escape(u.text)!s:40} [{colour}]{u.intent:15}[/] {u.score:.2f}{ents}"
                          + (f"  [dim](then {runners})[/]" if runners else ""))
    return 0


def run_eval(args: argparse.Namespace, nlu: object) -> int:
    from pathlib import Path

    from ivr.errors import ConfigError
    from ivr.nlu.evaluation import evaluate, read_tsv, render_html
    from ivr.nlu.intents import Nlu

    assert isinstance(nlu, Nlu)
    if not args.file:
        raise ConfigError("ivr nlu eval needs a file", fix="ivr nlu eval FILE.tsv (lines: utterance<TAB>intent|none)")
    report = evaluate(nlu, read_tsv(Path(args.file)))
    if args.html:
        Path(args.html).write_text(render_html(report, f"ivr nlu eval {args.file} ({nlu.lang})"), encoding="utf-8")
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
        return 0
    console.print(f"{args.file} ({nlu.lang}, {report.lines} lines, threshold {report.threshold:.3f}, "
                  f"fusion weight {report.fusion_weight:g})")
    console.print(f"  accuracy            {report.accuracy:6.1%}")
    console.print(f"  in-scope accuracy   {report.in_scope_accuracy:6.1%}  of {report.in_scope} "
                  f"(best-ranked intent right, threshold aside: {report.top1_accuracy:.1%})")
    console.print(f"  out-of-scope recall {report.oos_recall:6.1%}  of {report.out_of_scope}, "
                  f"precision {report.oos_precision:.1%}")
    console.print(f"  ms per utterance    {report.ms_per_utterance:6.1f}  (p95 {report.ms_p95:.1f})")
    if report.confused:
        console.print("  most confused (expected -> got):")
        for want, got, count in report.confused:
            console.print(f"    {escape(want):>22} -> {escape(got):22} {count}")
    worst = sorted((s.f1, name) for name, s in report.per_intent.items() if s.support)[:5]
    if worst:
        console.print("  lowest F1: " + ", ".join(f"{escape(name)} {f1:.2f}" for f1, name in worst))
    if report.errors:
        console.print("  errors:")
        for text, want, got, score in report.errors[:20]:
            console.print(f"    {escape(text)!s:50} {escape(want)} -> [red]{escape(got)}[/] {score:.2f}")
    return 0
