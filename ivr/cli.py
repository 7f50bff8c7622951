"""`ivr`: the one command-line entry point.

Each sub-command lives in its own module under ivr/commands/ with two functions:
`register(subparsers)` adds its parser (and sets `func`), `func(args) -> int` runs it.
Heavy imports (speech models, Asterisk tooling) happen inside `func`, so `ivr --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ivr.errors import IvrError

# module names under ivr.commands, in the order `ivr --help` lists them
COMMAND_MODULES = (
    "demo",
    "serve",
    "chat",
    "talk",
    "nlu",
    "check",
    "transcribe",
    "models",
    "prompts",
    "replay",
    "call",
    "report",
    "sandbox",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description="Offline voice assistant for Asterisk")
    parser.add_argument("--config", help="settings file (default: ./ivr.yaml if present, or $IVR_CONFIG)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging: -v one line per call event (start, turn, hand-off, end), -vv debug")
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines (one object per line)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"ivr.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_json:
        from ivr.calllog import JsonLines

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines())
    from ivr.redact import install_log_redaction

    install_log_redaction()  # no card, phone or account number reaches a log line
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except IvrError as exc:
        print(f"ivr {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
