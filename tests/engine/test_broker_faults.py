"""Submitting to Celery over a Redis broker this test owns and breaks: hung
(SIGSTOP: connections taken, never answered) and killed, under the real origin's
POST /v1/assets and the retry.

Before, kombu's Redis transport waited for ever on a hung broker: the publish
held the request without an answer and one thread of the process's default pool
with it (six such requests on this 2-core machine and every ``to_thread`` of the
origin waited). What must hold now: the request is a 503 within ~15 s, one line
of problem JSON; the asset's job is FAILED with the reason (nothing left QUEUED
that no message names); the same upload is taken once the broker is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.application import Engine
from engine.celery_executor import CeleryExecutor
from engine.config import Settings
from engine.pipeline import Services
from metadata.models import JobState
from tests.metadata.servers import ServerProcess, redis_server
from tests.origin.conftest import MakeOrigin, make_origin

__all__ = ["make_origin", "redis_server"]  # the fixtures

# Two publish tries against a 5 s socket bound, and a loaded CI machine's slack.
BOUND_S = 25.0


async def _origin(make_origin: MakeOrigin, tmp_path: Path, broker: ServerProcess) -> Any:
    from metadata import open_cache, open_objects, open_store

    # encoder=cpu: the route needs no broadcast, so the publish is what is tried.
    settings = Settings(data_dir=tmp_path, broker=broker.url, encoder="cpu")
    store, objects = open_store("", tmp_path), open_objects("", tmp_path)
    services = Services(store=store, objects=objects, cache=open_cache(""),
                        work_dir=tmp_path / "work")
    engine = Engine(settings, services, CeleryExecutor(settings, services))
    return await make_origin(application=engine, store_dir=tmp_path, objects=objects), engine


async def _post(o: Any, asset_id: str) -> tuple[int, dict[str, Any], float]:
    form = aiohttp.FormData()
    form.add_field("id", asset_id)
    form.add_field("file", b"bytes of a master", filename="m.mp4")
    t0 = time.monotonic()
    resp = await asyncio.wait_for(o.client.post("/v1/assets", data=form), 120)
    return resp.status, await resp.json(), time.monotonic() - t0


@pytest.mark.parametrize("fault", ["hung", "killed"])
async def test_a_submit_to_a_broken_broker_is_a_503_and_the_job_fails(
        make_origin: MakeOrigin, tmp_path: Path, redis_server: ServerProcess, fault: str) -> None:
    o, engine = await _origin(make_origin, tmp_path, redis_server)
    status, _, _ = await _post(o, "first")
    assert status == 202

    redis_server.pause() if fault == "hung" else redis_server.kill()
    status, doc, took = await _post(o, "second")
    assert status == 503, doc
    # One line that says the upload is not lost and how to start it.
    assert "kept" in doc["title"] and "OperationalError" in doc["title"], doc
    assert "/v1/assets/second/retry" in doc["title"], doc
    assert took < (BOUND_S if fault == "hung" else 5.0), took
    view = await engine.get("second")
    assert view.asset.state == JobState.FAILED
    assert view.job is not None and "could not queue the job" in (view.job.error or "")

    # Back: the same upload is taken (a FAILED asset may be submitted again).
    redis_server.resume() if fault == "hung" else redis_server.start()
    status, doc, _ = await _post(o, "second")
    assert status == 202, doc
    assert (await engine.get("second")).asset.state == JobState.QUEUED
