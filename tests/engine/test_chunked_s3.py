"""Chunks of a master in S3 (a real moto server of the test's own) read their span
through the store's presigned URL with ranged GETs instead of downloading the whole
master; and the faults of that read: the store hung, killed, dropping every
connection mid-body (resumed), or gone mid-body. A fault ends the attempt in one
line, with no signature in it, as a retry; nothing of the attempt is published,
and the retry completes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import native
from engine.chunks import PartRun, parts_of, split
from engine.config import Settings
from engine.ladder import plan_ladder
from engine.leases import Lease
from engine.services import Backends, open_backends
from metadata.jobs import Job, JobRequest
from metadata.models import JobState, master_key
from tests.engine.conftest import claimed_job
from tests.media import make_master
from tests.metadata.servers import Relay, ServerProcess, make_bucket

LADDER = "360:600,240:300"


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_master(tmp_path_factory.mktemp("s3chunks") / "m.mp4", seconds=24,
                       width=640, height=360)


@pytest.fixture
def proxy(moto: ServerProcess) -> Iterator[Relay]:
    p = Relay(moto.port).start()
    yield p
    p.close()


def s3_settings(tmp_path: Path, endpoint: str, **extra: object) -> Settings:
    bucket = make_bucket(endpoint)
    return Settings(data_dir=tmp_path / "data", storage=f"s3://{bucket}/root?endpoint={endpoint}",
                    preset="ultrafast", segment_seconds=4, chunk_seconds=8, lease_seconds=6,
                    **extra)  # type: ignore[arg-type]


async def split_job(backends: Backends, master: Path, asset_id: str) -> Job:
    """The master uploaded, its job recorded and split into parts (audio, c0-c2)."""
    job = await claimed_job(backends, master, asset_id, JobRequest(
        ladder=LADDER, preset="ultrafast", segment_seconds=4))
    info = native.probe(master)
    async with Lease(backends.store, job, 6) as lease:
        await split(backends, lease, plan_ladder(info, LADDER), info.duration, 8, 10,
                    lambda j, n, c: None)
    return job


async def run_part(backends: Backends, job: Job, name: str) -> str:
    return await PartRun(backends, job.id, name, lambda j, n, c: None).run()


async def retry_now(backends: Backends, job: Job, name: str) -> None:
    stored = await backends.store.get_job(job.id)
    assert stored is not None
    parts_of(stored)[name]["not_before"] = 0.0  # the backoff has passed
    assert await backends.store.write_job(stored)


async def check_ready(backends: Backends, job: Job) -> None:
    done = await backends.store.get_job(job.id)
    assert done is not None and done.state == JobState.READY, done
    for rid in ("v360", "v240"):
        segs = await backends.store.get_segments(job.asset_id, rid)
        assert [s.number for s in segs] == [1, 2, 3, 4, 5, 6], rid
        assert all(b.start == a.start + a.duration for a, b in itertools.pairwise(segs))


async def finish(backends: Backends, job: Job, names: tuple[str, ...] = ("c0", "c1", "c2",
                                                                      "audio")) -> None:
    """Run the parts, each to done; then the job is ready with a whole index."""
    for name in names:
        assert await run_part(backends, job, name) == "done", name
    if "audio" in names:
        await check_ready(backends, job)


async def failed_once(backends: Backends, job: Job, name: str) -> str:
    """The part's attempt failed as a retry; its one-line reason."""
    stored = await backends.store.get_job(job.id)
    assert stored is not None and stored.state == JobState.TRANSCODING, stored
    part = parts_of(stored)[name]
    assert part["state"] == "pending" and part["not_before"] > time.time() - 1, part
    reason = str(part["error"])
    assert "\n" not in reason and "Signature" not in reason and "?" not in reason, reason
    assert master_key(job.asset_id) in reason, reason  # names the object, not the URL
    return reason


def test_chunks_read_their_span_of_an_s3_master_by_url(tmp_path: Path, master: Path,
                                                       moto: ServerProcess) -> None:
    settings = s3_settings(tmp_path, moto.url)

    async def run() -> None:
        backends = open_backends(settings)
        try:
            job = await split_job(backends, master, "ranged")
            await finish(backends, job)
            stored = await backends.store.get_job(job.id)
            assert stored is not None
            assert {n: p["read"] for n, p in parts_of(stored).items()} == {
                "audio": "url", "c0": "url", "c1": "url", "c2": "url"}
            assert not list(settings.work_dir.glob("*.master"))
        finally:
            await backends.close()

    asyncio.run(run())


def test_a_hung_then_killed_store_fails_the_chunk_in_bounded_time_and_one_line(
        tmp_path: Path, master: Path, moto: ServerProcess) -> None:
    settings = s3_settings(tmp_path, moto.url, remote_read_timeout=1.0)

    async def run() -> None:
        backends = open_backends(settings)
        try:
            job = await split_job(backends, master, "hung")
            moto.pause()  # accepts connections, answers nothing
            started = time.monotonic()
            try:
                assert await run_part(backends, job, "c1") == "failed"
            finally:
                moto.resume()
            assert time.monotonic() - started < 30
            reason = await failed_once(backends, job, "c1")
            assert "reading" in reason and "failed" in reason, reason
            # Back again: the retry completes, and so does the job.
            await retry_now(backends, job, "c1")
            await finish(backends, job)
        finally:
            await backends.close()

    asyncio.run(run())


def test_a_killed_store_fails_the_chunk_as_a_retry(tmp_path: Path, master: Path,
                                                    moto: ServerProcess) -> None:
    settings = s3_settings(tmp_path, moto.url, remote_read_timeout=1.0)

    async def run() -> None:
        backends = open_backends(settings)
        try:
            job = await split_job(backends, master, "killed")
            moto.kill()
            started = time.monotonic()
            # The record is in SQLite: the failure is recorded though S3 is gone.
            assert await run_part(backends, job, "c0") == "failed"
            assert time.monotonic() - started < 30
            reason = await failed_once(backends, job, "c0")
            assert "reading" in reason and "failed" in reason, reason
        finally:
            await backends.close()

    asyncio.run(run())


def test_connections_cut_mid_body_are_resumed_and_the_chunk_is_whole(
        tmp_path: Path, master: Path, proxy: Relay) -> None:
    """Every response cut after 64 KiB: each read reconnects where it stopped (a
    ranged GET from there), so the chunks come out whole."""
    settings = s3_settings(tmp_path, proxy.url, remote_read_timeout=2.0)

    async def run() -> None:
        backends = open_backends(settings)
        try:
            job = await split_job(backends, master, "resumed")
            proxy.cut_after = 64 * 1024  # the video chunks' reads (the stitch reads whole)
            try:
                await finish(backends, job, ("c0", "c1", "c2"))
            finally:
                proxy.cut_after = None
            assert proxy.cuts > 10
            await finish(backends, job, ("audio",))
        finally:
            await backends.close()

    asyncio.run(run())


def test_a_store_gone_mid_body_fails_the_chunk_instead_of_shortening_it(
        tmp_path: Path, master: Path, proxy: Relay) -> None:
    """A response cut and every reconnection refused: libavformat may take that for
    the end of the file; the chunk fails as a retry instead of publishing a short
    span, and the retry (the store back) completes."""
    settings = s3_settings(tmp_path, proxy.url, remote_read_timeout=2.0)

    async def run() -> None:
        backends = open_backends(settings)
        try:
            job = await split_job(backends, master, "gone")
            proxy.cut_after, proxy.refuse = 256 * 1024, True
            try:
                assert await run_part(backends, job, "c1") == "failed"
            finally:
                proxy.cut_after, proxy.refuse = None, False
            assert proxy.cuts > 0
            await failed_once(backends, job, "c1")
            assert not list(settings.data_dir.rglob("*.m4s"))  # nothing of it kept
            await retry_now(backends, job, "c1")
            await finish(backends, job)
        finally:
            await backends.close()

    asyncio.run(run())
