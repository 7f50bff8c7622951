"""`ivr check`: validate every flow, grammar, prompt and knowledge-base file and their cross-references.

Prints `file:line: message` for each problem and exits 1 if there is any; warnings (e.g. Korean
phrases with words the speech model does not know) do not fail the check unless --strict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check", help="validate flows, grammars, prompts and the knowledge base (file:line)")
    p.add_argument("--flows", default=None, help="flows directory (default: settings paths.flows)")
    p.add_argument("--grammars", default=None, help="grammars directory (default: settings paths.grammars)")
    p.add_argument("--prompts", default=None, help="prompts directory (default: settings paths.prompts)")
    p.add_argument("--faq", default=None, help="knowledge-base directory (default: settings paths.faq)")
    p.add_argument("--strict", action="store_true", help="warnings fail the check too")
    p.add_argument("--no-vocabulary", action="store_true",
                   help="skip checking phrases against the speech models' vocabularies")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ivr.config import load_settings
    from ivr.dialog.registry import asr_vocabularies, check_files

    settings = load_settings(args.config)
    grammars = Path(args.grammars or settings.paths.grammars)
    flows = Path(args.flows or settings.paths.flows)
    prompts = Path(args.prompts or settings.paths.prompts)
    vocabulary = {} if args.no_vocabulary else asr_vocabularies()
    faq = Path(args.faq or settings.paths.faq)
    report, built = check_files(grammars, flows, prompts, vocabulary, faq_dir=faq)
    warnings = list(report.warnings)
    for (_name, lang), loaded in sorted(built.items()):
        if lang == report.languages[0]:
            warnings += loaded.flow.structure_warnings()
    for error in report.errors:
        console.print(f"[red]error[/]   {escape(error)}")
    for warning in warnings:
        console.print(f"[yellow]warning[/] {escape(warning)}")
    failed = bool(report.errors) or (args.strict and bool(warnings))
    states = sum(len(loaded.flow.states) for (_, lang), loaded in built.items() if lang == report.languages[0])
    answers = {lang: len(loaded.knowledge) for (_, lang), loaded in built.items() if loaded.knowledge}
    kb = ", ".join(f"{lang} {n}" for lang, n in sorted(answers.items()))
    summary = (f"{len(report.flows)} flow(s) ({states} states), languages {', '.join(report.languages) or 'none'}"
               + (f", knowledge-base entries {kb}" if kb else "") + "; "
               f"{len(report.errors)} error(s), {len(warnings)} warning(s)")
    if failed:
        console.print(f"[bold red]check failed[/]: {summary}")
        return 1
    console.print(f"[bold green]ok[/]: {summary}" + ("" if vocabulary else " (no ASR vocabulary checked)"))
    return 0
