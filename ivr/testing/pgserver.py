"""A throwaway PostgreSQL server for tests and benchmarks (not for production).

`TempPostgres` runs initdb into a temporary directory and starts the server on a free
loopback port with its unix socket in that directory; `stop()`/`start()` restart it in
place (same data, same port) and `close()` removes everything. Run as root, the server
runs as the `postgres` user (initdb refuses root) through `runuser`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from ivr.errors import StorageError

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
START_TIMEOUT_S = 30


def find_pg_bin() -> Path | None:
    """The directory holding initdb/pg_ctl (newest Debian install, or on PATH), or None."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent

    def major(path: str) -> int:  # /usr/lib/postgresql/15/bin -> 15
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    for candidate in sorted(glob.glob(PG_BIN_GLOB), key=major, reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TempPostgres:
    """initdb + pg_ctl in a temp dir; `url` is a SQLAlchemy URL for the `postgres` database."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise StorageError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found",
                fix="apt-get install postgresql",
            )
        self.bin_dir: Path = found
        self.root = Path(tempfile.mkdtemp(prefix="ivr-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]
            shutil.chown(self.root, SERVER_USER)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        except StorageError:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """CREATE a fresh, empty database on this server and return its URL (one per test)."""
        import uuid

        import sqlalchemy as sa

        name = f"t_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"  # throwaway data: speed over durability
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`mode` fast: roll back open transactions; immediate: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        result = subprocess.run(
            [*self._as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
        )
        return result.returncode == 0

    def close(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._as_user, str(self.bin_dir / tool), *args]
        if not (self.bin_dir / tool).exists():
            raise StorageError(f"{tool} not found in {self.bin_dir}", fix="apt-get install postgresql")
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            log_tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise StorageError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
                + (f"\n{log_tail}" if log_tail else ""),
                fix="see the PostgreSQL server log above",
            )
