"""Every status code the platform API answers, each produced by a real case over
TCP: refusals of the application (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
FAILED_PRECONDITION), size limits (RESOURCE_EXHAUSTED), a store that cannot be
reached (UNAVAILABLE), source fetches (PERMISSION_DENIED for private addresses,
UNAVAILABLE), deadlines and the EventService stubs (UNIMPLEMENTED)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.application import Engine
from engine.config import Settings
from engine.pipeline import Services
from metadata import open_cache, open_objects
from metadata.grants import SQLiteGrants
from metadata.sqlite_store import SQLiteStore
from origin.auth import Authenticator
from origin.grpc_proto import assets_pb2, assets_pb2_grpc, events_pb2, events_pb2_grpc
from origin.grpc_server import GrpcConfig, GrpcServer
from tests.grpc.conftest import (
    MakeStack,
    Stack,
    purchase,
    upload,
    upload_messages,
    wait_ready,
)
from tests.metadata.servers import ServerProcess, make_bucket, redis_server
from tests.origin.broken_source import broken_source
from tests.origin.conftest import HeldJobs

CODE = grpc.StatusCode
__all__ = ["redis_server"]  # the fixture


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call expected to fail."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


def _uploads_left(stack: Stack) -> list[Path]:
    d = stack.settings.data_dir / "uploads"
    return sorted(d.glob("*")) if d.exists() else []


async def _stream(messages: list[Any]) -> AsyncIterator[Any]:
    for m in messages:
        yield m


async def test_invalid_argument(make_stack: MakeStack, master: Path) -> None:
    stack = await make_stack()
    assets, playback = stack.assets(), stack.playback()
    code, text = await _code(upload(assets, master, asset_id="bad1", ladder="abc"))
    assert code == CODE.INVALID_ARGUMENT and "ladder" in text
    code, _ = await _code(upload(assets, master, asset_id="no/slash"))
    assert code == CODE.INVALID_ARGUMENT
    only_chunk = upload_messages(master)[1:]
    code, text = await _code(assets.UploadAsset(_stream(only_chunk)))
    assert code == CODE.INVALID_ARGUMENT and "header" in text
    code, _ = await _code(assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="")))
    assert code == CODE.INVALID_ARGUMENT
    code, _ = await _code(assets.ListAssets(assets_pb2.ListAssetsRequest(page_size=5000)))
    assert code == CODE.INVALID_ARGUMENT
    code, _ = await _code(assets.CreateAsset(
        assets_pb2.CreateAssetRequest(source_uri="ftp://example.com/m.mp4")))
    assert code == CODE.INVALID_ARGUMENT
    for request, word in (
        (purchase("a1", ttl_seconds=0), "ttl"),
        (purchase("a1", ttl_seconds=8 * 24 * 3600), "ttl"),
        (purchase("a1", client_ip="not-an-ip"), "client_ip"),
        (purchase("a1", max_height=-1), "max_height"),
    ):
        code, text = await _code(playback.IssuePlayback(request))
        assert code == CODE.INVALID_ARGUMENT and word in text
    no_kind = purchase("a1")
    no_kind.entitlement.Clear()
    code, text = await _code(playback.IssuePlayback(no_kind))
    assert code == CODE.INVALID_ARGUMENT and "entitlement" in text
    # An upload that ends short of the size its header announced (what a client
    # cancelled mid-stream can look like to the server) and an unknown encryption.
    short = upload_messages(master, asset_id="short", chunk=16 * 1024)[:-1]
    code, text = await _code(assets.UploadAsset(_stream(short)))
    assert code == CODE.INVALID_ARGUMENT and "bytes its header announced" in text, text
    code, text = await _code(upload(assets, master, asset_id="bad2", encryption="rot13"))
    assert code == CODE.INVALID_ARGUMENT and "encryption" in text, text
    assert _uploads_left(stack) == []  # refusals keep nothing
    assert (await assets.ListAssets(assets_pb2.ListAssetsRequest())).assets == []


async def test_not_found_already_exists_failed_precondition(make_stack: MakeStack,
                                                            master: Path,
                                                            tmp_path: Path) -> None:
    stack = await make_stack()
    assets, playback = stack.assets(), stack.playback()
    for call in (assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="nope")),
                 assets.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id="nope")),
                 assets.RetryAsset(assets_pb2.RetryAssetRequest(asset_id="nope")),
                 playback.IssuePlayback(purchase("nope"))):
        assert (await _code(call))[0] == CODE.NOT_FOUND
    watch = assets.WatchAsset(assets_pb2.WatchAssetRequest(asset_id="nope"))
    assert (await _code(_drain(watch)))[0] == CODE.NOT_FOUND

    await upload(assets, master, asset_id="dup")
    code, _ = await _code(upload(assets, master, asset_id="dup"))
    assert code == CODE.ALREADY_EXISTS
    assert (await wait_ready(assets, "dup"))[-1].asset.state == assets_pb2.ASSET_STATE_READY
    code, _ = await _code(upload(assets, master, asset_id="dup"))
    assert code == CODE.ALREADY_EXISTS
    code, text = await _code(assets.RetryAsset(assets_pb2.RetryAssetRequest(asset_id="dup")))
    assert code == CODE.FAILED_PRECONDITION and "failed" in text

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 1000)
    await upload(assets, junk, asset_id="junk")
    last = (await wait_ready(assets, "junk"))[-1].asset
    assert last.state == assets_pb2.ASSET_STATE_FAILED and last.error
    code, text = await _code(playback.IssuePlayback(purchase("junk")))
    assert code == CODE.FAILED_PRECONDITION and "not ready" in text
    first = await assets.ListAssets(assets_pb2.ListAssetsRequest(page_size=1))
    assert [a.asset_id for a in first.assets] == ["dup"] and first.next_page_token == "dup"
    second = await assets.ListAssets(assets_pb2.ListAssetsRequest(
        page_size=1, page_token=first.next_page_token))
    assert [a.asset_id for a in second.assets] == ["junk"]
    failed = await assets.ListAssets(assets_pb2.ListAssetsRequest(
        state=assets_pb2.ASSET_STATE_FAILED))
    assert [a.asset_id for a in failed.assets] == ["junk"] and not failed.next_page_token

    keyless = await make_stack(signing_key=None)
    await upload(keyless.assets(), master, asset_id="k1")
    await wait_ready(keyless.assets(), "k1")
    code, text = await _code(keyless.playback().IssuePlayback(purchase("k1")))
    assert code == CODE.FAILED_PRECONDITION and "CDLC_SIGNING_KEY" in text


async def _drain(call: Any) -> list[Any]:
    return [m async for m in call]


async def test_resource_exhausted_and_cleanup(make_stack: MakeStack, master: Path) -> None:
    size = master.stat().st_size
    stack = await make_stack(max_upload_bytes=size // 2)
    assets = stack.assets()
    code, text = await _code(upload(assets, master, asset_id="big"))
    assert code == CODE.RESOURCE_EXHAUSTED and str(size // 2) in text
    assert _uploads_left(stack) == []
    # One message over the 4 MiB limit is refused by gRPC itself.
    header = upload_messages(master)[0]
    huge = assets_pb2.UploadAssetRequest(chunk=b"\0" * (5 * 2**20))
    code, _ = await _code(assets.UploadAsset(_stream([header, huge])))
    assert code == CODE.RESOURCE_EXHAUSTED
    assert _uploads_left(stack) == []
    code, _ = await _code(assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="big")))
    assert code == CODE.NOT_FOUND


async def test_encryption_travels_with_the_upload(make_stack: MakeStack, master: Path) -> None:
    """JobOptions.encryption reaches the job's typed request, as the REST option does."""
    stack = await make_stack(hold_jobs=True)
    await upload(stack.assets(), master, asset_id="paid", encryption="cbcs")
    asset = await stack.engine.services.store.get_asset("paid")
    assert asset is not None
    job = await stack.engine.services.store.get_job(asset.current_job)
    assert job is not None and job.request.encryption == "cbcs"


async def test_cancelled_upload_leaves_nothing(make_stack: MakeStack, master: Path) -> None:
    stack = await make_stack()
    gate = asyncio.Event()
    messages = upload_messages(master, asset_id="gone", chunk=16 * 1024)

    async def slow() -> AsyncIterator[Any]:
        for m in messages[:3]:
            yield m
        gate.set()
        await asyncio.sleep(30)  # the client cancels while the stream is open
        yield messages[3]

    call = stack.assets().UploadAsset(slow())
    await gate.wait()
    for _ in range(50):  # the server has the temp file open
        if _uploads_left(stack):
            break
        await asyncio.sleep(0.02)
    assert len(_uploads_left(stack)) == 1
    call.cancel()
    for _ in range(100):
        if not _uploads_left(stack):
            break
        await asyncio.sleep(0.02)
    assert _uploads_left(stack) == []
    code, _ = await _code(stack.assets().GetAsset(assets_pb2.GetAssetRequest(asset_id="gone")))
    assert code == CODE.NOT_FOUND


async def test_watch_honours_the_deadline(make_stack: MakeStack, master: Path) -> None:
    stack = await make_stack(hold_jobs=True)  # the job stays QUEUED
    assets = stack.assets()
    await upload(assets, master, asset_id="held")
    t0 = time.monotonic()
    seen: list[Any] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for m in assets.WatchAsset(assets_pb2.WatchAssetRequest(asset_id="held"),
                                         timeout=1.0):
            seen.append(m)
    assert info.value.code() == CODE.DEADLINE_EXCEEDED
    assert 0.9 < time.monotonic() - t0 < 3.0
    assert [m.asset.state for m in seen] == [assets_pb2.ASSET_STATE_QUEUED]


async def test_create_asset_from_http_and_s3(make_stack: MakeStack, master: Path,
                                             s3_endpoint: str) -> None:
    """CreateAsset fetches over HTTP (redirects followed, bounded) and S3; private
    addresses are refused unless allowed; an unreachable source is UNAVAILABLE."""
    app = web.Application()
    fetched: list[str] = []

    async def file(request: web.Request) -> web.StreamResponse:
        fetched.append(request.path)
        return web.FileResponse(master)

    async def hop(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        raise web.HTTPFound("/master.mp4" if n == 0 else f"/hop/{n - 1}")

    app.router.add_get("/master.mp4", file)
    app.router.add_get("/hop/{n}", hop)
    source = TestServer(app, host="127.0.0.1")
    await source.start_server()
    base = f"http://127.0.0.1:{source.port}"
    try:
        stack = await make_stack(s3_endpoint=s3_endpoint)
        assets = stack.assets()
        opts = assets_pb2.JobOptions(ladder="240:300", preset="ultrafast")
        made = await assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri=f"{base}/hop/2", asset_id="fromhttp", options=opts))
        assert made.asset.source_name == "2"
        assert (await wait_ready(assets, "fromhttp"))[-1].asset.state == \
            assets_pb2.ASSET_STATE_READY
        # A taken id and bad options are refused before the master is fetched.
        before = len(fetched)
        code, text = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri=f"{base}/master.mp4", asset_id="fromhttp", options=opts)))
        assert code == CODE.ALREADY_EXISTS and "fromhttp" in text
        for bad in (assets_pb2.JobOptions(ladder="240:abc"),
                    assets_pb2.JobOptions(codecs=["vp9"])):
            code, text = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
                source_uri=f"{base}/master.mp4", options=bad)))
            assert code == CODE.INVALID_ARGUMENT, text
        assert len(fetched) == before
        code, text = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri=f"{base}/hop/9", options=opts)))
        assert code == CODE.INVALID_ARGUMENT and "redirects" in text
        code, _ = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri=f"{base}/missing.mp4", options=opts)))
        assert code == CODE.INVALID_ARGUMENT
        code, _ = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri="http://127.0.0.1:1/master.mp4", options=opts)))
        assert code == CODE.UNAVAILABLE

        import boto3

        bucket = make_bucket(s3_endpoint)
        boto3.client("s3", endpoint_url=s3_endpoint).upload_file(
            str(master), bucket, "in/master.mp4")
        made = await assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri=f"s3://{bucket}/in/master.mp4", asset_id="froms3", options=opts))
        assert made.asset.source_name == "master.mp4"
        assert (await wait_ready(assets, "froms3"))[-1].asset.state == \
            assets_pb2.ASSET_STATE_READY
        code, _ = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri=f"s3://{bucket}/in/none.mp4", options=opts)))
        assert code == CODE.INVALID_ARGUMENT

        strict = await make_stack(allow_private_sources=False)
        for uri in (f"{base}/master.mp4", f"http://localhost:{source.port}/master.mp4",
                    "http://169.254.169.254/latest/meta-data/", "http://[::1]:1/x",
                    "http://10.0.0.1/x"):
            code, text = await _code(strict.assets().CreateAsset(
                assets_pb2.CreateAssetRequest(source_uri=uri, options=opts)))
            assert code == CODE.PERMISSION_DENIED, (uri, text)
        assert _uploads_left(strict) == [] and _uploads_left(stack) == []
    finally:
        await source.close()


async def test_create_asset_from_a_source_that_breaks(make_stack: MakeStack) -> None:
    """A source that cuts its body short, or answers no HTTP: UNAVAILABLE naming what
    broke, in one line, and nothing kept (an unmapped aiohttp error was INTERNAL); a
    URI nobody can parse is INVALID_ARGUMENT."""
    stack = await make_stack()
    assets = stack.assets()
    async with broken_source() as base:
        for path, why in (("/short.mp4", "the transfer broke off"),
                          ("/chunks.mp4", "not a valid HTTP answer")):
            code, text = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
                source_uri=base + path, asset_id="torn")))
            assert code == CODE.UNAVAILABLE, text
            assert text.startswith(f"cannot fetch {base}{path}: {why}") and "\n" not in text
    for uri in ("http://[::1/m.mp4", "http://example.com:99999/m.mp4"):  # were INTERNAL
        code, text = await _code(assets.CreateAsset(assets_pb2.CreateAssetRequest(
            source_uri=uri, asset_id="torn")))
        assert code == CODE.INVALID_ARGUMENT and "not a valid URL" in text, text
    code, _ = await _code(assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="torn")))
    assert code == CODE.NOT_FOUND
    assert _uploads_left(stack) == []


async def test_events_unimplemented(make_stack: MakeStack) -> None:
    stack = await make_stack()
    events = events_pb2_grpc.EventServiceStub(stack.channel())
    code, _ = await _code(events.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="a")))
    assert code == CODE.UNIMPLEMENTED
    code, _ = await _code(_drain(events.SubscribeWatchEvents(
        events_pb2.SubscribeWatchEventsRequest())))
    assert code == CODE.UNIMPLEMENTED


async def test_unavailable_store_and_health(tmp_path: Path) -> None:
    """A metadata store that cannot open its file (its directory is blocked by a
    plain file): calls are UNAVAILABLE and health NOT_SERVING; once the directory
    can be made, SERVING; when the store is closed, NOT_SERVING again."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")
    store = SQLiteStore(blocker / "meta" / "metadata.db")
    objects = open_objects("", tmp_path)
    services = Services(store=store, objects=objects, cache=open_cache(""),
                        work_dir=tmp_path / "work")
    engine = Engine(Settings(data_dir=tmp_path), services, HeldJobs(objects))
    grants = SQLiteGrants(tmp_path / "grants.db")
    server = GrpcServer(engine, grants, Authenticator(), store.ping,
                        GrpcConfig(port=0, upload_dir=tmp_path / "up", health_interval=0.1))
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs lack the methods
    assets = assets_pb2_grpc.AssetServiceStub(channel)

    async def status(service: str = "") -> int:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        return int(reply.status)

    async def becomes(want: int) -> None:
        for _ in range(100):
            if await status() == want:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"health never became {want}")

    try:
        assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await status("cdlc.stream.v1.AssetService") == \
            health_pb2.HealthCheckResponse.NOT_SERVING
        code, text = await _code(assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="x")))
        assert code == CODE.UNAVAILABLE and "backend" in text
        blocker.unlink()
        await becomes(health_pb2.HealthCheckResponse.SERVING)
        code, _ = await _code(assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="x")))
        assert code == CODE.NOT_FOUND
        await store.close()
        await becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        await channel.close()
        await server.stop(0.5)
        await grants.close()
        await objects.close()


async def test_unavailable_when_the_job_queue_refuses_and_the_retry_after(
        make_stack: MakeStack, master: Path, redis_server: ServerProcess) -> None:
    """A killed Celery broker: the upload is recorded and its master kept, the call
    UNAVAILABLE saying so; RetryAsset is UNAVAILABLE too while the broker is out,
    and queues the job once it is back."""
    stack = await make_stack(broker=redis_server.url)
    assets = stack.assets()
    redis_server.kill()
    code, text = await _code(upload(assets, master, asset_id="unq"))
    assert code == CODE.UNAVAILABLE and "kept" in text and "OperationalError" in text, text
    got = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="unq"))
    assert got.asset.state == assets_pb2.ASSET_STATE_FAILED
    code, text = await _code(assets.RetryAsset(assets_pb2.RetryAssetRequest(asset_id="unq")))
    assert code == CODE.UNAVAILABLE and "kept" in text, text
    got = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="unq"))
    assert got.asset.state == assets_pb2.ASSET_STATE_FAILED  # not QUEUED without a message
    redis_server.start()
    await assets.RetryAsset(assets_pb2.RetryAssetRequest(asset_id="unq"))
    got = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="unq"))
    assert got.asset.state == assets_pb2.ASSET_STATE_QUEUED
