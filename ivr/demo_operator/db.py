"""The demo operator's subscriber database (SQLite, stdlib sqlite3): schema, seed data, queries.

Created and seeded on first use. One short-lived connection per operation, so hooks can run in
worker threads of several calls at once; writes are single UPDATE/INSERT statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ivr.errors import StorageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    msisdn      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    lang        TEXT NOT NULL,
    balance     REAL NOT NULL,
    currency    TEXT NOT NULL,
    tariff      TEXT NOT NULL,
    data_left   REAL NOT NULL,          -- gigabytes
    roaming     INTEGER NOT NULL DEFAULT 0,
    blocked     INTEGER NOT NULL DEFAULT 0,
    is_default  INTEGER NOT NULL DEFAULT 0  -- who an unknown caller is, per language
);
CREATE TABLE IF NOT EXISTS operations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    msisdn      TEXT NOT NULL,
    kind        TEXT NOT NULL,          -- top_up, tariff_change, addon, share_out, share_in, block, ...
    detail      TEXT NOT NULL DEFAULT ''
);
"""

# msisdn, name, lang, balance, currency, tariff, data_left, roaming, is_default
SEED = [
    ("+15550100", "Alex Smith", "en", 12.5, "USD", "smart", 3.5, 0, 1),
    ("+15550101", "Jamie Lee", "en", 48.0, "USD", "unlimited", 0.0, 1, 0),
    ("+79160000001", "Иван Петров", "ru", 350.0, "RUB", "basic", 2.0, 0, 1),
    ("+79160000002", "Анна Смирнова", "ru", 1200.0, "RUB", "smart", 12.0, 1, 0),
    ("+821012345678", "김민준", "ko", 15000.0, "KRW", "smart", 4.0, 0, 1),
]

# tariff code -> (data GB per month, 0 = unlimited; monthly price per currency)
TARIFFS: dict[str, tuple[float, dict[str, float]]] = {
    "basic": (5, {"USD": 10, "RUB": 300, "KRW": 15000}),
    "smart": (20, {"USD": 25, "RUB": 600, "KRW": 35000}),
    "unlimited": (0, {"USD": 45, "RUB": 1000, "KRW": 60000}),
}
ADDON_PRICE_PER_GB = {"USD": 2, "RUB": 100, "KRW": 3000}
ADDON_SIZES_GB = (1, 2, 3, 5, 10)
MAX_TOP_UP = {"USD": 500, "RUB": 50000, "KRW": 500000}


@dataclass(frozen=True)
class Subscriber:
    msisdn: str
    name: str
    lang: str
    balance: float
    currency: str
    tariff: str
    data_left: float
    roaming: bool
    blocked: bool


def _subscriber(row: tuple) -> Subscriber:
    msisdn, name, lang, balance, currency, tariff, data_left, roaming, blocked = row
    return Subscriber(msisdn, name, lang, balance, currency, tariff, data_left, bool(roaming), bool(blocked))


class OperatorDb:
    """The subscriber database at `path` (created and seeded if missing)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(SCHEMA)
                if db.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == 0:
                    db.executemany(
                        "INSERT INTO subscribers (msisdn, name, lang, balance, currency, tariff, data_left,"
                        " roaming, is_default) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", SEED)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"demo operator DB {self.path} cannot be created: {exc}",
                               fix="check settings.paths.data (IVR_DATA_DIR) is writable") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            with db:  # commit on success, roll back on error
                yield db
        finally:
            db.close()

    def find(self, caller_id: str, lang: str = "en") -> Subscriber:
        """The subscriber calling from `caller_id`, or the default demo subscriber of `lang`."""
        digits = "".join(ch for ch in caller_id if ch.isdigit())
        with self._connect() as db:
            row = None
            if digits:
                row = db.execute(
                    "SELECT msisdn, name, lang, balance, currency, tariff, data_left, roaming, blocked"
                    " FROM subscribers WHERE replace(msisdn, '+', '') = ?", (digits,)).fetchone()
            if row is None:
                row = db.execute(
                    "SELECT msisdn, name, lang, balance, currency, tariff, data_left, roaming, blocked"
                    " FROM subscribers WHERE is_default = 1 ORDER BY lang = ? DESC, lang = 'en' DESC LIMIT 1",
                    (lang,)).fetchone()
        return _subscriber(row)

    def find_number(self, msisdn: str) -> Subscriber | None:
        """A subscriber by number, matching on the last 10 digits (so 8916..., +7916... and 916... agree)."""
        digits = "".join(ch for ch in msisdn if ch.isdigit())
        if len(digits) < 7:
            return None
        with self._connect() as db:
            for row in db.execute("SELECT msisdn, name, lang, balance, currency, tariff, data_left, roaming, "
                                  "blocked FROM subscribers"):
                own = "".join(ch for ch in row[0] if ch.isdigit())
                if own[-10:] == digits[-10:]:
                    return _subscriber(row)
        return None

    def update(self, msisdn: str, kind: str, detail: str = "", **fields: float | str | int) -> None:
        """Set `fields` of a subscriber and log the operation, in one transaction."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._connect() as db:
            if fields:
                db.execute(f"UPDATE subscribers SET {assignments} WHERE msisdn = ?",  # noqa: S608 - names are ours
                           (*fields.values(), msisdn))
            db.execute("INSERT INTO operations (msisdn, kind, detail) VALUES (?, ?, ?)", (msisdn, kind, detail))

    def operations(self, msisdn: str | None = None) -> list[tuple[str, str, str]]:
        """(msisdn, kind, detail) of logged operations, oldest first."""
        with self._connect() as db:
            if msisdn:
                rows = db.execute("SELECT msisdn, kind, detail FROM operations WHERE msisdn = ? ORDER BY id",
                                  (msisdn,))
            else:
                rows = db.execute("SELECT msisdn, kind, detail FROM operations ORDER BY id")
            return [tuple(r) for r in rows]
