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
from tests.metadata.servers import Relay, ServerProcess, redis_server
from tests.origin.conftest import MakeOrigin, make_origin

__all__ = ["make_origin", "redis_server"]  # the fixtures

# Two publish tries against a 5 s socket bound, and a loaded CI machine's slack.
BOUND_S = 25.0


async def _origin(make_origin: MakeOrigin, tmp_path: Path, broker: ServerProcess | str) -> Any:
    from metadata import open_cache, open_objects, open_store

    # encoder=cpu: the route needs no broadcast, so the publish is what is tried.
    url = broker if isinstance(broker, str) else broker.url
    settings = Settings(data_dir=tmp_path, broker=url, encoder="cpu")
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


def _queued_on_rabbitmq(amqp: str) -> int:
    """Messages ready in the "cpu" queue of the test's vhost (0 when not declared)."""
    from kombu.connection import Connection

    with Connection(amqp, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
        channel = conn.channel()
        try:
            _, count, _ = channel.queue_declare("cpu", passive=True)
        except Exception:
            return 0
        return int(count)


@pytest.mark.parametrize("when", ["idle", "connected"])
async def test_a_hung_rabbitmq_never_holds_a_submit_and_loses_no_job(
        make_origin: MakeOrigin, tmp_path: Path, amqp_url: str, when: str) -> None:
    """RabbitMQ hung behind a relay that holds every byte (SIGSTOP of the real one
    would hang every test's broker). Before the submitter has a connection, the
    AMQP handshake gets no answer: 503 within the bound, the job FAILED. With a
    connection open, a publish is a write that needs no answer: 202 at once, and
    the message reaches the queue once the broker wakes."""
    relay = Relay(5672).start()
    vhost = amqp_url.rsplit("/", 1)[1]
    broker = f"amqp://guest:guest@127.0.0.1:{relay.port}/{vhost}"
    try:
        o, engine = await _origin(make_origin, tmp_path, broker)
        if when == "connected":
            status, doc, _ = await _post(o, "first")
            assert status == 202, doc
        relay.hung = True
        status, doc, took = await _post(o, "second")
        assert took < BOUND_S, took
        if when == "idle":
            assert status == 503, doc
            assert "kept" in doc["title"], doc
            assert (await engine.get("second")).asset.state == JobState.FAILED
            relay.hung = False
            status, doc, _ = await _post(o, "second")
        assert status == 202, doc
        assert (await engine.get("second")).asset.state == JobState.QUEUED
        relay.hung = False
        expected = 2 if when == "connected" else 1
        for _ in range(100):
            if await asyncio.to_thread(_queued_on_rabbitmq, amqp_url) == expected:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(_queued_on_rabbitmq, amqp_url) == expected
    finally:
        relay.hung = False
        relay.close()
