"""`ivr report`: containment, transfer reasons, intents, no-match/no-input, latency, CSAT/NPS."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="analytics over the call records (terminal, --json or --html)")
    p.add_argument("--since", default="1d", help="1d, 7d, 12h, an ISO time, or 'all' (default: 1d)")
    p.add_argument("--until", default=None, help="ISO time (default: now)")
    p.add_argument("--db", default=None, help="database URL (default: settings storage.url / IVR_STORAGE_URL)")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with plots")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ivr.config import load_settings
    from ivr.errors import StorageError
    from ivr.report import build_report, parse_since, print_report, render_html
    from ivr.storage.records import CallStore, StoreParams

    url = args.db or load_settings(args.config).storage_url
    since = parse_since(args.since)
    until = parse_since(args.until) if args.until else None
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).expanduser().exists():
        raise StorageError(
            f"no call records at {url.removeprefix('sqlite:///')}",
            fix="run some calls first (`ivr demo`), or pass --db URL",
        )
    # a report only reads: no retry thread, no spool
    store = CallStore(url, StoreParams(background_retry=False, spool=False))
    try:
        report = build_report(store, since=since, until=until)
    finally:
        store.engine.dispose()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report)
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
        if not args.json:
            print(f"HTML report: {args.html}")
    return 0
