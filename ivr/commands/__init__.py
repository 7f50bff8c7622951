"""The `ivr` subcommands, one module each; shared argument types live here."""

from __future__ import annotations

import argparse
from datetime import datetime

NOW_HELP = ("place the call at this local time, ISO 8601 (e.g. 2026-11-23T10:00), for business hours "
            "(default: the manifest's call_time or settings call_time, else the clock)")


def iso_time(text: str) -> datetime:
    """argparse type for --now: an ISO 8601 time, with a message that shows the form."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time; write e.g. 2026-11-23T10:00") from None
