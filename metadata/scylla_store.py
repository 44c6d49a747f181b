"""The metadata store at scale: ScyllaDB (or Cassandra) through scylla-driver.

Tables are shaped for the read path (one partition read per request):

- ``assets``: one row per asset; ``version`` is the published index version.
- ``asset_ids``: a single clustering list of ids, for ordered, paged listing
  (partition ``bucket = 0``; an admin listing, not on the playback path).
- ``renditions``: partition ``(asset_id, version)``, clustered by ``ord``.
- ``segments``: partition ``(asset_id, rendition_id, version)``, clustered by
  ``number``: a media playlist is one sequential partition read.

Publishing is a version switch: the new index is written under ``version + 1``
(rows invisible to readers, who read the version named by the asset row), then the
asset row is flipped with a lightweight transaction (``IF version = old``; a
concurrent publisher loses and retries); the previous version stays for readers
that read the row just before the flip, the one before it is deleted. Readers
therefore see the old index or the new one, never half of one.

Every statement is prepared; reads and writes use LOCAL_QUORUM, the LWT uses
LOCAL_SERIAL; routing is TokenAwarePolicy(DCAwareRoundRobinPolicy()).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from metadata.jobs import AlreadyExists, Job, JobRequest, StaleJob
from metadata.models import Asset, JobState, Rendition, Segment

_JOB_DDL = (
    "id text, asset_id text, request text, master text, state text, progress double,"
    " error text, attempt int, max_attempts int, lease_holder text, lease_expires double,"
    " not_before double, queue text, chunks text, created_at double, updated_at double,"
    " rev int"
)
_JOB_COLS = ", ".join(part.split()[0] for part in _JOB_DDL.split(","))

_TABLES = [
    """CREATE TABLE IF NOT EXISTS assets (
        id text PRIMARY KEY, state text, progress double, error text, duration double,
        source_name text, created_at double, updated_at double, version int,
        current_job text)""",
    """CREATE TABLE IF NOT EXISTS asset_ids (
        bucket int, id text, PRIMARY KEY (bucket, id)) WITH CLUSTERING ORDER BY (id ASC)""",
    """CREATE TABLE IF NOT EXISTS renditions (
        asset_id text, version int, ord int, id text, kind text, codec text,
        codec_string text, timescale int, bitrate bigint, avg_bitrate bigint,
        peak_bitrate bigint, width int, height int, sar text, frame_rate text,
        sample_rate int, channels int, language text, name text, is_default boolean,
        forced boolean, characteristics text, presentation_offset bigint, encryption text,
        key_id text, tiles text, vmaf double, analysis text,
        PRIMARY KEY ((asset_id, version), ord))""",
    """CREATE TABLE IF NOT EXISTS segments (
        asset_id text, rendition_id text, version int, number int, start bigint,
        duration bigint, size bigint, iframe_size bigint,
        PRIMARY KEY ((asset_id, rendition_id, version), number))
        WITH CLUSTERING ORDER BY (number ASC)""",
    f"""CREATE TABLE IF NOT EXISTS jobs ({_JOB_DDL}, PRIMARY KEY (id))""",
    # Listing jobs (all, oldest first; or one asset's): admin reads, not the hot path.
    """CREATE TABLE IF NOT EXISTS job_ids (
        bucket int, created_at double, id text, PRIMARY KEY (bucket, created_at, id))""",
    """CREATE TABLE IF NOT EXISTS jobs_by_asset (
        asset_id text, created_at double, id text, PRIMARY KEY (asset_id, created_at, id))""",
]

_ASSET_COLS = (
    "id, state, progress, error, duration, source_name, created_at, updated_at, version,"
    " current_job"
)
_REND_COLS = (
    "id, kind, codec, codec_string, timescale, bitrate, avg_bitrate, peak_bitrate, width,"
    " height, sar, frame_rate, sample_rate, channels, language, name, is_default, forced,"
    " characteristics, presentation_offset, encryption, key_id, tiles, vmaf,"
    " analysis"
)
# Catalogue columns added after the first schema, for keyspaces made before.
_REND_ADDED = (("name", "text"), ("is_default", "boolean"), ("forced", "boolean"),
               ("characteristics", "text"), ("presentation_offset", "bigint"),
               ("encryption", "text"), ("key_id", "text"), ("tiles", "text"),
               ("vmaf", "double"), ("analysis", "text"))


async def execute_async(session: Any, statement: Any, params: Sequence[Any]) -> Any:
    """Run a statement through the driver without blocking the loop: its callbacks
    arrive on the driver's thread and are handed back to the loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    rf = session.execute_async(statement, list(params))

    def settle(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    rf.add_callbacks(lambda _rows: loop.call_soon_threadsafe(settle, rf.result(), None),
                     lambda exc: loop.call_soon_threadsafe(settle, None, exc))
    return await fut


def parse_url(url: str) -> tuple[list[str], int, str]:
    """``scylla://h1,h2[:port]/keyspace`` -> (hosts, port, keyspace)."""
    if not url.startswith("scylla://"):
        raise ValueError(f"not a scylla URL: {url!r}")
    rest = url[len("scylla://") :]
    hostpart, _, keyspace = rest.partition("/")
    keyspace = keyspace.strip("/") or "cdlc"
    port = 9042
    hosts = []
    for h in hostpart.split(","):
        host, _, p = h.strip().partition(":")
        if p:
            port = int(p)
        if host:
            hosts.append(host)
    if not hosts:
        raise ValueError(f"no hosts in {url!r}")
    if not keyspace.replace("_", "").isalnum():
        raise ValueError(f"invalid keyspace {keyspace!r}")
    return hosts, port, keyspace


def _asset(row: Any) -> Asset:
    return Asset(
        id=row.id, state=JobState(row.state), progress=row.progress or 0.0, error=row.error,
        duration=row.duration or 0.0, source_name=row.source_name or "",
        created_at=row.created_at or 0.0, updated_at=row.updated_at or 0.0,
        version=row.version or 0, current_job=row.current_job or "",
    )


def _job(row: Any) -> Job:
    return Job(
        id=row.id, asset_id=row.asset_id, request=JobRequest.from_json(row.request),
        master=row.master or "", state=JobState(row.state), progress=row.progress or 0.0,
        error=row.error, attempt=row.attempt or 0, max_attempts=row.max_attempts or 1,
        lease_holder=row.lease_holder, lease_expires=row.lease_expires or 0.0,
        not_before=row.not_before or 0.0, queue=row.queue or "",
        chunks=json.loads(row.chunks or "{}"),
        created_at=row.created_at or 0.0, updated_at=row.updated_at or 0.0, rev=row.rev or 0,
    )


def _job_values(j: Job) -> list[Any]:
    """Every column but id and rev, in _JOB_COLS order."""
    return [j.asset_id, j.request.to_json(), j.master, str(j.state), j.progress, j.error,
            j.attempt, j.max_attempts, j.lease_holder, j.lease_expires, j.not_before, j.queue,
            json.dumps(j.chunks, separators=(",", ":")), j.created_at, j.updated_at]


class ScyllaStore:
    """MetadataStore on ScyllaDB (see the module docstring)."""

    def __init__(
        self,
        hosts: list[str],
        keyspace: str,
        *,
        port: int = 9042,
        replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        local_dc: str | None = None,
    ) -> None:
        self.hosts = hosts
        self.port = port
        self.keyspace = keyspace
        self._replication = replication
        self._local_dc = local_dc
        self._cluster: Any = None
        self._session: Any = None
        self._ps: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> ScyllaStore:
        hosts, port, keyspace = parse_url(url)
        return cls(hosts, keyspace, port=port)

    # -- plumbing ---------------------------------------------------------------
    async def open(self) -> ScyllaStore:
        """Connect and create the schema (done on first use otherwise)."""
        async with self._lock:
            if self._session is None:
                await asyncio.get_running_loop().run_in_executor(None, self._connect)
        return self

    def _connect(self) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=self._local_dc)
            ),
            consistency_level=ConsistencyLevel.LOCAL_QUORUM,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=10,
        )
        self._cluster = Cluster(
            self.hosts, port=self.port, protocol_version=4,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        )
        session = self._cluster.connect()
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
            f"{self._replication}"
        )
        session.set_keyspace(self.keyspace)
        for ddl in _TABLES:
            session.execute(ddl)
        columns = {c.name for c in session.execute(
            "SELECT column_name AS name FROM system_schema.columns"
            " WHERE keyspace_name = %s AND table_name = 'assets'", [self.keyspace])}
        if "current_job" not in columns:  # keyspaces made before jobs had records
            session.execute("ALTER TABLE assets ADD current_job text")
        have = {c.name for c in session.execute(
            "SELECT column_name AS name FROM system_schema.columns"
            " WHERE keyspace_name = %s AND table_name = 'renditions'", [self.keyspace])}
        for name, cql_type in _REND_ADDED:
            if name not in have:
                session.execute(f"ALTER TABLE renditions ADD {name} {cql_type}")
        # Whole segment index in one page: later pages would be fetched synchronously.
        session.default_fetch_size = 50_000
        self._session = session
        prep = session.prepare
        self._ps = {
            "put_asset": prep(f"INSERT INTO assets ({_ASSET_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)"),
            "new_asset": prep(
                f"INSERT INTO assets ({_ASSET_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?) IF NOT EXISTS"),
            "renew_asset": prep(
                "UPDATE assets SET state = ?, progress = ?, error = null, source_name = ?,"
                " created_at = ?, updated_at = ?, current_job = ? WHERE id = ?"
                " IF state = 'failed' AND current_job = ?"),
            "mirror": prep(
                "UPDATE assets SET state = ?, progress = ?, error = ?, updated_at = ?"
                " WHERE id = ? IF current_job = ? AND state != 'ready'"),
            "new_job": prep(
                f"INSERT INTO jobs ({_JOB_COLS}) VALUES ({','.join('?' * 17)}) IF NOT EXISTS"),
            "cas_job": prep(
                "UPDATE jobs SET " + ", ".join(f"{c} = ?" for c in _JOB_COLS.split(", ")[1:-1])
                + ", rev = ? WHERE id = ? IF rev = ?"),
            "get_job": prep(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?"),
            "put_job_id": prep("INSERT INTO job_ids (bucket, created_at, id) VALUES (0, ?, ?)"),
            "put_job_by_asset": prep(
                "INSERT INTO jobs_by_asset (asset_id, created_at, id) VALUES (?, ?, ?)"),
            "list_job_ids": prep("SELECT id FROM job_ids WHERE bucket = 0 LIMIT ?"),
            "list_asset_jobs": prep("SELECT id FROM jobs_by_asset WHERE asset_id = ?"),
            "del_job": prep("DELETE FROM jobs WHERE id = ?"),
            "del_job_id": prep(
                "DELETE FROM job_ids WHERE bucket = 0 AND created_at = ? AND id = ?"),
            "del_asset_jobs": prep("DELETE FROM jobs_by_asset WHERE asset_id = ?"),
            "put_id": prep("INSERT INTO asset_ids (bucket, id) VALUES (0, ?)"),
            "get_asset": prep(f"SELECT {_ASSET_COLS} FROM assets WHERE id = ?"),
            "list_ids": prep("SELECT id FROM asset_ids WHERE bucket = 0 AND id > ? LIMIT ?"),
            "set_state": prep(
                "UPDATE assets SET state = ?, progress = ?, error = ?, updated_at = ?"
                " WHERE id = ? IF EXISTS"
            ),
            "put_rend": prep(
                f"INSERT INTO renditions (asset_id, version, ord, {_REND_COLS})"
                f" VALUES ({','.join('?' * 28)})"
            ),
            "put_seg": prep(
                "INSERT INTO segments (asset_id, rendition_id, version, number, start,"
                " duration, size, iframe_size) VALUES (?,?,?,?,?,?,?,?)"
            ),
            "flip": prep(
                "UPDATE assets SET state = ?, progress = 1.0, error = null, duration = ?,"
                " source_name = ?, created_at = ?, updated_at = ?, version = ?"
                " WHERE id = ? IF version = ?"
            ),
            "flip_new": prep(
                f"INSERT INTO assets ({_ASSET_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?) IF NOT EXISTS"
            ),
            "get_rends": prep(
                f"SELECT {_REND_COLS} FROM renditions WHERE asset_id = ? AND version = ?"
            ),
            "get_segs": prep(
                "SELECT number, start, duration, size, iframe_size FROM segments"
                " WHERE asset_id = ? AND rendition_id = ? AND version = ?"
            ),
            "del_rends": prep("DELETE FROM renditions WHERE asset_id = ? AND version = ?"),
            "del_segs": prep(
                "DELETE FROM segments WHERE asset_id = ? AND rendition_id = ? AND version = ?"
            ),
            "del_asset": prep("DELETE FROM assets WHERE id = ?"),
            "del_id": prep("DELETE FROM asset_ids WHERE bucket = 0 AND id = ?"),
        }

    async def _exec(self, name: str, params: Sequence[Any]) -> Any:
        """Run a prepared statement without blocking the loop (driver callbacks are
        delivered on the driver's thread and handed back to the loop)."""
        if self._session is None:
            await self.open()
        return await execute_async(self._session, self._ps[name], params)

    async def _many(self, name: str, rows: Sequence[Sequence[Any]], width: int = 64) -> None:
        gate = asyncio.Semaphore(width)

        async def one(params: Sequence[Any]) -> None:
            async with gate:
                await self._exec(name, params)

        await asyncio.gather(*(one(r) for r in rows))

    # -- MetadataStore ------------------------------------------------------------
    async def put_asset(self, asset: Asset) -> None:
        a = asset
        await self._exec("put_asset", [
            a.id, str(a.state), a.progress, a.error, a.duration, a.source_name,
            a.created_at, a.updated_at, a.version, a.current_job,
        ])
        await self._exec("put_id", [a.id])

    async def get_asset(self, asset_id: str) -> Asset | None:
        row = (await self._exec("get_asset", [asset_id])).one()
        return None if row is None else _asset(row)

    async def list_assets(self, limit: int = 50, after: str | None = None) -> list[Asset]:
        if limit <= 0:
            return []
        ids = [r.id for r in await self._exec("list_ids", [after or "", limit])]
        assets = await asyncio.gather(*(self.get_asset(i) for i in ids))
        return [a for a in assets if a is not None]

    async def set_state(
        self,
        asset_id: str,
        state: JobState,
        *,
        progress: float | None = None,
        error: str | None = None,
    ) -> None:
        """Same contract as SQLiteStore.set_state (KeyError for an unknown asset)."""
        current = await self.get_asset(asset_id)
        if current is None:
            raise KeyError(asset_id)
        if error is None and state == JobState.FAILED:
            error = current.error
        result = await self._exec("set_state", [
            str(state), current.progress if progress is None else progress, error,
            time.time(), asset_id,
        ])
        if not result.was_applied:
            raise KeyError(asset_id)

    async def publish(
        self,
        asset: Asset,
        renditions: Sequence[Rendition],
        segments: Sequence[Segment],
        job: Job | None = None,
    ) -> None:
        """Version switch (module docstring); updates ``asset`` in place. With ``job``
        the job is finished READY first (its compare-and-set fences off a process
        that lost the job: StaleJob, nothing published)."""
        if job is not None:
            done = replace(job, state=JobState.READY, progress=1.0, error=None,
                           lease_holder=None)
            if not await self._cas(done, job.rev):
                raise StaleJob(f"job {job.id} was taken over by another process")
            job.__dict__.update(done.__dict__)
        ids = {r.id for r in renditions}
        for s in segments:
            if s.asset_id != asset.id or s.rendition_id not in ids:
                raise ValueError(f"segment {s.rendition_id}/{s.number} is not of {asset.id}")
        for _attempt in range(5):
            current = await self.get_asset(asset.id)
            old = current.version if current else 0
            version = max(old, asset.version) + 1
            # Clear what a crashed earlier attempt may have left under this version
            # (a longer segment list would otherwise show through).
            await self._drop_version(asset.id, version, [r.id for r in renditions])
            await self._many("put_rend", [
                [asset.id, version, i, r.id, r.kind, r.codec, r.codec_string, r.timescale,
                 r.bitrate, r.avg_bitrate, r.peak_bitrate, r.width, r.height, r.sar,
                 r.frame_rate, r.sample_rate, r.channels, r.language, r.name, r.default,
                 r.forced, r.characteristics, r.presentation_offset, r.encryption, r.key_id,
                 r.tiles, r.vmaf, r.analysis]
                for i, r in enumerate(renditions)
            ])
            await self._many("put_seg", [
                [s.asset_id, s.rendition_id, version, s.number, s.start, s.duration, s.size,
                 s.iframe_size]
                for s in segments
            ])
            now = time.time()
            if current is None:
                result = await self._exec("flip_new", [
                    asset.id, str(JobState.READY), 1.0, None, asset.duration,
                    asset.source_name, asset.created_at, now, version,
                    job.id if job is not None else asset.current_job,
                ])
                await self._exec("put_id", [asset.id])
            else:
                result = await self._exec("flip", [
                    str(JobState.READY), asset.duration, asset.source_name,
                    current.created_at, now, version, asset.id, old,
                ])
            if result.was_applied:
                # Keep the previous version: a reader that read the asset row just
                # before the flip still finds its index. Drop the one before it.
                if old - 1 >= 1:
                    await self._drop_version(asset.id, old - 1)
                asset.version = version
                asset.state = JobState.READY
                asset.progress = 1.0
                asset.error = None
                asset.updated_at = now
                return
            await self._drop_version(asset.id, version, [r.id for r in renditions])
        raise RuntimeError(f"publish of {asset.id}: lost the version race 5 times")

    async def _drop_version(
        self, asset_id: str, version: int, rendition_ids: list[str] | None = None
    ) -> None:
        if rendition_ids is None:
            rows = await self._exec("get_rends", [asset_id, version])
            rendition_ids = [r.id for r in rows]
        await self._many("del_segs", [[asset_id, rid, version] for rid in rendition_ids])
        await self._exec("del_rends", [asset_id, version])

    async def get_renditions(self, asset_id: str) -> list[Rendition]:
        asset = await self.get_asset(asset_id)
        if asset is None or asset.version == 0:
            return []
        rows = await self._exec("get_rends", [asset_id, asset.version])
        return [
            Rendition(
                asset_id=asset_id, id=r.id, kind=r.kind, codec=r.codec,
                codec_string=r.codec_string, timescale=r.timescale, bitrate=r.bitrate,
                avg_bitrate=r.avg_bitrate, peak_bitrate=r.peak_bitrate, width=r.width,
                height=r.height, sar=r.sar, frame_rate=r.frame_rate,
                sample_rate=r.sample_rate, channels=r.channels, language=r.language,
                name=r.name or "", default=bool(r.is_default), forced=bool(r.forced),
                characteristics=r.characteristics or "",
                presentation_offset=r.presentation_offset or 0,
                encryption=r.encryption or "", key_id=r.key_id or "", tiles=r.tiles or "",
                vmaf=r.vmaf or 0.0, analysis=r.analysis or "",
            )
            for r in rows
        ]

    async def get_segments(self, asset_id: str, rendition_id: str) -> list[Segment]:
        asset = await self.get_asset(asset_id)
        if asset is None or asset.version == 0:
            return []
        rows = await self._exec("get_segs", [asset_id, rendition_id, asset.version])
        return [
            Segment(asset_id, rendition_id, r.number, r.start, r.duration, r.size,
                    r.iframe_size)
            for r in rows
        ]

    async def delete_asset(self, asset_id: str) -> bool:
        asset = await self.get_asset(asset_id)
        if asset is None:
            return False
        for version in (asset.version, asset.version - 1):
            if version >= 1:
                await self._drop_version(asset_id, version)
        for job in await self.list_jobs(asset_id=asset_id):
            await self._exec("del_job", [job.id])
            await self._exec("del_job_id", [job.created_at, job.id])
        await self._exec("del_asset_jobs", [asset_id])
        await self._exec("del_asset", [asset_id])
        await self._exec("del_id", [asset_id])
        return True

    # -- jobs ---------------------------------------------------------------------
    async def _cas(self, job: Job, expect_rev: int) -> bool:
        job.updated_at = time.time()
        result = await self._exec("cas_job", [*_job_values(job)[1:], expect_rev + 1, job.id,
                                              expect_rev])
        if not result.was_applied:
            return False
        job.rev = expect_rev + 1
        # The asset's state is its job's (not atomic with the job's LWT here: a
        # crash between the two leaves the asset one step behind until the next write).
        await self._exec("mirror", [str(job.state), job.progress, job.error, job.updated_at,
                                    job.asset_id, job.id])
        return True

    async def create_job(self, asset: Asset, job: Job) -> None:
        """Same contract as SQLiteStore.create_job; the asset row's LWT decides races."""
        asset.current_job = job.id
        asset.state, asset.progress, asset.error = job.state, job.progress, job.error
        current = await self.get_asset(asset.id)
        if current is None:
            result = await self._exec("new_asset", [
                asset.id, str(asset.state), asset.progress, None, asset.duration,
                asset.source_name, asset.created_at, asset.updated_at, asset.version, job.id])
        elif current.state != JobState.FAILED:
            raise AlreadyExists(f"asset {asset.id} exists ({current.state})")
        else:
            asset.version = current.version
            result = await self._exec("renew_asset", [
                str(asset.state), asset.progress, asset.source_name, asset.created_at,
                asset.updated_at, job.id, asset.id, current.current_job])
        if not result.was_applied:
            raise AlreadyExists(f"asset {asset.id} was submitted at the same time")
        await self._exec("new_job", [job.id, *_job_values(job), job.rev])
        await self._exec("put_job_id", [job.created_at, job.id])
        await self._exec("put_job_by_asset", [job.asset_id, job.created_at, job.id])
        await self._exec("put_id", [asset.id])

    async def get_job(self, job_id: str) -> Job | None:
        row = (await self._exec("get_job", [job_id])).one()
        return None if row is None else _job(row)

    async def list_jobs(self, *, states: Sequence[JobState] | None = None,
                        asset_id: str | None = None, limit: int = 1000) -> list[Job]:
        if asset_id is not None:
            ids = [r.id for r in await self._exec("list_asset_jobs", [asset_id])]
        else:
            ids = [r.id for r in await self._exec("list_job_ids", [100_000])]
        jobs = [j for j in await asyncio.gather(*(self.get_job(i) for i in ids))
                if j is not None and (states is None or j.state in states)]
        jobs.sort(key=lambda j: (j.created_at, j.id))
        return jobs[:max(0, limit)]

    async def write_job(self, job: Job) -> bool:
        return await self._cas(job, job.rev)

    async def ping(self) -> None:
        await self._exec("get_asset", ["__ping__"])

    async def close(self) -> None:
        if self._cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._cluster.shutdown)
            self._cluster = None
