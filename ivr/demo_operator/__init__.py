"""The demo mobile operator behind flows/support.yaml: a subscriber DB in SQLite and its hooks.

`hook_context_for(settings)` is what a process passes to `ivr.dialog.hooks.run_hook` so the
hooks find the database (created and seeded on first use under settings.paths.data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ivr.config import Settings

DB_FILE = "demo_operator.sqlite3"
CONTEXT_KEY = "demo_db"


def db_path_for(settings: Settings) -> Path:
    return Path(settings.paths.data) / DB_FILE


def hook_context_for(settings: Settings, db_path: Path | str | None = None) -> dict[str, Any]:
    """The per-process part of the hook context: where the demo DB lives."""
    return {CONTEXT_KEY: str(db_path or db_path_for(settings))}
