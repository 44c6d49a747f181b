"""A tus upload whose last byte arrives while the Celery broker (a Redis of the
test's own) is out.

Before, the origin answered the last PATCH 503 and removed the upload, though the
job was recorded (FAILED) with the master kept: the client's resume then got a
404, and tus-js-client started the whole upload again from byte 0 under a new
URL. What must hold now: the upload stays; while the broker is out a HEAD is a
423 (retried by clients, never a new upload); once it is back the resume queues
the job and hears "complete", with no byte sent twice."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from engine.config import Settings
from metadata.models import JobState
from tests.console.conftest import API_KEY, ConsoleOrigin, MakeOrigin
from tests.metadata.servers import ServerProcess, redis_server

__all__ = ["redis_server"]  # the fixture

TUS = {"Tus-Resumable": "1.0.0"}


def _meta(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


async def _origin(make_origin: MakeOrigin, tmp_path: Path,
                  broker: ServerProcess) -> ConsoleOrigin:
    # encoder=cpu: routing needs no broadcast, so the publish is what is tried.
    data = tmp_path / "data"
    return await make_origin(data_dir=data, jobs="celery", settings=Settings(
        data_dir=data, broker=broker.url, encoder="cpu"))


def _queued_messages(broker: ServerProcess) -> int:
    """Celery messages waiting in the broker's "cpu" queue (a Redis list)."""
    import redis

    client = redis.Redis.from_url(broker.url)
    try:
        return int(client.llen("cpu"))
    finally:
        client.close()


async def _state(o: ConsoleOrigin, asset_id: str) -> JobState:
    return (await o.engine.get(asset_id)).asset.state


async def test_the_resume_after_a_refused_queue_starts_the_job(
        make_origin: MakeOrigin, tmp_path: Path, redis_server: ServerProcess) -> None:
    o = await _origin(make_origin, tmp_path, redis_server)
    auth = {**TUS, **o.auth()}
    resp = await o.client.post("/v1/uploads", headers={
        **auth, "Upload-Length": "6", "Upload-Metadata": _meta(filename="m.mp4",
                                                               asset_id="kept1")})
    assert resp.status == 201
    location = resp.headers["Location"]

    redis_server.kill()
    resp = await o.client.patch(location, data=b"abcdef", headers={
        **auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 503, await resp.text()
    doc = await resp.json()
    assert "kept" in doc["title"] and "OperationalError" in doc["title"], doc
    assert resp.headers["Retry-After"]
    assert await _state(o, "kept1") == JobState.FAILED

    # Still out: "locked, retry", not 404 (a new upload) nor 503 (tus-js-client's cue
    # for a new upload too). The job is FAILED again, not QUEUED without a message.
    for _ in range(2):
        resp = await o.client.head(location, headers=auth)
        assert resp.status == 423
        assert resp.headers["Retry-After"]
        assert await _state(o, "kept1") == JobState.FAILED

    redis_server.start()
    resp = await o.client.head(location, headers=auth)
    assert resp.status == 200
    assert resp.headers["Upload-Offset"] == resp.headers["Upload-Length"] == "6"
    assert await _state(o, "kept1") == JobState.QUEUED
    assert _queued_messages(redis_server) == 1
    # Settled: later resumes hear "complete" and queue nothing more.
    job = (await o.engine.get("kept1")).job
    for _ in range(2):
        resp = await o.client.patch(location, data=b"", headers={
            **auth, "Upload-Offset": "6", "Content-Type": "application/offset+octet-stream"})
        assert resp.status == 204
        resp = await o.client.head(location, headers=auth)
        assert resp.status == 200
    view = await o.engine.get("kept1")
    assert view.job is not None and job is not None and view.job.id == job.id
    assert _queued_messages(redis_server) == 1


async def test_a_resume_after_the_asset_was_deleted_is_404(
        make_origin: MakeOrigin, tmp_path: Path, redis_server: ServerProcess) -> None:
    o = await _origin(make_origin, tmp_path, redis_server)
    auth = {**TUS, **o.auth()}
    resp = await o.client.post("/v1/uploads", headers={
        **auth, "Upload-Length": "3", "Upload-Metadata": _meta(asset_id="gone1")})
    location = resp.headers["Location"]
    redis_server.kill()
    resp = await o.client.patch(location, data=b"abc", headers={
        **auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 503
    await o.engine.delete("gone1")
    redis_server.start()
    resp = await o.client.head(location, headers=auth)
    assert resp.status == 404
    resp = await o.client.head(location, headers=auth)
    assert resp.status == 404
    assert not list(o.tus.uploads.root.glob("*.json"))


async def test_tus_js_client_finishes_the_same_upload_once_the_broker_is_back(
        make_origin: MakeOrigin, tmp_path: Path, redis_server: ServerProcess) -> None:
    node = shutil.which("node")
    assert node, "node is needed for tus-js-client"
    o = await _origin(make_origin, tmp_path, redis_server)
    master = tmp_path / "node.mp4"
    data = os.urandom(4 * 256 * 1024 + 5)
    master.write_bytes(data)
    script = Path(__file__).with_name("tus_node_retry.cjs")
    meta = json.dumps({"filename": "node.mp4", "asset_id": "nodekept", "copy": "false"})
    redis_server.kill()
    proc = await asyncio.create_subprocess_exec(
        node, str(script), o.url + "/v1/uploads", str(master), API_KEY, meta,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Every try to queue the asset is a job record: the submit's and each refused
    # resume's. Three of them: the client is retrying.
    for _ in range(600):
        tries = await o.engine.jobs(state=JobState.FAILED, asset_id="nodekept")
        if len(tries) >= 3:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the client never resumed while the queue was out")
    assert await _state(o, "nodekept") == JobState.FAILED
    redis_server.start()
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    requests = report["requests"]
    assert report["urls"] == 1, report  # the same upload, never a second one
    assert requests.count("POST 201") == 1, report
    # Four PATCHes of 256 KiB and the last 5 bytes, each sent once; the last refused
    # while the queue is out, then the resume's HEAD that finished it.
    assert requests[:6] == ["POST 201", *["PATCH 204"] * 4, "PATCH 503"], report
    assert requests[-1] == "HEAD 200" and "HEAD 423" in requests, report
    assert set(requests[6:-1]) == {"HEAD 423"}, report
    assert await _state(o, "nodekept") == JobState.QUEUED
    master_key = (await o.engine.get("nodekept")).job
    assert master_key is not None
    stored = await o.deps.objects.get_bytes(master_key.master)
    assert stored == data
