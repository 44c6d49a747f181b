"""Admin API: streamed uploads with a size limit, job submission, state, listing,
deletion, API keys, OpenAPI; health, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cdn.edge import free_port
from engine.application import Engine
from engine.config import Settings
from metadata.cache import asset_key
from metadata.models import JobState, master_key
from tests.origin.broken_source import broken_source
from tests.origin.conftest import MakeOrigin, Media, publish_fake

API_KEY = "s3cret-admin-key"


def form(data: bytes, **fields: str) -> aiohttp.FormData:
    f = aiohttp.FormData()
    for k, v in fields.items():
        f.add_field(k, v)
    f.add_field("file", data, filename="clip.mov", content_type="video/quicktime")
    return f


@pytest.mark.parametrize("storage", ["local", "s3"])
async def test_upload_stores_master_and_submits_the_job(
    make_origin: MakeOrigin, tmp_path: Path, storage: str
) -> None:
    o = await make_origin(storage, upload_dir=tmp_path / "up")
    data = os.urandom(300_000)
    resp = await o.client.post("/v1/assets", data=form(
        data, id="up1", options=json.dumps({"ladder": "360:800"}), preset="veryfast"))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["id"] == "up1" and body["state"] == "queued" and body["source_name"] == "clip.mov"
    assert body["job"]["state"] == "queued" and body["job"]["attempt"] == 0
    assert await o.objects.get_bytes(master_key("up1")) == data
    assert len(o.held.jobs) == 1
    job = o.held.jobs[0]
    assert job.asset_id == "up1" and o.held.masters[0] == data
    assert job.request.ladder == "360:800" and job.request.preset == "veryfast"
    assert (await o.store.get_job(job.id)) == job
    stored = await o.store.get_asset("up1")
    assert stored is not None and stored.state == JobState.QUEUED
    leftovers = [p.name for p in (tmp_path / "up").iterdir()] if (tmp_path / "up").exists() else []
    assert all(not n.endswith(".part") for n in leftovers)
    # The same id again is a conflict.
    resp = await o.client.post("/v1/assets", data=form(b"x", id="up1"))
    assert resp.status == 409


async def test_generated_id(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    resp = await o.client.post("/v1/assets", data=form(b"abc"))
    assert resp.status == 202
    asset_id = (await resp.json())["id"]
    assert await o.objects.get_bytes(master_key(asset_id)) == b"abc"


async def _chunked_multipart(data: bytes, boundary: str) -> AsyncIterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\nbig\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"big.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode()
    for i in range(0, len(data), 64 * 1024):
        yield data[i : i + 64 * 1024]
        await asyncio.sleep(0)
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("how", ["content-length", "chunked"])
async def test_upload_over_the_limit_is_413_and_leaves_nothing(
    make_origin: MakeOrigin, tmp_path: Path, how: str
) -> None:
    up = tmp_path / "up"
    o = await make_origin(upload_dir=up, max_upload_bytes=200_000)
    data = os.urandom(1_000_000)
    if how == "content-length":
        resp = await o.client.post("/v1/assets", data=form(data, id="big"))
    else:  # no Content-Length: the limit is enforced while streaming
        boundary = "cdlcboundary42"
        resp = await o.client.post(
            "/v1/assets", data=_chunked_multipart(data, boundary),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert resp.status == 413
    assert o.held.jobs == []
    assert await o.store.get_asset("big") is None
    assert await o.objects.stat(master_key("big")) is None
    assert not up.exists() or list(up.iterdir()) == []
    # Under the limit the same streamed path works.
    small = os.urandom(150_000)
    if how == "chunked":
        resp = await o.client.post(
            "/v1/assets", data=_chunked_multipart(small, "b2"),
            headers={"Content-Type": "multipart/form-data; boundary=b2"},
        )
        assert resp.status == 202
        assert await o.objects.get_bytes(master_key("big")) == small


async def test_bad_uploads(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    assert (await o.client.post("/v1/assets", data=b"raw")).status == 415
    no_file = aiohttp.FormData(default_to_multipart=True)
    no_file.add_field("id", "x1")
    assert (await o.client.post("/v1/assets", data=no_file)).status == 400
    assert (await o.client.post("/v1/assets", data=form(b"x", id="../etc"))).status == 400
    assert (await o.client.post("/v1/assets", data=form(b"x", options="[1]"))).status == 400


async def test_api_key(make_origin: MakeOrigin, media: Media) -> None:
    o = await make_origin(api_key=API_KEY)
    assert (await o.client.post("/v1/assets", data=form(b"x", id="k1"))).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await o.client.post("/v1/assets", data=form(b"x", id="k1"), headers=wrong)).status \
        == 401
    assert (await o.client.delete("/v1/assets/k1")).status == 401
    ok = await o.client.post("/v1/assets", data=form(b"x", id="k1"),
                             headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status == 202
    ok = await o.client.post("/v1/assets", data=form(b"x", id="k2"),
                             headers={"X-API-Key": API_KEY})
    assert ok.status == 202
    # With a key configured, reads need it too.
    assert (await o.client.get("/v1/assets/k1")).status == 401
    assert (await o.client.get("/v1/assets")).status == 401
    assert (await o.client.get("/v1/jobs")).status == 401
    assert (await o.client.get("/v1/assets/k1", headers={"X-API-Key": API_KEY})).status == 200
    assert (await o.client.delete("/v1/assets/k1", headers={"X-API-Key": API_KEY})).status == 204


async def test_get_and_list(make_origin: MakeOrigin, media: Media) -> None:
    o = await make_origin()
    await publish_fake(o.store, o.objects, "list-b", media)
    for i in ("list-a", "list-c", "list-d"):
        assert (await o.client.post("/v1/assets", data=form(b"x", id=i))).status == 202
    doc = await (await o.client.get("/v1/assets/list-b")).json()
    assert doc["state"] == "ready" and doc["version"] == 1
    assert [r["id"] for r in doc["renditions"]] == ["v240", "audio"]
    assert doc["renditions"][0]["codec_string"] == "avc1.42c00d"
    assert (await o.client.get("/v1/assets/nope")).status == 404
    page = await (await o.client.get("/v1/assets", params={"limit": "2"})).json()
    assert [a["id"] for a in page["items"]] == ["list-a", "list-b"] and page["next"] == "list-b"
    page = await (await o.client.get("/v1/assets",
                                     params={"limit": "2", "after": page["next"]})).json()
    assert [a["id"] for a in page["items"]] == ["list-c", "list-d"]
    page = await (await o.client.get("/v1/assets",
                                     params={"limit": "2", "after": "list-d"})).json()
    assert page == {"items": [], "next": None}
    assert (await o.client.get("/v1/assets", params={"limit": "0"})).status == 400
    assert (await o.client.get("/v1/assets", params={"limit": "x"})).status == 400


@pytest.mark.parametrize("cache", ["lru", "redis"])
async def test_delete_removes_metadata_media_and_cache(
    make_origin: MakeOrigin, media: Media, cache: str
) -> None:
    o = await make_origin(cache=cache)
    await publish_fake(o.store, o.objects, "gone1", media)
    await o.objects.put_bytes(master_key("gone1"), b"master")
    assert (await o.client.get("/vod/gone1/v240/1.m4s")).status == 200  # head now cached
    assert await o.cache.get(asset_key("gone1")) is not None
    assert (await o.client.delete("/v1/assets/gone1")).status == 204
    assert await o.store.get_asset("gone1") is None
    assert await o.objects.stat("media/gone1/v240/1.m4s") is None
    assert await o.objects.stat(master_key("gone1")) is None
    assert (await o.client.get("/vod/gone1/v240/1.m4s")).status == 404
    assert (await o.client.get("/vod/gone1/v240/init.mp4")).status == 404
    assert (await o.client.delete("/v1/assets/gone1")).status == 404


async def test_openapi(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    doc = await (await o.client.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"post", "get"} <= set(doc["paths"]["/v1/assets"])
    assert "delete" in doc["paths"]["/v1/assets/{id}"]
    # Every route the app serves is described.
    routes = {r.resource.canonical for r in o.client.app.router.routes()
              if r.resource is not None}
    for path in routes:
        if path.startswith("/vod/{asset}/{rendition}/"):
            continue  # described per file kind
        assert path in doc["paths"], path


async def test_health_ready_metrics(make_origin: MakeOrigin) -> None:
    o = await make_origin(cache="redis")
    assert (await o.client.get("/healthz")).status == 200
    resp = await o.client.get("/readyz")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "ready": True, "store": "ok", "objects": "ok", "cache": "ok",
        "breakers": {"store": "closed", "objects": "closed", "cache": "closed"}}
    text = await (await o.client.get("/metrics")).text()
    assert 'cdlc_backend_breaker{backend="cache",state="closed"} 1.0' in text
    assert 'cdlc_origin_requests_total{route="readyz",status="200"} 1.0' in text


async def test_readiness_fails_when_redis_is_down(make_origin: MakeOrigin, media: Media) -> None:
    o = await make_origin(cache=f"redis://127.0.0.1:{free_port()}/0")
    resp = await o.client.get("/readyz")
    assert resp.status == 503
    doc = await resp.json()
    assert doc["ready"] is False and doc["store"] == "ok" and doc["cache"].startswith("error")
    # Playback degrades to the store rather than failing.
    await publish_fake(o.store, o.objects, "nored", media)
    resp = await o.client.get("/vod/nored/v240/1.m4s")
    assert resp.status == 200 and await resp.read() == media.file("v240", "1.m4s")


@pytest.mark.parametrize("field", [
    {"preset": "turbo"}, {"segment_seconds": "nan"}, {"segment_seconds": "-1"},
    {"segment_seconds": "inf"}, {"segment_seconds": "0"}, {"segment_seconds": "abc"},
    {"ladder": "720"}, {"copy": "perhaps"}, {"options": json.dumps({"encoder": "tpu"})},
    {"options": json.dumps({"unknown": 1})},
])
async def test_bad_options_are_400_and_keep_nothing(
    make_origin: MakeOrigin, tmp_path: Path, field: dict[str, str]
) -> None:
    up = tmp_path / "up"
    o = await make_origin(upload_dir=up)
    resp = await o.client.post("/v1/assets", data=form(os.urandom(50_000), id="bad1", **field))
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"
    title = (await resp.json())["title"]
    assert "\n" not in title and "/" not in title.replace("1/", "")  # one line, no paths
    assert await o.store.get_asset("bad1") is None
    assert await o.store.list_jobs(asset_id="bad1") == []
    assert await o.objects.stat(master_key("bad1")) is None
    assert not up.exists() or list(up.iterdir()) == []
    assert o.held.jobs == []


async def test_concurrent_submits_of_one_id_accept_exactly_one(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    datas = [os.urandom(100_000) for _ in range(4)]
    resps = await asyncio.gather(*(o.client.post("/v1/assets", data=form(d, id="same"))
                                   for d in datas))
    statuses = sorted(r.status for r in resps)
    assert statuses == [202, 409, 409, 409]
    winner = next(i for i, r in enumerate(resps) if r.status == 202)
    assert await o.objects.get_bytes(master_key("same")) == datas[winner]
    assert len(await o.store.list_jobs(asset_id="same")) == 1
    assert len(o.held.jobs) == 1


async def test_malformed_multipart_is_400(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    boundary = "b0undary"
    bodies = [
        # a control character inside a part header
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"id\x01\"\r\n\r\nx\r\n"
        f"--{boundary}--\r\n",
        # a part header without a colon, then a truncated envelope
        f"--{boundary}\r\nContent-Disposition form-data\r\n\r\nx",
        # no closing boundary at all
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
        f"\r\nabc",
    ]
    for body in bodies:
        resp = await o.client.post(
            "/v1/assets", data=body.encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert resp.status == 400, (body, resp.status, await resp.text())
    assert await o.store.list_jobs() == []


async def test_retry_only_a_failed_job_and_jobs_listing(make_origin: MakeOrigin) -> None:
    o = await make_origin(api_key=API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert (await o.client.post("/v1/assets/none/retry", headers=auth)).status == 404
    assert (await o.client.post("/v1/assets", data=form(b"m", id="r1"), headers=auth)).status \
        == 202
    assert (await o.client.post("/v1/assets/r1/retry")).status == 401
    busy = await o.client.post("/v1/assets/r1/retry", headers=auth)
    assert busy.status == 409 and "only a failed job" in (await busy.json())["title"]
    first = o.held.jobs[0]
    stored = await o.store.get_job(first.id)
    assert stored is not None
    stored.state, stored.error = JobState.FAILED, "x264 fell over"
    assert await o.store.write_job(stored)
    resp = await o.client.post("/v1/assets/r1/retry", headers=auth)
    assert resp.status == 202, await resp.text()
    job = await resp.json()
    assert job["state"] == "queued" and job["id"] != first.id
    assert o.held.jobs[-1].id == job["id"] and o.held.masters[-1] == b"m"
    doc = await (await o.client.get("/v1/assets/r1", headers=auth)).json()
    assert doc["state"] == "queued" and doc["job"]["id"] == job["id"] and doc["error"] is None
    listing = await (await o.client.get("/v1/jobs", params={"asset": "r1"},
                                        headers=auth)).json()
    assert [j["state"] for j in listing["items"]] == ["failed", "queued"]
    failed = await (await o.client.get("/v1/jobs", params={"state": "failed"},
                                       headers=auth)).json()
    assert [j["id"] for j in failed["items"]] == [first.id]
    assert (await o.client.get("/v1/jobs", params={"state": "stuck"},
                               headers=auth)).status == 400
    text = await (await o.client.get("/metrics")).text()
    assert 'cdlc_jobs_queued{class="local"} 1.0' in text
    assert "cdlc_jobs_failed 1.0" in text
    page = await (await o.client.get("/v1/assets", params={"state": "queued"},
                                     headers=auth)).json()
    assert [a["id"] for a in page["items"]] == ["r1"]


async def test_readiness_reports_a_nearly_full_data_dir(make_origin: MakeOrigin,
                                                        tmp_path: Path) -> None:
    o = await make_origin(data_dir=tmp_path, min_free_bytes=1)
    assert (await o.client.get("/readyz")).status == 200
    o = await make_origin(data_dir=tmp_path, min_free_bytes=2**62)
    resp = await o.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["disk"].startswith("error: data dir nearly full")


async def test_a_failed_upload_names_the_file_never_a_server_path(
        make_origin: MakeOrigin, tmp_path: Path) -> None:
    """A job's error is shown to API callers: it names the upload, not where the
    server keeps it."""
    from engine.executor import InProcessExecutor
    from engine.pipeline import Services
    from metadata import open_cache, open_objects, open_store

    store, objects = open_store("", tmp_path / "d"), open_objects("", tmp_path / "d")
    cache = open_cache("")
    services = Services(store=store, objects=objects, cache=cache, work_dir=tmp_path / "d/w")
    settings = Settings(data_dir=tmp_path / "d")
    executor = InProcessExecutor(settings, services, poll_seconds=0.1)
    o = await make_origin(application=Engine(settings, services, executor))
    await executor.start()
    try:
        resp = await o.client.post("/v1/assets", data=form(os.urandom(4096), id="junk"))
        assert resp.status == 202
        for _ in range(100):
            doc = await (await o.client.get("/v1/assets/junk")).json()
            if doc["state"] == "failed":
                break
            await asyncio.sleep(0.1)
        assert doc["state"] == "failed"
        assert doc["error"].startswith("clip.mov: not a playable media file"), doc["error"]
        assert str(tmp_path) not in json.dumps(doc)
    finally:
        await executor.close()
        await store.close()


async def test_pull_from_a_url_refuses_loopback_unless_allowed(
        make_origin: MakeOrigin, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /v1/assets {source_uri}: the master is fetched, then submitted; a URL on
    a private or loopback address is refused unless the operator allows it (SSRF)."""
    from aiohttp import web

    data = os.urandom(64_000)
    fetched: list[str] = []

    async def master(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=data, content_type="video/mp4")

    source = web.Application()
    source.router.add_get("/films/harbour.mp4", master)
    server = await aiohttp_server(source)
    url = f"http://127.0.0.1:{server.port}/films/harbour.mp4"
    o = await make_origin()
    resp = await o.client.post("/v1/assets", json={"source_uri": url, "id": "pulled"})
    assert resp.status == 403, await resp.text()
    assert await o.store.get_asset("pulled") is None
    bad = await o.client.post("/v1/assets", json={"source_uri": "ftp://x/y", "id": "pulled"})
    assert bad.status == 400
    monkeypatch.setenv("CDLC_FETCH_ALLOW_PRIVATE", "1")
    o = await make_origin()
    resp = await o.client.post("/v1/assets", json={
        "source_uri": url, "id": "pulled", "options": {"ladder": "240:300"}})
    assert resp.status == 202, await resp.text()
    doc = await resp.json()
    assert doc["source_name"] == "harbour.mp4" and doc["job"]["request"]["ladder"] == "240:300"
    assert await o.objects.get_bytes(master_key("pulled")) == data
    # Bad options and a taken id are refused before the master is fetched.
    before = len(fetched)
    resp = await o.client.post("/v1/assets", json={
        "source_uri": url, "options": {"ladder": "240:abc"}})
    assert resp.status == 400, await resp.text()
    resp = await o.client.post("/v1/assets", json={"source_uri": url, "id": "pulled"})
    assert resp.status == 409, await resp.text()
    assert len(fetched) == before
    gone = await o.client.post("/v1/assets", json={
        "source_uri": url.replace("harbour", "nothing"), "id": "other"})
    # A source that answers 404 names no master: the request is wrong (400).
    assert gone.status == 400 and "404" in (await gone.json())["title"]
    assert await o.store.get_asset("other") is None


@pytest.mark.parametrize("path", ["/short.mp4", "/garbage.mp4"])
async def test_pull_from_a_source_that_breaks_is_502(
        make_origin: MakeOrigin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        path: str) -> None:
    """A source that cuts its body short or does not speak HTTP: 502 with one line,
    nothing recorded, no part file left (it was a 500 from an unmapped aiohttp error)."""
    monkeypatch.setenv("CDLC_FETCH_ALLOW_PRIVATE", "1")
    uploads = tmp_path / "pulls"
    o = await make_origin(upload_dir=uploads)
    async with broken_source() as base:
        resp = await o.client.post("/v1/assets", json={"source_uri": base + path, "id": "torn"})
    doc = await resp.json()
    assert resp.status == 502, doc
    assert doc["title"].startswith(f"could not fetch the source: cannot fetch {base}{path}: ")
    assert "\n" not in doc["title"]
    assert await o.store.get_asset("torn") is None
    assert list(uploads.glob("*")) == []


async def test_an_empty_master_is_400_and_records_nothing(make_origin: MakeOrigin,
                                                          tmp_path: Path) -> None:
    """As tus refuses it at creation (it was 202, then a job failing on it)."""
    o = await make_origin(upload_dir=tmp_path / "up")
    resp = await o.client.post("/v1/assets", data=form(b"", id="nothing"))
    assert resp.status == 400
    assert (await resp.json())["title"] == "an empty file is not a master"
    assert await o.store.get_asset("nothing") is None
    assert o.held.jobs == []
    assert list((tmp_path / "up").glob("*")) == []
