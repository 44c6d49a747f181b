"""The embedded metadata store: one SQLite file, safe for several processes.

WAL journal (readers never block the writer, https://sqlite.org/wal.html), a busy
timeout for writers that meet another process's write lock, and every call run
on one private thread per store (sqlite3 connections are not shared between
threads), so the event loop never blocks on disk. ``publish`` is a single
``BEGIN IMMEDIATE`` transaction: readers see the old index or the new one, never
a mix.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from metadata.models import Asset, JobState, Rendition, Segment

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    progress REAL NOT NULL,
    error TEXT,
    duration REAL NOT NULL,
    source_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS renditions (
    asset_id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    codec TEXT NOT NULL,
    codec_string TEXT NOT NULL,
    timescale INTEGER NOT NULL,
    bitrate INTEGER NOT NULL,
    avg_bitrate INTEGER NOT NULL,
    peak_bitrate INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sar TEXT NOT NULL,
    frame_rate TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    language TEXT NOT NULL,
    PRIMARY KEY (asset_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    asset_id TEXT NOT NULL,
    rendition_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    start INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    size INTEGER NOT NULL,
    iframe_size INTEGER NOT NULL,
    PRIMARY KEY (asset_id, rendition_id, number)
) WITHOUT ROWID;
"""

_ASSET_COLS = (
    "id, state, progress, error, duration, source_name, created_at, updated_at, version"
)
_REND_COLS = (
    "asset_id, id, kind, codec, codec_string, timescale, bitrate, avg_bitrate, peak_bitrate,"
    " width, height, sar, frame_rate, sample_rate, channels, language"
)


def _asset(row: tuple[Any, ...]) -> Asset:
    return Asset(
        id=row[0], state=JobState(row[1]), progress=row[2], error=row[3], duration=row[4],
        source_name=row[5], created_at=row[6], updated_at=row[7], version=row[8],
    )


def _asset_row(a: Asset) -> tuple[Any, ...]:
    return (
        a.id, str(a.state), a.progress, a.error, a.duration, a.source_name,
        a.created_at, a.updated_at, a.version,
    )


class SQLiteStore:
    """MetadataStore over one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdlc-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # -- plumbing ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None,
                check_same_thread=True,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            self._ensure_wal(conn)
            # NORMAL is durable across application crashes in WAL mode; a power loss
            # may drop the last commits but never corrupts (sqlite.org/pragma.html).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def _ensure_wal(self, conn: sqlite3.Connection) -> None:
        """WAL mode is stored in the file, so it is set once. Switching needs an
        exclusive lock and SQLite answers BUSY at once, without the busy handler, when
        another process opens the fresh file at the same moment (seen: `cdlc ingest`
        and `cdlc status` started together): retry until the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            return fn(self._connect())

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def open(self) -> SQLiteStore:
        """Create the file and schema now (done on first use otherwise)."""
        await self._run(lambda conn: None)
        return self

    # -- MetadataStore ------------------------------------------------------------
    async def put_asset(self, asset: Asset) -> None:
        row = _asset_row(asset)

        def go(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO assets ({_ASSET_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", row
            )

        await self._run(go)

    async def get_asset(self, asset_id: str) -> Asset | None:
        def go(conn: sqlite3.Connection) -> Asset | None:
            row = conn.execute(
                f"SELECT {_ASSET_COLS} FROM assets WHERE id = ?", (asset_id,)
            ).fetchone()
            return None if row is None else _asset(row)

        return await self._run(go)

    async def list_assets(self, limit: int = 50, after: str | None = None) -> list[Asset]:
        def go(conn: sqlite3.Connection) -> list[Asset]:
            rows = conn.execute(
                f"SELECT {_ASSET_COLS} FROM assets WHERE id > ? ORDER BY id LIMIT ?",
                (after or "", max(0, limit)),
            ).fetchall()
            return [_asset(r) for r in rows]

        return await self._run(go)

    async def set_state(
        self,
        asset_id: str,
        state: JobState,
        *,
        progress: float | None = None,
        error: str | None = None,
    ) -> None:
        """Update state (and progress, error). Raises KeyError for an unknown asset.
        ``error=None`` keeps the stored reason on FAILED and clears it otherwise."""
        now = time.time()

        def go(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE assets SET state = ?, progress = COALESCE(?, progress),"
                " error = CASE WHEN ? IS NOT NULL THEN ? WHEN ? = 'failed' THEN error"
                " ELSE NULL END, updated_at = ? WHERE id = ?",
                (str(state), progress, error, error, str(state), now, asset_id),
            )
            if cur.rowcount == 0:
                raise KeyError(asset_id)

        await self._run(go)

    async def publish(
        self,
        asset: Asset,
        renditions: Sequence[Rendition],
        segments: Sequence[Segment],
    ) -> None:
        """One transaction: replace renditions and segments, mark READY, bump the
        version (to one more than both the stored and the given version). Updates
        ``asset`` in place (state, progress, error, version, updated_at)."""
        for r in renditions:
            if r.asset_id != asset.id:
                raise ValueError(f"rendition {r.id} belongs to {r.asset_id}, not {asset.id}")
        ids = {r.id for r in renditions}
        for s in segments:
            if s.asset_id != asset.id or s.rendition_id not in ids:
                raise ValueError(f"segment {s.rendition_id}/{s.number} is not of {asset.id}")
        rend_rows = [
            (r.asset_id, i, r.id, r.kind, r.codec, r.codec_string, r.timescale, r.bitrate,
             r.avg_bitrate, r.peak_bitrate, r.width, r.height, r.sar, r.frame_rate,
             r.sample_rate, r.channels, r.language)
            for i, r in enumerate(renditions)
        ]
        seg_rows = [
            (s.asset_id, s.rendition_id, s.number, s.start, s.duration, s.size, s.iframe_size)
            for s in segments
        ]

        def go(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT version FROM assets WHERE id = ?", (asset.id,)
                ).fetchone()
                version = max(asset.version, row[0] if row else 0) + 1
                conn.execute("DELETE FROM segments WHERE asset_id = ?", (asset.id,))
                conn.execute("DELETE FROM renditions WHERE asset_id = ?", (asset.id,))
                conn.executemany(
                    "INSERT INTO renditions (asset_id, ord, id, kind, codec, codec_string,"
                    " timescale, bitrate, avg_bitrate, peak_bitrate, width, height, sar,"
                    " frame_rate, sample_rate, channels, language)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rend_rows,
                )
                conn.executemany(
                    "INSERT INTO segments (asset_id, rendition_id, number, start, duration,"
                    " size, iframe_size) VALUES (?,?,?,?,?,?,?)",
                    seg_rows,
                )
                published = Asset(
                    id=asset.id, state=JobState.READY, progress=1.0, error=None,
                    duration=asset.duration, source_name=asset.source_name,
                    created_at=asset.created_at, updated_at=time.time(), version=version,
                )
                conn.execute(
                    f"INSERT OR REPLACE INTO assets ({_ASSET_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                    _asset_row(published),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            asset.updated_at = published.updated_at
            return version

        asset.version = await self._run(go)
        asset.state = JobState.READY
        asset.progress = 1.0
        asset.error = None

    async def get_renditions(self, asset_id: str) -> list[Rendition]:
        def go(conn: sqlite3.Connection) -> list[Rendition]:
            rows = conn.execute(
                f"SELECT {_REND_COLS} FROM renditions WHERE asset_id = ? ORDER BY ord",
                (asset_id,),
            ).fetchall()
            return [Rendition(*r) for r in rows]

        return await self._run(go)

    async def get_segments(self, asset_id: str, rendition_id: str) -> list[Segment]:
        def go(conn: sqlite3.Connection) -> list[Segment]:
            rows = conn.execute(
                "SELECT asset_id, rendition_id, number, start, duration, size, iframe_size"
                " FROM segments WHERE asset_id = ? AND rendition_id = ? ORDER BY number",
                (asset_id, rendition_id),
            ).fetchall()
            return [Segment(*r) for r in rows]

        return await self._run(go)

    async def delete_asset(self, asset_id: str) -> bool:
        def go(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM segments WHERE asset_id = ?", (asset_id,))
                conn.execute("DELETE FROM renditions WHERE asset_id = ?", (asset_id,))
                gone = conn.execute("DELETE FROM assets WHERE id = ?", (asset_id,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone > 0

        return await self._run(go)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """Idempotent; the store cannot be used afterwards."""
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
