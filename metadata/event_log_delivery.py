"""Delivered bytes beside the watch-event log: what the servers sent, per asset and
per hour, next to what players reported.

Two sources add to it:

- ``origin``: the origin's own count of the 200/206 bodies of its playback routes,
  kept in memory per process (``DeliveryCounter``, no store write per request) and
  added to the ledger every few seconds and on shutdown;
- ``edge``: the nginx edge's access log, read by ``cdlc cdn ingest-log FILE``
  (cdn/access_log.py). Each log file is known by an identity (a digest of its
  first line) and the byte offset ingested so far; ``ingest`` adds a slice's
  counts and moves the offset in one atomic step, and only if the offset is still
  the one the slice started from, so a file ingested twice (or by two processes
  at once, or after it grew) counts each line once.

``DeliveryLedger`` is the interface; SQLiteDeliveryLedger keeps two tables in the
metadata file, RedisDeliveryLedger one hash per asset. ``open_delivery_ledger``
follows ``CDLC_EVENTS``: Redis when the event log is on Redis, else the SQLite
file of the data dir (with Kafka too: a Kafka topic is no counter store).
Plain data and I/O only; nothing of ours imported but the metadata package.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from metadata.sqlite_side import SQLiteThread

log = logging.getLogger(__name__)

SOURCES = ("origin", "edge")
# (asset id, Unix hour number) -> bytes
Counts = Mapping[tuple[str, int], int]


class DeliveryLedger(Protocol):
    async def add(self, source: str, counts: Counts) -> None:
        """Add bytes delivered by ``source`` (one of SOURCES)."""

    async def offset(self, file_id: str) -> int:
        """How far the log file ``file_id`` has been ingested (0: never)."""

    async def ingest(self, file_id: str, start: int, end: int, counts: Counts) -> bool:
        """Add edge bytes of the file's slice [start, end) and record ``end``, in
        one step; False (nothing changed) when the file's offset is no longer
        ``start`` (another ingest got there first)."""

    async def delivered(self, asset_id: str) -> dict[int, dict[str, int]]:
        """The asset's bytes: hour -> source -> bytes."""

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered_bytes (
    asset_id TEXT NOT NULL,
    hour INTEGER NOT NULL,
    source TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (asset_id, hour, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delivery_logs_ingested (
    file_id TEXT PRIMARY KEY,
    offset INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""

_UPSERT = ("INSERT INTO delivered_bytes (asset_id, hour, source, bytes) VALUES (?,?,?,?)"
           " ON CONFLICT (asset_id, hour, source) DO UPDATE SET bytes = bytes + excluded.bytes")


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown delivery source {source!r} (origin, edge)")


class SQLiteDeliveryLedger(SQLiteThread):
    """The ledger in the SQLite metadata file (module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__(path, name="delivery", synchronous="NORMAL", schema=_SCHEMA,
                         busy_timeout_s=busy_timeout_s)

    async def add(self, source: str, counts: Counts) -> None:
        _check_source(source)
        rows = [(a, h, source, n) for (a, h), n in counts.items() if n > 0]
        if not rows:
            return

        def go(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(_UPSERT, rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        await self._run(go)

    async def offset(self, file_id: str) -> int:
        row = await self._run(lambda c: c.execute(
            "SELECT offset FROM delivery_logs_ingested WHERE file_id = ?",
            (file_id,)).fetchone())
        return int(row[0]) if row else 0

    async def ingest(self, file_id: str, start: int, end: int, counts: Counts) -> bool:
        rows = [(a, h, "edge", n) for (a, h), n in counts.items() if n > 0]

        def go(c: sqlite3.Connection) -> bool:
            c.execute("BEGIN IMMEDIATE")  # the check and the writes under one lock
            try:
                row = c.execute("SELECT offset FROM delivery_logs_ingested WHERE file_id = ?",
                                (file_id,)).fetchone()
                if (int(row[0]) if row else 0) != start:
                    c.execute("ROLLBACK")
                    return False
                c.executemany(_UPSERT, rows)
                c.execute("INSERT INTO delivery_logs_ingested (file_id, offset, updated_at)"
                          " VALUES (?,?,?) ON CONFLICT (file_id) DO UPDATE SET"
                          " offset = excluded.offset, updated_at = excluded.updated_at",
                          (file_id, end, time.time()))
                c.execute("COMMIT")
                return True
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        return await self._run(go)

    async def delivered(self, asset_id: str) -> dict[int, dict[str, int]]:
        rows = await self._run(lambda c: c.execute(
            "SELECT hour, source, bytes FROM delivered_bytes WHERE asset_id = ?",
            (asset_id,)).fetchall())
        out: dict[int, dict[str, int]] = {}
        for hour, source, n in rows:
            out.setdefault(int(hour), {})[str(source)] = int(n)
        return out


# KEYS[1] = offsets hash; ARGV = [prefix, file_id, start, end, asset1, field1, n1, ...]
_INGEST = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if current ~= tonumber(ARGV[3]) then
  return 0
end
for i = 5, #ARGV, 3 do
  redis.call('HINCRBY', ARGV[1] .. ':delivered:' .. ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
return 1
"""


class RedisDeliveryLedger:
    """The ledger on Redis: hash ``{prefix}:delivered:{asset}`` with fields
    ``{hour}:{source}``; ingested offsets in hash ``{prefix}:ingested``. The
    ingest's check-and-add is one Lua script (atomic on the server)."""

    def __init__(self, client: Any, *, prefix: str = "cdlc:events") -> None:
        self.client = client
        self.prefix = prefix
        self.offsets = f"{prefix}:ingested"
        self._script = client.register_script(_INGEST)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, prefix: str | None = None) -> RedisDeliveryLedger:
        from metadata.event_log_redis import redis_client

        client, chosen = redis_client(url, prefix, "cdlc:events")
        return cls(client, prefix=chosen)

    async def add(self, source: str, counts: Counts) -> None:
        _check_source(source)
        pipe = self.client.pipeline(transaction=True)
        for (asset, hour), n in counts.items():
            if n > 0:
                pipe.hincrby(f"{self.prefix}:delivered:{asset}", f"{hour}:{source}", n)
        await pipe.execute()

    async def offset(self, file_id: str) -> int:
        raw = await self.client.hget(self.offsets, file_id)
        return int(raw) if raw is not None else 0

    async def ingest(self, file_id: str, start: int, end: int, counts: Counts) -> bool:
        args: list[Any] = [self.prefix, file_id, start, end]
        for (asset, hour), n in counts.items():
            if n > 0:
                args += [asset, f"{hour}:edge", n]
        return bool(await self._script(keys=[self.offsets], args=args))

    async def delivered(self, asset_id: str) -> dict[int, dict[str, int]]:
        raw = await self.client.hgetall(f"{self.prefix}:delivered:{asset_id}")
        out: dict[int, dict[str, int]] = {}
        for key, value in raw.items():
            hour, _, source = _text(key).partition(":")
            out.setdefault(int(hour), {})[source] = int(value)
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_delivery_ledger(url: str, data_dir: Path) -> DeliveryLedger:
    """The ledger that goes with the event log ``url`` (``CDLC_EVENTS``, as
    metadata.event_log.open_event_log reads it)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisDeliveryLedger.from_url(url)
    if url.startswith("sqlite:///"):
        return SQLiteDeliveryLedger(Path(url[len("sqlite://"):]))
    if url in ("", "sqlite") or url.startswith(("sqlite:", "kafka://")):
        return SQLiteDeliveryLedger(Path(data_dir) / "metadata.db")
    raise ValueError(f"unknown event log URL {url!r} (sqlite, redis://, kafka://)")


class DeliveryCounter:
    """The origin's bytes per asset and hour, in memory until ``flush`` adds them
    to the ledger. ``count`` is a dict update: it runs once per playback response."""

    def __init__(self, ledger: DeliveryLedger, *, source: str = "origin",
                 clock: Callable[[], float] = time.time) -> None:
        _check_source(source)
        self.ledger = ledger
        self.source = source
        self.clock = clock
        self.pending: dict[tuple[str, int], int] = {}
        # Taken by a flush that has not finished: still shown by unflushed().
        self._flushing: dict[tuple[str, int], int] = {}

    def count(self, asset_id: str, nbytes: int) -> None:
        key = (asset_id, int(self.clock() // 3600))
        self.pending[key] = self.pending.get(key, 0) + nbytes

    def unflushed(self, asset_id: str) -> dict[int, int]:
        """Bytes counted but not yet in the ledger: hour -> bytes."""
        out: dict[int, int] = {}
        for part in (self._flushing, self.pending):
            for (a, h), n in part.items():
                if a == asset_id:
                    out[h] = out.get(h, 0) + n
        return out

    async def flush(self) -> None:
        """Add what was counted to the ledger; on failure it stays pending (and is
        tried again at the next flush), so an outage loses nothing."""
        if not self.pending or self._flushing:
            return
        batch = self._flushing = self.pending
        self.pending = {}
        try:
            await self.ledger.add(self.source, batch)
        except BaseException:
            for key, n in batch.items():
                self.pending[key] = self.pending.get(key, 0) + n
            raise
        finally:
            self._flushing = {}

    async def run(self, every: float) -> None:
        """Flush every ``every`` seconds until cancelled (failures logged)."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("delivered bytes: adding to the ledger failed: %s", exc)
