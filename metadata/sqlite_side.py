"""Opening a connection to the SQLite metadata file: the one place that sets its
journal mode, busy timeout and durability, for the metadata store and for the
stores that keep tables of their own in the same file (grants, content keys,
webhooks, watch events)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def ensure_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    """WAL mode is stored in the file, so it is set once. Switching needs an
    exclusive lock and SQLite answers BUSY at once, without the busy handler, when
    another process opens the fresh file at the same moment (seen: `cdlc ingest`
    and `cdlc status` started together): retry until the busy timeout."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def open_connection(path: Path, *, busy_timeout_s: float, synchronous: str, schema: str,
                    check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, the busy
    timeout, ``synchronous`` (FULL: a commit survives a power cut; NORMAL: an
    application crash), and ``schema`` run (CREATE ... IF NOT EXISTS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=check_same_thread)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    ensure_wal(conn, busy_timeout_s)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.executescript(schema)
    return conn
