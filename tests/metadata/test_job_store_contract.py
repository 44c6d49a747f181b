"""Every MetadataStore keeps job records alike: SQLite always, ScyllaDB when
CDLC_TEST_SCYLLA names a cluster. One id, one job; every write a compare-and-set;
the asset shows its current job's state; publish finishes the job, fenced."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from metadata.jobs import AlreadyExists, Job, JobRequest, StaleJob, new_job_id
from metadata.models import Asset, JobState
from metadata.store import MetadataStore
from tests.metadata.test_store_contract import rendition, segments, store, uid

__all__ = ["store"]


def job_for(asset_id: str, **kw: object) -> Job:
    return Job(id=new_job_id(), asset_id=asset_id,
               request=JobRequest(ladder="720:3000", preset="fast", source_name="m.mov"),
               master=f"masters/{asset_id}/source", max_attempts=3, **kw)  # type: ignore[arg-type]


async def test_create_get_and_list(store: MetadataStore) -> None:
    aid = uid()
    job = job_for(aid)
    await store.create_job(Asset(id=aid, source_name="m.mov"), job)
    assert await store.get_job(job.id) == job
    asset = await store.get_asset(aid)
    assert asset is not None and asset.state == JobState.QUEUED and asset.current_job == job.id
    assert [j.id for j in await store.list_jobs(asset_id=aid)] == [job.id]
    assert job.id in {j.id for j in await store.list_jobs(states=[JobState.QUEUED])}
    assert job.id not in {j.id for j in await store.list_jobs(states=[JobState.READY])}
    assert await store.get_job(new_job_id()) is None


async def test_one_id_one_job_under_concurrent_submits(store: MetadataStore) -> None:
    aid = uid()
    jobs = [job_for(aid) for _ in range(4)]
    results = await asyncio.gather(
        *(store.create_job(Asset(id=aid), j) for j in jobs), return_exceptions=True)
    accepted = [j for j, r in zip(jobs, results, strict=True) if r is None]
    refused = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(accepted) == 1 and len(refused) == 3
    assert [j.id for j in await store.list_jobs(asset_id=aid)] == [accepted[0].id]
    stored = await store.get_asset(aid)
    assert stored is not None and stored.current_job == accepted[0].id


async def test_writes_are_compare_and_set_and_mirror_onto_the_asset(
        store: MetadataStore) -> None:
    aid = uid()
    job = job_for(aid)
    await store.create_job(Asset(id=aid), job)
    mine = replace(job, state=JobState.TRANSCODING, progress=0.5, lease_holder="h:1:a",
                   lease_expires=2e9, attempt=1)
    theirs = replace(job, lease_holder="h:2:b", attempt=1)
    assert await store.write_job(mine) and mine.rev == job.rev + 1
    assert not await store.write_job(theirs)  # read the old rev: loses
    got = await store.get_job(job.id)
    assert got is not None and got.lease_holder == "h:1:a" and got.rev == mine.rev
    asset = await store.get_asset(aid)
    assert asset is not None and (asset.state, asset.progress) == (JobState.TRANSCODING, 0.5)
    failed = replace(mine, state=JobState.FAILED, error="bad master", lease_holder=None)
    assert await store.write_job(failed)
    asset = await store.get_asset(aid)
    assert asset is not None and asset.state == JobState.FAILED and asset.error == "bad master"


async def test_a_failed_asset_takes_a_new_job_a_ready_one_does_not(
        store: MetadataStore) -> None:
    aid = uid()
    first = job_for(aid)
    await store.create_job(Asset(id=aid), first)
    with pytest.raises(AlreadyExists):  # still running
        await store.create_job(Asset(id=aid), job_for(aid))
    assert await store.write_job(replace(first, state=JobState.FAILED, error="x"))
    second = job_for(aid)
    await store.create_job(Asset(id=aid), second)
    asset = await store.get_asset(aid)
    assert asset is not None and asset.current_job == second.id and asset.error is None
    # Publishing finishes the job READY in the same step.
    before = replace(second)
    await store.publish(Asset(id=aid, duration=4.0, current_job=second.id),
                        [rendition(aid, "v720")], segments(aid, "v720", 2), job=second)
    done = await store.get_job(second.id)
    assert done is not None and done.state == JobState.READY and done.progress == 1.0
    asset = await store.get_asset(aid)
    assert asset is not None and asset.state == JobState.READY and asset.version == 1
    with pytest.raises(AlreadyExists):
        await store.create_job(Asset(id=aid), job_for(aid))
    # A write by a stale holder fails; even a current one does not unpublish the asset.
    assert not await store.write_job(replace(before, state=JobState.FAILED))
    assert await store.write_job(replace(second, state=JobState.FAILED, error="late"))
    asset = await store.get_asset(aid)
    assert asset is not None and asset.state == JobState.READY


async def test_publish_by_a_process_that_lost_the_job_publishes_nothing(
        store: MetadataStore) -> None:
    aid = uid()
    job = job_for(aid)
    await store.create_job(Asset(id=aid), job)
    stale = replace(job)
    assert await store.write_job(replace(job, lease_holder="h:2:b", attempt=2))
    with pytest.raises(StaleJob):
        await store.publish(Asset(id=aid, duration=4.0), [rendition(aid, "v720")],
                            segments(aid, "v720", 2), job=stale)
    asset = await store.get_asset(aid)
    assert asset is not None and asset.state == JobState.QUEUED and asset.version == 0
    assert await store.get_renditions(aid) == []


async def test_delete_removes_the_jobs(store: MetadataStore) -> None:
    aid = uid()
    job = job_for(aid)
    await store.create_job(Asset(id=aid), job)
    assert await store.delete_asset(aid)
    assert await store.get_job(job.id) is None
    # A worker still holding the job finds it gone: its next write fails.
    assert not await store.write_job(replace(job, progress=0.5))
