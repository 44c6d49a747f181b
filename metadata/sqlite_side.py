"""Opening a connection to the SQLite metadata file: the one place that sets its
journal mode, busy timeout and durability, for the metadata store and for the
stores that keep tables of their own in the same file (grants, content keys,
webhooks, watch events, delivered bytes), and the one-thread plumbing they share
(SQLiteThread)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar


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


T = TypeVar("T")


class SQLiteThread:
    """One connection to a SQLite file, used from one private thread: the plumbing
    of every store that keeps tables in the metadata file (grants, content keys,
    webhooks, watch events, delivered bytes). sqlite3 calls block, so each store
    runs them on its own thread, in order, off the event loop; the connection is
    opened there on first use (``open_connection``) and closed there by close()."""

    def __init__(self, path: Path, *, name: str, synchronous: str, schema: str,
                 busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._name = name
        self._synchronous = synchronous
        self._schema = schema
        self._busy = busy_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cdlc-{name}")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_connection(self.path, busy_timeout_s=self._busy,
                                         synchronous=self._synchronous, schema=self._schema,
                                         check_same_thread=False)
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise sqlite3.ProgrammingError(f"the {self._name} store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: fn(self._connect()))

    async def close(self) -> None:
        """Close the connection on its thread (a second close does nothing)."""
        if self._closed:
            return
        self._closed = True

        def go() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, go)
        finally:
            self._pool.shutdown(wait=True)
