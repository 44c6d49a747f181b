"""EventLog in the SQLite file of the metadata store (the embedded default).

One table of its own, ``watch_events``, in metadata.db through a connection of its
own on one private thread (as metadata/webhooks.py does). The cursor is the row's
``seq`` (INTEGER PRIMARY KEY AUTOINCREMENT: never reused, so a cursor stays
meaningful after trimming). Dedupe is the UNIQUE ``event_id``: ``INSERT OR
IGNORE`` records an event once for as long as its row is retained, which is at
least ``dedupe_seconds`` unless ``max_events`` pushes it out first.

Readers in this process are woken by appends; other processes sharing the file
are seen by polling every ``poll_seconds``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from metadata.event_log import AppendResult, LoggedEvent, Retention, WatchEvent
from metadata.sqlite_side import SQLiteThread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watch_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    recorded_at REAL NOT NULL,
    body TEXT NOT NULL
);
"""

# Trim once per this many appended rows (a DELETE per append would double the cost).
_TRIM_EVERY = 1000
# Rows per INSERT statement (3 parameters each; SQLite allows 32766 since 3.32).
_ROWS_PER_INSERT = 500


class SQLiteEventLog(SQLiteThread):
    """The SQLite EventLog (module docstring)."""

    def __init__(self, path: Path, *, retention: Retention | None = None,
                 busy_timeout_s: float = 30.0, poll_seconds: float = 0.2) -> None:
        # Watch events are telemetry: a power cut may lose the last commit
        # (WAL + NORMAL stays consistent), which buys ~10x the append rate.
        super().__init__(path, name="events", synchronous="NORMAL", schema=_SCHEMA,
                         busy_timeout_s=busy_timeout_s)
        self.retention = retention or Retention()
        self._poll = poll_seconds
        self._since_trim = 0
        self._pending: list[tuple[list[WatchEvent], asyncio.Future[AppendResult]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._appended = asyncio.Event()

    async def append(self, events: Sequence[WatchEvent]) -> AppendResult:
        """Group commit: appends that arrive while a transaction is being written
        go together into the next one (one fsync-free COMMIT for many requests)."""
        if not events:
            return AppendResult(0, 0)
        done: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append((list(events), done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())
        return await done

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    added = await self._run(partial(self._write, batches=[b for b, _ in batch]))
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (events, done), new in zip(batch, added, strict=True):
                    if not done.done():
                        done.set_result(AppendResult(len(new), len(events) - len(new),
                                                     tuple(new)))
                if any(added):
                    self._appended.set()
                    self._appended = asyncio.Event()
        finally:
            self._writer = None

    def _write(self, c: sqlite3.Connection, batches: list[list[WatchEvent]],
               ) -> list[list[LoggedEvent]]:
        now = time.time()
        out: list[list[LoggedEvent]] = []
        c.execute("BEGIN IMMEDIATE")
        try:
            for events in batches:
                added: list[LoggedEvent] = []
                for i in range(0, len(events), _ROWS_PER_INSERT):
                    chunk = events[i:i + _ROWS_PER_INSERT]
                    # One multi-row INSERT ... RETURNING (SQLite >= 3.35) per chunk:
                    # the rows it returns are the new ones (a repeat is IGNOREd).
                    rows = c.execute(
                        "INSERT OR IGNORE INTO watch_events (event_id, recorded_at, body)"
                        " VALUES " + ",".join(["(?,?,?)"] * len(chunk)) +
                        " RETURNING seq, event_id",
                        [v for e in chunk for v in (e.event_id, now, e.to_json())],
                    ).fetchall()
                    if len(rows) == len(chunk):
                        added += (LoggedEvent(str(seq), e)
                                  for (seq, _id), e in zip(sorted(rows), chunk, strict=True))
                    else:
                        by_id = {event_id: seq for seq, event_id in rows}
                        seen: set[str] = set()
                        for e in chunk:      # an id twice in one chunk: its first
                            if e.event_id in by_id and e.event_id not in seen:
                                seen.add(e.event_id)
                                added.append(LoggedEvent(str(by_id[e.event_id]), e))
                out.append(added)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self._since_trim += sum(len(a) for a in out)
        if self._since_trim >= _TRIM_EVERY:
            self._since_trim = 0
            self._trim(c, now)
        return out

    def _trim(self, c: sqlite3.Connection, now: float) -> None:
        keep = self.retention
        # Rows are appended in time order: everything before the first row still
        # within retention goes. Found by walking the primary key from the oldest
        # row, which stops at once when nothing has expired; a plain
        # `WHERE recorded_at < ?` scanned the whole table (recorded_at has no
        # index) every _TRIM_EVERY rows: measured 34 ms at 300k rows, more than
        # the appends it followed. (After a clock step back, a few expired rows
        # may outlive a newer one until it expires too.)
        c.execute("DELETE FROM watch_events WHERE seq < COALESCE("
                  "(SELECT seq FROM watch_events WHERE recorded_at >= ? ORDER BY seq LIMIT 1),"
                  " (SELECT MAX(seq) + 1 FROM watch_events))",
                  (now - keep.retention_seconds,))
        c.execute("DELETE FROM watch_events WHERE seq <= "
                  "(SELECT MAX(seq) FROM watch_events) - ?", (keep.max_events,))

    async def trim(self) -> None:
        """Apply the retention now (it runs every few appends anyway)."""
        await self._run(lambda c: self._trim(c, time.time()))

    async def read(self, after: str, limit: int = 500, wait: float = 0.0,
                   ) -> list[LoggedEvent]:
        start = int(after) if after else 0
        deadline = time.monotonic() + wait

        def go(c: sqlite3.Connection) -> list[LoggedEvent]:
            rows = c.execute("SELECT seq, body FROM watch_events WHERE seq > ?"
                             " ORDER BY seq LIMIT ?", (start, limit)).fetchall()
            return [LoggedEvent(str(seq), WatchEvent.from_json(body)) for seq, body in rows]

        while True:
            woken = self._appended
            found = await self._run(go)
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            try:
                await asyncio.wait_for(woken.wait(), min(left, self._poll))
            except TimeoutError:
                pass

    async def head(self) -> str:
        row = await self._run(lambda c: c.execute(
            "SELECT MAX(seq) FROM watch_events").fetchone())
        return str(row[0]) if row and row[0] is not None else ""

    async def count(self) -> int:
        row = await self._run(lambda c: c.execute(
            "SELECT COUNT(*) FROM watch_events").fetchone())
        return int(row[0])

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

