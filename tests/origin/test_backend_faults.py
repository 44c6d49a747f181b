"""The origin under backend faults and hostile requests, against real servers this
test owns and breaks: a moto S3 server killed or hung (SIGSTOP) or stalled
mid-object, a redis-server hung, the SQLite store closed under a live origin;
and a flood of distinct valid tokens.

What must hold: no response is a 200 with a short body; a hung S3 costs a segment
request at most 3 s (503 + Retry-After) and the origin recovers when S3 does; a
hung Redis leaves cached manifests fast; manifests outlive a metadata outage;
memory stays flat whatever the tokens; a cold segment request reads its own
rendition's index only."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cdn import tokens
from metadata import open_cache, open_objects, open_store
from metadata.cache import Cache, RedisCache
from metadata.models import media_key
from metadata.objects import ObjectStore
from metadata.s3_objects import S3Objects
from metadata.store import MetadataStore
from origin.app import PLAYBACK, OriginDeps, create_app
from tests.metadata.servers import ServerProcess, make_bucket, redis_server
from tests.origin.conftest import Media, publish_fake

__all__ = ["redis_server"]  # the fixture


def uid() -> str:
    return f"a{uuid.uuid4().hex[:10]}"


App = Callable[..., Any]


@pytest.fixture
async def origin_over(tmp_path: Path) -> AsyncIterator[App]:
    """origin_over(objects, cache=None, store=None, **deps) -> a TestClient of the
    real origin app (closed after the test)."""
    clients: list[TestClient[Any, Any]] = []

    async def make(objects: ObjectStore | None = None, cache: Cache | None = None,
                   store: MetadataStore | None = None, **kw: Any) -> TestClient[Any, Any]:
        deps = OriginDeps(store=store or open_store("", tmp_path),
                          objects=objects or open_objects("", tmp_path),
                          cache=cache or open_cache(""), close_backends=True, **kw)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(deps)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def s3_on(server: ServerProcess, **kw: Any) -> S3Objects:
    return S3Objects(make_bucket(server.url), "cdlc", endpoint_url=server.url, **kw)


async def timed_get(client: TestClient[Any, Any], url: str,
                    **kw: Any) -> tuple[int, bytes, dict[str, str], float]:
    t0 = time.perf_counter()
    async with client.get(url, **kw) as r:
        body = await r.read()
        return r.status, body, dict(r.headers), time.perf_counter() - t0


# -- S3 killed, hung, stalled mid-object ------------------------------------------------

async def test_s3_killed_is_503_never_a_short_200(
    moto: ServerProcess, origin_over: App, media: Media
) -> None:
    objects = s3_on(moto)
    client = await origin_over(objects)
    a = uid()
    await publish_fake(client.app[PLAYBACK].store, objects, a, media)
    warm = f"/vod/{a}/v240/1.m4s"
    status, body, _, _ = await timed_get(client, warm)
    assert (status, body) == (200, media.file("v240", "1.m4s"))  # its stat is now cached
    moto.kill()
    for url in [warm, f"/vod/{a}/v240/2.m4s", f"/vod/{a}/audio/init.mp4", warm]:
        status, body, headers, took = await timed_get(client, url)
        assert status == 503, (url, status, len(body))
        assert int(headers["Retry-After"]) >= 1
        assert headers["Cache-Control"] == "no-store"
        assert "immutable" not in headers.get("Cache-Control", "")
        assert took < 3.0, (url, took)
    assert client.app[PLAYBACK].backend_states()["objects"] in ("open", "half_open")


async def test_s3_hung_ends_within_3s_and_recovers(
    moto: ServerProcess, origin_over: App, media: Media
) -> None:
    objects = s3_on(moto, breaker_cooldown=1.0)
    client = await origin_over(objects)
    a = uid()
    await publish_fake(client.app[PLAYBACK].store, objects, a, media)
    warm = f"/vod/{a}/v240/1.m4s"
    assert (await timed_get(client, warm))[0] == 200
    moto.pause()
    try:
        took_all = []
        for url in [warm, f"/vod/{a}/v240/3.m4s", warm, f"/vod/{a}/audio/2.m4s", warm]:
            status, body, headers, took = await timed_get(client, url)
            assert status == 503 and "Retry-After" in headers, (url, status, len(body))
            assert took <= 3.0, (url, took)
            took_all.append(took)
        # Once the breaker is open, nobody waits for the hung server.
        assert took_all[-1] < 0.5, took_all
        assert client.app[PLAYBACK].backend_states()["objects"] != "closed"
    finally:
        moto.resume()
    deadline = time.monotonic() + 15
    while True:
        status, body, _, _ = await timed_get(client, f"/vod/{a}/v240/3.m4s")
        if status == 200:
            break
        assert status == 503 and time.monotonic() < deadline, status
        await asyncio.sleep(0.2)
    assert body == media.file("v240", "3.m4s")
    assert client.app[PLAYBACK].backend_states()["objects"] == "closed"


async def test_s3_stalling_mid_object_aborts_the_connection(
    moto: ServerProcess, origin_over: App, media: Media
) -> None:
    """The body breaks after the headers went out: the client must see a broken
    response (no clean end), never a complete-looking short one."""
    objects = s3_on(moto, read_timeout=1.0)
    client = await origin_over(objects)
    a = uid()
    await publish_fake(client.app[PLAYBACK].store, objects, a, media)
    big = bytes(range(256)) * (48 * 2**20 // 256)
    await objects.put_bytes(media_key(a, "v240", "2.m4s"), big)
    got = 0
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get(f"/vod/{a}/v240/2.m4s") as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(len(big))
            async for chunk in r.content.iter_chunked(2**16):
                got += len(chunk)
                if got >= 2**20 and moto.proc is not None and moto.proc.poll() is None:
                    moto.pause()
    moto.resume()
    assert 2**20 <= got < len(big)


# -- Redis hung ---------------------------------------------------------------------------

async def test_redis_hung_cached_manifests_stay_fast(
    redis_server: ServerProcess, origin_over: App, media: Media
) -> None:
    """p99 of 200 cached manifest requests < 50 ms with Redis hung (a bound on
    behaviour: without the breaker each request waits for Redis' timeout)."""
    cache = RedisCache(redis_server.url)
    client = await origin_over(cache=cache, head_ttl=60.0)
    a = uid()
    await publish_fake(client.app[PLAYBACK].store, client.app[PLAYBACK].objects, a, media)
    urls = [f"/vod/{a}/master.m3u8", f"/vod/{a}/v240/media.m3u8", f"/vod/{a}/manifest.mpd"]
    bodies = {}
    for url in urls:
        status, bodies[url], _, _ = await timed_get(client, url)
        assert status == 200
    redis_server.pause()
    try:
        latencies = []
        for i in range(200):
            url = urls[i % len(urls)]
            status, body, _, took = await timed_get(client, url)
            assert (status, body) == (200, bodies[url]), (i, status)
            latencies.append(took)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert p99 < 0.05, (p99, latencies[-5:])
        assert cache.breaker.state != "closed"
        assert client.app[PLAYBACK].backend_states()["cache"] != "closed"
    finally:
        redis_server.resume()
    # Redis back: the next probe closes the breaker and drops the fallback copy.
    deadline = time.monotonic() + 10
    while cache.breaker.state != "closed":  # type: ignore[comparison-overlap]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
        assert (await timed_get(client, urls[0]))[0] == 200
    assert len(cache.fallback) == 0


# -- metadata store out -------------------------------------------------------------------

async def test_manifests_outlive_a_metadata_outage(
    origin_over: App, media: Media
) -> None:
    """The store goes away under a live origin: what this process served before
    is served again (stale-if-error); what it never saw is a 503, not a 500."""
    client = await origin_over(head_ttl=0.2)
    pb = client.app[PLAYBACK]
    a = uid()
    await publish_fake(pb.store, pb.objects, a, media)
    other = uid()
    await publish_fake(pb.store, pb.objects, other, media)
    urls = [f"/vod/{a}/master.m3u8", f"/vod/{a}/v240/media.m3u8", f"/vod/{a}/manifest.mpd",
            f"/vod/{a}/v240/1.m4s", f"/vod/{a}/audio/init.mp4"]
    before = {}
    for url in urls:
        status, before[url], _, _ = await timed_get(client, url)
        assert status == 200, url
    await pb.store.close()  # the store is out from here on
    await asyncio.sleep(0.4)  # past head_ttl: the heads must come from the store again
    for _ in range(3):
        for url in urls:
            status, body, _, _ = await timed_get(client, url)
            assert (status, body) == (200, before[url]), url
    for url in (f"/vod/{other}/master.m3u8", f"/vod/{other}/v240/1.m4s",
                f"/vod/{a}/audio/2.m4s"):  # (audio's count was never read)
        status, _, headers, took = await timed_get(client, url)
        assert status == 503, (url, status)
        assert int(headers["Retry-After"]) >= 1 and headers["Cache-Control"] == "no-store"
        assert took < 2.5
    assert pb.backend_states()["store"] in ("open", "half_open")


# -- hostile requests: a new valid token per request ---------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def test_memory_flat_under_a_new_token_per_request(
    origin_over: App, media: Media
) -> None:
    """Tokens are checked, then forgotten: 20,000 distinct valid tokens leave no
    trace in caches or memos (RSS growth < 10 MB), and each viewer still gets
    its own token in its manifests."""
    key = b"rss-key"
    client = await origin_over(signing_key=key)
    pb = client.app[PLAYBACK]
    a = uid()
    await publish_fake(pb.store, pb.objects, a, media)
    now = int(time.time())
    routes = [f"/vod/{a}/master.m3u8", f"/vod/{a}/v240/media.m3u8", f"/vod/{a}/v240/1.m4s"]

    # A plain session: the TestClient keeps every response it made (to close them).
    session = aiohttp.ClientSession(str(client.make_url("")))

    async def one(i: int) -> None:
        token = tokens.sign(key, a, now + 3600 + i)
        url = routes[i % len(routes)]
        async with session.get(url, params={"token": token},
                               headers={"Accept-Encoding": "identity"}) as r:
            body = await r.read()
            assert r.status == 200, (url, r.status)
        if url.endswith(".m3u8"):
            assert f"token={token}".encode() in body and b"__CDLC_TOKEN__" not in body

    try:
        for i in range(2000):  # warm-up: allocator arenas, metric children, code paths
            await one(i)
        gc.collect()
        base = _rss()
        lru_entries = len(pb.cache) if hasattr(pb.cache, "__len__") else 0
        for i in range(2000, 22000):
            await one(i)
        gc.collect()
    finally:
        await session.close()
    grown = _rss() - base
    assert grown < 10 * 2**20, f"RSS grew {grown / 2**20:.1f} MB"
    assert len(pb._responses) <= 6 and len(pb._heads) == 1
    if hasattr(pb.cache, "__len__"):
        assert len(pb.cache) == lru_entries  # nothing keyed by a token


# -- cold segment requests read their own rendition ---------------------------------------

class RecordingStore:
    """The real SQLite store, its read calls recorded (a spy, not a mock)."""

    def __init__(self, inner: MetadataStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("get_") and callable(attr):
            async def recorded(*args: Any, **kw: Any) -> Any:
                self.calls.append((name, args))
                return await attr(*args, **kw)
            return recorded
        return attr


async def test_cold_segment_request_reads_only_its_rendition(
    origin_over: App, media: Media, tmp_path: Path
) -> None:
    spy = RecordingStore(open_store("", tmp_path))
    client = await origin_over(store=spy)
    a = uid()
    await publish_fake(spy.inner, client.app[PLAYBACK].objects, a, media)
    status, body, _, _ = await timed_get(client, f"/vod/{a}/audio/2.m4s")
    assert (status, body) == (200, media.file("audio", "2.m4s"))
    segment_reads = [args for name, args in spy.calls if name == "get_segments"]
    assert segment_reads == [(a, "audio")], spy.calls
    # Warm: no store read at all for the next segments of that rendition.
    spy.calls.clear()
    for n in (1, 3):
        assert (await timed_get(client, f"/vod/{a}/audio/{n}.m4s"))[0] == 200
    assert spy.calls == []
