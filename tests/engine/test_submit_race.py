"""A job is not claimed before its master is stored. The submit records the job
QUEUED, then keeps the master; an executor polling for QUEUED jobs (every serve
process runs one) claimed it in between when keeping was slow (an S3 upload), ran
every attempt against a missing master and failed it, while the upload went on and
the request answered 202. The job is now recorded under the submitter's lease."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.application import Engine
from engine.config import Settings
from engine.executor import InProcessExecutor
from engine.pipeline import Services
from metadata import open_cache, open_store
from metadata.local_objects import LocalObjects
from metadata.models import JobState
from tests.media import make_master


class SlowObjects(LocalObjects):
    """The local store, taking its time to keep a file (as an upload to S3 does)."""

    async def adopt_file(self, key: str, path: Path) -> None:
        await asyncio.sleep(1.5)  # several executor polls
        await super().adopt_file(key, path)


@pytest.mark.timeout(60)  # before the fix the run never settled
async def test_a_slowly_kept_master_is_not_claimed_before_it_is_stored(
        tmp_path: Path) -> None:
    data = tmp_path / "d"
    store = open_store("", data)
    services = Services(store=store, objects=SlowObjects(data / "objects"),
                        cache=open_cache(""), work_dir=data / "w")
    settings = Settings(data_dir=data, preset="ultrafast", max_attempts=1)
    executor = InProcessExecutor(settings, services, poll_seconds=0.1)
    engine = Engine(settings, services, executor)
    await executor.start()
    try:
        master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=180, fps="25")
        view = await engine.submit("slow", master, {"ladder": "180:300"}, source_name="m.mp4")
        assert view.job is not None and view.job.lease_holder is None  # released
        for _ in range(300):
            asset = await store.get_asset("slow")
            if asset is not None and asset.state in (JobState.READY, JobState.FAILED):
                break
            await asyncio.sleep(0.1)
        assert asset is not None and asset.state == JobState.READY, asset
        (job,) = await store.list_jobs(asset_id="slow")
        assert job.attempt == 1
    finally:
        await executor.close()
        await store.close()
