"""`ivr transcribe`: run an ASR engine over WAV files, one result per file (table or JSON lines)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ivr.audio.pcm import FRAME_BYTES, duration_s, read_wav
from ivr.config import LANGUAGES, load_settings
from ivr.errors import AudioError, IvrError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transcribe", help="transcribe WAV files with Vosk or Whisper")
    p.add_argument("files", nargs="+", metavar="FILES", help="8 kHz 16-bit mono WAV files")
    p.add_argument("--engine", choices=("auto", "vosk", "whisper"), default=None,
                   help="ASR engine (default: asr.engine.<lang> from the settings)")
    p.add_argument("--model", help="Vosk model path/name or Whisper model path")
    p.add_argument("--lang", choices=LANGUAGES, help="language (default: the settings' default_lang)")
    p.add_argument("--phrases", help='grammar: comma-separated phrases, e.g. "check balance,top up"')
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--resample", action="store_true",
                   help="accept any sample rate / channel count (resampled to 8 kHz mono)")
    p.set_defaults(func=run)


def transcribe_pcm(recognizer: Any, pcm: bytes) -> tuple[Any, float, float, int]:
    """Feed `pcm` in 20 ms frames like a call would; returns (final, decode_ms, final_ms, partials)."""
    partials = 0
    started = time.perf_counter()
    for i in range(0, len(pcm), FRAME_BYTES):
        if recognizer.accept(pcm[i : i + FRAME_BYTES]) is not None:
            partials += 1
    final_started = time.perf_counter()
    result = recognizer.final()
    done = time.perf_counter()
    return result, (done - started) * 1000, (done - final_started) * 1000, partials


def run(args: argparse.Namespace) -> int:
    from ivr.asr.factory import engine_for

    settings = load_settings(getattr(args, "config", None))
    lang = args.lang or settings.default_lang
    engine = engine_for(lang, settings, args.engine, model=args.model)
    recognizer = engine.recognizer()
    phrases = [p.strip() for p in args.phrases.split(",") if p.strip()] if args.phrases else None
    recognizer.set_grammar(phrases)
    rows: list[dict[str, Any]] = []
    failures = 0
    for name in args.files:
        try:
            pcm = read_wav(name, target_rate=8000 if args.resample else None, max_s=settings.asr.max_audio_s)
        except AudioError as exc:
            failures += 1
            message = str(exc) + (" (or pass --resample)" if "expected 8000 Hz" in str(exc) else "")
            print(f"ivr transcribe: {message}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": name, "error": message}, ensure_ascii=False), flush=True)
            continue
        try:
            result, decode_ms, final_ms, partials = transcribe_pcm(recognizer, pcm)
        except IvrError as exc:
            failures += 1
            print(f"ivr transcribe: {name}: {exc}", file=sys.stderr)
            if args.json:  # one line per file, whatever happened to it
                print(json.dumps({"file": name, "error": str(exc)}, ensure_ascii=False), flush=True)
            recognizer.reset()
            continue
        row = {
            "file": name,
            "text": result.text,
            "confidence": result.confidence,
            "audio_s": round(duration_s(pcm), 3),
            "decode_ms": round(decode_ms, 1),
            "final_ms": round(final_ms, 1),
            "partials": partials,
            "engine": engine.name,
            "alternatives": [{"text": a.text, "confidence": a.confidence} for a in result.alternatives],
            "words": [list(w) for w in result.words],
        }
        if args.json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        rows.append(row)
    if not args.json and rows:
        _print_table(rows)
    return 1 if failures else 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Column, Table

    table = Table("conf", "audio s", "decode ms")
    # long paths and texts wrap rather than being cut short
    table.columns.insert(0, Column("file", overflow="fold"))
    table.columns.insert(1, Column("text", overflow="fold"))
    table.add_column("alternatives", overflow="fold")
    for row in rows:
        alts = "; ".join(f"{a['text']} ({a['confidence']:.2f})" for a in row["alternatives"][1:4])
        text = row["text"] or "[dim](rejected / nothing heard)[/dim]"
        table.add_row(row["file"], text, f"{row['confidence']:.2f}", f"{row['audio_s']:.2f}",
                      f"{row['decode_ms']:.0f}", alts)
    Console().print(table)
