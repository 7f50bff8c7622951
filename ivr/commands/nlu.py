"""`ivr nlu`: understand utterances read one per line on stdin (intent, score, entities).

    echo "how much money do I have" | ivr nlu --lang en --json
    {"text": "how much money do I have", "intent": "balance", "score": 0.93, "entities": {}, ...}

An ASR n-best can be given on one line as `text<TAB>confidence<TAB>text<TAB>confidence...`.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("nlu", help="intent + entities of utterances read one per line on stdin")
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
