"""The embedded metadata store: one SQLite file, safe for several processes.

WAL journal (readers never block the writer, https://sqlite.org/wal.html), a busy
timeout for writers that meet another process's write lock, and every call run
on one private thread per store (sqlite3 connections are not shared between
threads), so the event loop never blocks on disk. ``publish`` is a single
``BEGIN IMMEDIATE`` transaction: readers see the old index or the new one, never
a mix.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from metadata.jobs import AlreadyExists, Job, JobRequest, StaleJob
from metadata.models import Asset, JobState, Rendition, Segment
from metadata.sqlite_side import SQLiteThread

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
    version INTEGER NOT NULL,
    current_job TEXT NOT NULL DEFAULT ''
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
    name TEXT NOT NULL DEFAULT '',
    is_default INTEGER NOT NULL DEFAULT 0,
    forced INTEGER NOT NULL DEFAULT 0,
    characteristics TEXT NOT NULL DEFAULT '',
    presentation_offset INTEGER NOT NULL DEFAULT 0,
    encryption TEXT NOT NULL DEFAULT '',
    key_id TEXT NOT NULL DEFAULT '',
    tiles TEXT NOT NULL DEFAULT '',
    vmaf REAL NOT NULL DEFAULT 0,
    analysis TEXT NOT NULL DEFAULT '',
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
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    asset_id TEXT NOT NULL,
    request TEXT NOT NULL,
    master TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL,
    error TEXT,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    lease_holder TEXT,
    lease_expires REAL NOT NULL,
    not_before REAL NOT NULL,
    queue TEXT NOT NULL,
    chunks TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_asset ON jobs (asset_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
"""

_ASSET_COLS = (
    "id, state, progress, error, duration, source_name, created_at, updated_at, version,"
    " current_job"
)
_ASSET_SLOTS = ",".join("?" * 10)
_JOB_COLS = (
    "id, asset_id, request, master, state, progress, error, attempt, max_attempts,"
    " lease_holder, lease_expires, not_before, queue, chunks, created_at, updated_at, rev"
)
_JOB_SLOTS = ",".join("?" * 17)
_REND_COLS = (
    "asset_id, id, kind, codec, codec_string, timescale, bitrate, avg_bitrate, peak_bitrate,"
    " width, height, sar, frame_rate, sample_rate, channels, language, name, is_default,"
    " forced, characteristics, presentation_offset, encryption, key_id, tiles, vmaf,"
    " analysis"
)
# Catalogue columns added after the first schema: (name, DDL) for files made before.
_REND_ADDED = (
    ("name", "TEXT NOT NULL DEFAULT ''"), ("is_default", "INTEGER NOT NULL DEFAULT 0"),
    ("forced", "INTEGER NOT NULL DEFAULT 0"), ("characteristics", "TEXT NOT NULL DEFAULT ''"),
    ("presentation_offset", "INTEGER NOT NULL DEFAULT 0"),
    ("encryption", "TEXT NOT NULL DEFAULT ''"), ("key_id", "TEXT NOT NULL DEFAULT ''"),
    ("tiles", "TEXT NOT NULL DEFAULT ''"),
    ("vmaf", "REAL NOT NULL DEFAULT 0"), ("analysis", "TEXT NOT NULL DEFAULT ''"),
)


def _asset(row: tuple[Any, ...]) -> Asset:
    return Asset(
        id=row[0], state=JobState(row[1]), progress=row[2], error=row[3], duration=row[4],
        source_name=row[5], created_at=row[6], updated_at=row[7], version=row[8],
        current_job=row[9],
    )


def _asset_row(a: Asset) -> tuple[Any, ...]:
    return (
        a.id, str(a.state), a.progress, a.error, a.duration, a.source_name,
        a.created_at, a.updated_at, a.version, a.current_job,
    )


def _rendition(row: tuple[Any, ...]) -> Rendition:
    r = Rendition(*row[:16])
    (r.name, default, forced, r.characteristics, r.presentation_offset, r.encryption,
     r.key_id, r.tiles, r.vmaf, r.analysis) = row[16:]
    r.default, r.forced = bool(default), bool(forced)
    return r


def _job(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0], asset_id=row[1], request=JobRequest.from_json(row[2]), master=row[3],
        state=JobState(row[4]), progress=row[5], error=row[6], attempt=row[7],
        max_attempts=row[8], lease_holder=row[9], lease_expires=row[10], not_before=row[11],
        queue=row[12], chunks=json.loads(row[13]), created_at=row[14], updated_at=row[15],
        rev=row[16],
    )


def _job_row(j: Job, rev: int) -> tuple[Any, ...]:
    return (
        j.id, j.asset_id, j.request.to_json(), j.master, str(j.state), j.progress, j.error,
        j.attempt, j.max_attempts, j.lease_holder, j.lease_expires, j.not_before, j.queue,
        json.dumps(j.chunks, separators=(",", ":")), j.created_at, j.updated_at, rev,
    )


def _mirror(conn: sqlite3.Connection, job: Job) -> None:
    """The asset shows its current job's state (docs/jobs.md). A published asset
    keeps READY: only publish() makes or unmakes that."""
    conn.execute(
        "UPDATE assets SET state = ?, progress = ?, error = ?, updated_at = ?"
        " WHERE id = ? AND current_job = ? AND state != 'ready'",
        (str(job.state), job.progress, job.error, job.updated_at, job.asset_id, job.id),
    )


class SQLiteStore(SQLiteThread):
    """MetadataStore over one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        # FULL: in WAL mode every commit syncs the WAL, so a publish that was
        # acknowledged survives a power cut too; NORMAL would survive only an
        # application crash (sqlite.org/pragma.html#pragma_synchronous).
        super().__init__(path, name="metadata", synchronous="FULL", schema=_SCHEMA,
                         busy_timeout_s=busy_timeout_s)

    # -- plumbing ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        conn = super()._connect()
        try:
            self._migrate(conn)
        except BaseException:  # next use opens afresh and migrates again
            self._conn = None
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Files made before jobs were records of their own lack assets.current_job."""
        cols = {row[1] for row in conn.execute("PRAGMA table_info(assets)")}
        if "current_job" not in cols:
            conn.execute("ALTER TABLE assets ADD COLUMN current_job TEXT NOT NULL DEFAULT ''")
        have = {row[1] for row in conn.execute("PRAGMA table_info(renditions)")}
        for name, ddl in _REND_ADDED:
            if name not in have:
                conn.execute(f"ALTER TABLE renditions ADD COLUMN {name} {ddl}")

    async def open(self) -> SQLiteStore:
        """Create the file and schema now (done on first use otherwise)."""
        await self._run(lambda conn: None)
        return self

    # -- MetadataStore ------------------------------------------------------------
    async def put_asset(self, asset: Asset) -> None:
        row = _asset_row(asset)

        def go(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO assets ({_ASSET_COLS}) VALUES ({_ASSET_SLOTS})", row
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
        job: Job | None = None,
    ) -> None:
        """One transaction: replace renditions and segments, mark READY, bump the
        version (to one more than both the stored and the given version), and, with
        ``job``, finish that job READY (compare-and-set on its rev: StaleJob, and
        nothing published, when another process took the job over). Updates
        ``asset`` (state, progress, error, version, updated_at) and ``job`` in place."""
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
             r.sample_rate, r.channels, r.language, r.name, int(r.default), int(r.forced),
             r.characteristics, r.presentation_offset, r.encryption, r.key_id, r.tiles,
             r.vmaf, r.analysis)
            for i, r in enumerate(renditions)
        ]
        seg_rows = [
            (s.asset_id, s.rendition_id, s.number, s.start, s.duration, s.size, s.iframe_size)
            for s in segments
        ]

        finished = None
        if job is not None:
            finished = replace(job, state=JobState.READY, progress=1.0, error=None,
                               lease_holder=None, updated_at=time.time())

        def go(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if job is not None and finished is not None and not self._cas_job(
                        conn, finished, job.rev):
                    raise StaleJob(f"job {job.id} was taken over by another process")
                row = conn.execute(
                    "SELECT version FROM assets WHERE id = ?", (asset.id,)
                ).fetchone()
                version = max(asset.version, row[0] if row else 0) + 1
                conn.execute("DELETE FROM segments WHERE asset_id = ?", (asset.id,))
                conn.execute("DELETE FROM renditions WHERE asset_id = ?", (asset.id,))
                conn.executemany(
                    "INSERT INTO renditions (asset_id, ord, id, kind, codec, codec_string,"
                    " timescale, bitrate, avg_bitrate, peak_bitrate, width, height, sar,"
                    " frame_rate, sample_rate, channels, language, name, is_default, forced,"
                    " characteristics, presentation_offset, encryption, key_id, tiles, vmaf,"
                    f" analysis) VALUES ({','.join('?' * 27)})",
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
                    current_job=job.id if job is not None else asset.current_job,
                )
                conn.execute(
                    f"INSERT OR REPLACE INTO assets ({_ASSET_COLS}) VALUES ({_ASSET_SLOTS})",
                    _asset_row(published),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            asset.updated_at = published.updated_at
            return version

        asset.version = await self._run(go)
        if job is not None and finished is not None:
            job.__dict__.update(finished.__dict__)
            job.rev += 1
        asset.current_job = job.id if job is not None else asset.current_job
        asset.state = JobState.READY
        asset.progress = 1.0
        asset.error = None

    async def get_renditions(self, asset_id: str) -> list[Rendition]:
        def go(conn: sqlite3.Connection) -> list[Rendition]:
            rows = conn.execute(
                f"SELECT {_REND_COLS} FROM renditions WHERE asset_id = ? ORDER BY ord",
                (asset_id,),
            ).fetchall()
            return [_rendition(r) for r in rows]

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
                conn.execute("DELETE FROM jobs WHERE asset_id = ?", (asset_id,))
                gone = conn.execute("DELETE FROM assets WHERE id = ?", (asset_id,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone > 0

        return await self._run(go)

    # -- jobs ---------------------------------------------------------------------
    @staticmethod
    def _cas_job(conn: sqlite3.Connection, job: Job, expect_rev: int) -> bool:
        cur = conn.execute(
            f"UPDATE jobs SET ({_JOB_COLS}) = ({_JOB_SLOTS}) WHERE id = ? AND rev = ?",
            (*_job_row(job, expect_rev + 1), job.id, expect_rev),
        )
        if cur.rowcount == 0:
            return False
        _mirror(conn, job)
        return True

    async def create_job(self, asset: Asset, job: Job) -> None:
        """Record a new asset (or a failed one anew) with its first job, atomically.
        AlreadyExists when the id holds a READY asset or a job still running: of
        concurrent submits of one id exactly one gets through."""
        asset.current_job = job.id
        asset.state, asset.progress, asset.error = job.state, job.progress, job.error

        def go(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT state FROM assets WHERE id = ?",
                                   (asset.id,)).fetchone()
                if row is not None and row[0] != "failed":
                    raise AlreadyExists(f"asset {asset.id} exists ({row[0]})")
                busy = conn.execute(
                    "SELECT id FROM jobs WHERE asset_id = ? AND state NOT IN ('ready','failed')",
                    (asset.id,)).fetchone()
                if busy is not None:
                    raise AlreadyExists(f"asset {asset.id} has a job running ({busy[0]})")
                conn.execute(
                    f"INSERT OR REPLACE INTO assets ({_ASSET_COLS}) VALUES ({_ASSET_SLOTS})",
                    _asset_row(asset))
                conn.execute(f"INSERT INTO jobs ({_JOB_COLS}) VALUES ({_JOB_SLOTS})",
                             _job_row(job, job.rev))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(go)

    async def get_job(self, job_id: str) -> Job | None:
        def go(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
            return None if row is None else _job(row)

        return await self._run(go)

    async def list_jobs(self, *, states: Sequence[JobState] | None = None,
                        asset_id: str | None = None, limit: int = 1000) -> list[Job]:
        """Jobs, oldest first, filtered by state and asset."""
        where: list[str] = []
        args: list[object] = []
        if states is not None:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(str(s) for s in states)
        if asset_id is not None:
            where.append("asset_id = ?")
            args.append(asset_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def go(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLS} FROM jobs {clause} ORDER BY created_at, id LIMIT ?",
                (*args, max(0, limit))).fetchall()
            return [_job(r) for r in rows]

        return await self._run(go)

    async def write_job(self, job: Job) -> bool:
        """Compare-and-set: store ``job`` if the stored rev is ``job.rev`` (then bump
        job.rev and mirror its state onto the asset); False if another write came
        first (the caller re-reads, or has lost its lease)."""
        job.updated_at = time.time()
        expect = job.rev

        def go(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ok = self._cas_job(conn, job, expect)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return ok

        ok = await self._run(go)
        if ok:
            job.rev = expect + 1
        return ok

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

