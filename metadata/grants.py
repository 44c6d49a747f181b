"""Playback grants: who was given playback of which asset, why, and until when.

A grant is recorded when the platform API issues playback URLs (gRPC
PlaybackService.IssuePlayback): the viewer, the platform's entitlement (kind and
reference: an order, booking or subscription id), the height limit and client
address the URLs carry, and the issue and expiry times. The record is the audit
trail and, later, what playback checks a grant against (max_height).

Two implementations of ``GrantStore``, chosen by the same URL as the metadata
store (``CDLC_METADATA``, see ``open_grants``):

- SQLite: a table of its own (``grants``) in the same ``metadata.db`` file,
  through a connection of its own on a private thread (sqlite3 connections are
  not shared between threads; the file is in WAL mode, so this writer and the
  metadata store's never block each other's readers). Writes are group
  commits: grants put while a commit is on disk go together in the next
  transaction, so concurrent issuers share one fsync (``synchronous = FULL``:
  a grant acknowledged is on disk) instead of queueing one each. Under
  concurrency (the last commit carried more than one grant) the next commit
  waits ``linger_seconds`` (2 ms) for more to join, as PostgreSQL's
  commit_delay does: a commit takes ~0.3 ms here, so without the wait each one
  carried one or two grants and the commits, not the calls, used the CPU
  (IssuePlayback at 64 concurrent calls: 2,641 -> 3,664 req/s). A lone issuer
  does not wait.
- ScyllaDB: two tables, ``grants`` by id and ``grants_by_asset`` clustered by id
  (ids sort by issue time), for one-partition paged listing per asset. The driver
  is imported only when this store is used.

Grant ids sort by issue time: 12 hex digits of milliseconds, then 8 random hex
digits; a page is "ids after the last one seen". Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from metadata.sqlite_side import SQLiteThread

ENTITLEMENT_KINDS = ("purchase", "rental", "subscription")
LINGER_SECONDS = 0.002  # how long a commit under concurrency waits for more grants


@dataclass(frozen=True)
class Grant:
    id: str
    asset_id: str
    viewer_id: str
    entitlement_kind: str            # one of ENTITLEMENT_KINDS
    entitlement_reference: str       # the platform's order / booking / subscription id
    max_height: int                  # 0: no limit
    client_ip: str                   # "": the token is not bound to an address
    issued_at: float                 # Unix seconds
    expires_at: float                # Unix seconds


def new_grant_id(now: float | None = None) -> str:
    """A grant id that sorts by issue time (module docstring)."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{os.urandom(4).hex()}"  # secrets.token_hex, one call not three


_COLS = tuple(f.name for f in fields(Grant))


def _row(grant: Grant) -> tuple[Any, ...]:
    # Not dataclasses.astuple: it deep-copies every field, a tenth of an
    # IssuePlayback call's time on the loop.
    return tuple(getattr(grant, c) for c in _COLS)


class GrantStore(Protocol):
    async def put(self, grant: Grant) -> None:
        """Record a grant (ids are unique; a second put of an id replaces it)."""

    async def get(self, grant_id: str) -> Grant | None: ...

    async def list_for_asset(self, asset_id: str, *, limit: int = 50,
                             after: str | None = None) -> list[Grant]:
        """An asset's grants ordered by id (issue time), after ``after``."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    asset_id TEXT NOT NULL,
    viewer_id TEXT NOT NULL,
    entitlement_kind TEXT NOT NULL,
    entitlement_reference TEXT NOT NULL,
    max_height INTEGER NOT NULL,
    client_ip TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_by_asset ON grants (asset_id, id);
-- {len(_COLS)} columns, in Grant's field order
"""


class SQLiteGrants(SQLiteThread):
    """GrantStore in the metadata SQLite file (module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0,
                 linger_seconds: float = LINGER_SECONDS) -> None:
        super().__init__(path, name="grants", synchronous="FULL", schema=_SCHEMA,
                         busy_timeout_s=busy_timeout_s)
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._linger = linger_seconds
        self._last_batch = 0  # grants in the last commit: >1 means concurrent issuers

    async def put(self, grant: Grant) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((_row(grant), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # A cancelled caller cancels only its own future: the batch skips it (done()
        # is then true) and still commits its row.
        await done

    async def _flush(self) -> None:
        """Commit what is pending, batch after batch, until nothing is."""
        sql = (f"INSERT OR REPLACE INTO grants ({', '.join(_COLS)}) "
               f"VALUES ({', '.join('?' * len(_COLS))})")
        while self._pending:
            if self._last_batch > 1 and self._linger > 0:
                await asyncio.sleep(self._linger)
            batch, self._pending = self._pending, []
            self._last_batch = len(batch)
            rows = [row for row, _ in batch]

            def write(conn: sqlite3.Connection, rows: list[tuple[Any, ...]] = rows) -> None:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(sql, rows)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

            try:
                await self._run(write)
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def get(self, grant_id: str) -> Grant | None:
        def go(conn: sqlite3.Connection) -> Grant | None:
            row = conn.execute(f"SELECT {', '.join(_COLS)} FROM grants WHERE id = ?",
                               (grant_id,)).fetchone()
            return Grant(*row) if row else None

        return await self._run(go)

    async def list_for_asset(self, asset_id: str, *, limit: int = 50,
                             after: str | None = None) -> list[Grant]:
        def go(conn: sqlite3.Connection) -> list[Grant]:
            rows = conn.execute(
                f"SELECT {', '.join(_COLS)} FROM grants WHERE asset_id = ? AND id > ?"
                " ORDER BY id LIMIT ?", (asset_id, after or "", limit)).fetchall()
            return [Grant(*row) for row in rows]

        return await self._run(go)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1 FROM grants LIMIT 1").fetchall())

    async def close(self) -> None:
        if self._closed:
            return
        if self._flusher is not None:
            await asyncio.wait([self._flusher])  # grants put before close are written
        await super().close()


_SCYLLA_DDL = (
    "id text, asset_id text, viewer_id text, entitlement_kind text,"
    " entitlement_reference text, max_height int, client_ip text, issued_at double,"
    " expires_at double"
)


class ScyllaGrants:
    """GrantStore on ScyllaDB (module docstring); LOCAL_QUORUM reads and writes."""

    def __init__(self, hosts: Sequence[str], keyspace: str, *, port: int = 9042,
                 replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}",
                 local_dc: str | None = None) -> None:
        self.hosts, self.keyspace, self.port = list(hosts), keyspace, port
        self._replication, self._local_dc = replication, local_dc
        self._cluster: Any = None
        self._session: Any = None
        self._ps: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> ScyllaGrants:
        async with self._lock:
            if self._session is None:
                await asyncio.get_running_loop().run_in_executor(None, self._connect)
        return self

    def _connect(self) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(
                local_dc=self._local_dc)),
            consistency_level=ConsistencyLevel.LOCAL_QUORUM, request_timeout=10)
        self._cluster = Cluster(self.hosts, port=self.port, protocol_version=4,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        session = self._cluster.connect()
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
                        f"{self._replication}")
        session.set_keyspace(self.keyspace)
        session.execute(f"CREATE TABLE IF NOT EXISTS grants ({_SCYLLA_DDL}, PRIMARY KEY (id))")
        session.execute(f"CREATE TABLE IF NOT EXISTS grants_by_asset ({_SCYLLA_DDL},"
                        " PRIMARY KEY (asset_id, id)) WITH CLUSTERING ORDER BY (id ASC)")
        cols, slots = ", ".join(_COLS), ", ".join("?" * len(_COLS))
        self._ps = {
            "put": session.prepare(f"INSERT INTO grants ({cols}) VALUES ({slots})"),
            "put_by_asset": session.prepare(
                f"INSERT INTO grants_by_asset ({cols}) VALUES ({slots})"),
            "get": session.prepare(f"SELECT {cols} FROM grants WHERE id = ?"),
            "list": session.prepare(
                f"SELECT {cols} FROM grants_by_asset WHERE asset_id = ? AND id > ? LIMIT ?"),
            "ping": session.prepare("SELECT id FROM grants LIMIT 1"),
        }
        self._session = session

    async def _exec(self, name: str, params: Sequence[Any]) -> Any:
        if self._session is None:
            await self.open()
        from metadata.scylla_store import execute_async

        return await execute_async(self._session, self._ps[name], params)

    @staticmethod
    def _grant(row: Any) -> Grant:
        return Grant(*(getattr(row, c) for c in _COLS))

    async def put(self, grant: Grant) -> None:
        row = _row(grant)
        await asyncio.gather(self._exec("put", row), self._exec("put_by_asset", row))

    async def get(self, grant_id: str) -> Grant | None:
        rows = list(await self._exec("get", [grant_id]))
        return self._grant(rows[0]) if rows else None

    async def list_for_asset(self, asset_id: str, *, limit: int = 50,
                             after: str | None = None) -> list[Grant]:
        rows = await self._exec("list", [asset_id, after or "", limit])
        return [self._grant(r) for r in rows]

    async def ping(self) -> None:
        await self._exec("ping", [])

    async def close(self) -> None:
        if self._cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._cluster.shutdown)
            self._cluster = None
            self._session = None


def open_grants(url: str, data_dir: Path) -> GrantStore:
    """The grant store beside the metadata store named by ``url`` (CDLC_METADATA):
    ``""`` or ``sqlite:///path.db``: that SQLite file (default
    ``data_dir/metadata.db``); ``scylla://h1,h2[:port]/keyspace``: that keyspace."""
    if url == "" or url.startswith("sqlite:"):
        path = Path(data_dir) / "metadata.db"
        if url:
            path = Path(url.removeprefix("sqlite://"))
            if not path.is_absolute():
                raise ValueError(f"expected sqlite:///absolute/path.db, got {url!r}")
        return SQLiteGrants(path)
    if url.startswith("scylla://"):
        from metadata.scylla_store import parse_url

        hosts, port, keyspace = parse_url(url)
        return ScyllaGrants(hosts, keyspace, port=port)
    raise ValueError(f"unknown metadata store URL {url!r} (sqlite:// or scylla://)")


__all__ = ["ENTITLEMENT_KINDS", "Grant", "GrantStore", "SQLiteGrants", "ScyllaGrants",
           "new_grant_id", "open_grants"]
