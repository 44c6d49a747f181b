"""The in-process executor cleans up after every job it ran in a serving process:
the job's cyclic garbage is collected when the job ends (not at the next full
collection, which a serving process that froze its start-up objects may put off
while request traffic settles among the freed pages)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.application import Engine
from engine.config import Settings
from engine.executor import InProcessExecutor
from engine.pipeline import Services
from metadata import open_cache, open_objects, open_store
from metadata.models import JobState
from tests.media import make_master


@pytest.fixture
def automatic_gc_off() -> Iterator[list[int]]:
    """Full collections seen while automatic collection is off: only explicit ones."""
    full: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    # Earlier tests' garbage goes first, so that what a file object left open
    # there says when it is finalized is not laid at this test's door.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.callbacks.append(seen)
    try:
        yield full
    finally:
        gc.callbacks.remove(seen)
        if was:
            gc.enable()


async def test_a_finished_job_is_followed_by_a_full_collection(
        tmp_path: Path, automatic_gc_off: list[int]) -> None:
    data = tmp_path / "d"
    store = open_store("", data)
    services = Services(store=store, objects=open_objects("", data), cache=open_cache(""),
                        work_dir=data / "w")
    settings = Settings(data_dir=data, preset="ultrafast")
    executor = InProcessExecutor(settings, services, poll_seconds=0.1)
    engine = Engine(settings, services, executor)
    await executor.start()
    try:
        master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=180, fps="25")
        await engine.submit("gc1", master, {"ladder": "180:300"}, source_name="m.mp4")
        for _ in range(300):
            asset = await store.get_asset("gc1")
            if asset is not None and asset.state in (JobState.READY, JobState.FAILED):
                break
            await asyncio.sleep(0.1)
        assert asset is not None and asset.state == JobState.READY, asset
        # The executor's clean-up runs as the job's task ends, just after the state.
        for _ in range(100):
            if automatic_gc_off:
                break
            await asyncio.sleep(0.05)
        assert automatic_gc_off, "no full collection after the job"
    finally:
        await executor.close()
        await store.close()
