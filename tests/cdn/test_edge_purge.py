"""Takedown: a deleted asset stops playing from the edge within 5 s of the delete,
through cdn/purge.py against a real nginx (purge in njs, cdn/templates/edge.js)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from cdn.purge import PurgeClient, asset_paths, purge_asset
from tests.cdn.conftest import EdgeFactory, FakeOrigin

TAKEDOWN_SECONDS = 5.0


def test_asset_paths() -> None:
    paths = asset_paths("a1", {"v360": 2, "audio": 1})
    assert paths == [
        "/vod/a1/master.m3u8", "/vod/a1/manifest.mpd",
        "/vod/a1/v360/media.m3u8", "/vod/a1/v360/init.mp4",
        "/vod/a1/v360/1.m4s", "/vod/a1/v360/2.m4s",
        "/vod/a1/audio/media.m3u8", "/vod/a1/audio/init.mp4", "/vod/a1/audio/1.m4s",
    ]
    for bad in ("a/b", "a?b", "a%2fb", "a\nb", ""):
        with pytest.raises(ValueError):
            asset_paths(bad, {"v360": 1})


async def statuses(s: aiohttp.ClientSession, base: str, paths: list[str]) -> dict[str, str]:
    out = {}
    for p in paths:
        async with s.get(base + p) as r:
            await r.read()
            out[p] = f"{r.status} {r.headers.get('X-Cache')}"
    return out


async def gone_within(
    s: aiohttp.ClientSession, base: str, paths: list[str], seconds: float
) -> bool:
    """True once every path is a 404 from the edge, polled until `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        now = await statuses(s, base, paths)
        if all(v.startswith("404") for v in now.values()):
            return True
        if time.monotonic() > deadline:
            print("still served:", {k: v for k, v in now.items() if not v.startswith("404")})
            return False
        await asyncio.sleep(0.1)


async def test_takedown_within_five_seconds(origin: FakeOrigin, make_edge: EdgeFactory) -> None:
    edges = [make_edge(origin.url), make_edge(origin.url)]
    renditions = origin.assets["a1"]
    paths = [p for p in asset_paths("a1", renditions) if "manifest.mpd" not in p]
    async with aiohttp.ClientSession() as s:
        for edge in edges:
            await statuses(s, edge.url, paths)
            warm = await statuses(s, edge.url, paths)
            assert set(warm.values()) == {"200 HIT"}, warm

        deleted_at = time.monotonic()
        del origin.assets["a1"]
        # Deleted at the origin only: the edges would keep serving the segments
        # for a year (expired manifests may answer STALE while refreshed).
        still = await statuses(s, edges[0].url, paths)
        assert {v for p, v in still.items() if p.endswith((".m4s", ".mp4"))} == {"200 HIT"}
        assert all(v.startswith("200") for v in still.values()), still

        result = await purge_asset([e.url for e in edges], "a1", renditions, repeat_after=0.5)
        assert result.ok, result.failed
        assert result.purged == 2 * len(paths)  # first pass: all cached, on both edges
        for edge in edges:
            left = TAKEDOWN_SECONDS - (time.monotonic() - deleted_at)
            assert await gone_within(s, edge.url, paths, left), edge.url

    # Another asset on the same edges is untouched.
    origin.add("a2", {"v360": 1})
    async with aiohttp.ClientSession() as s:
        assert (await statuses(s, edges[0].url, ["/vod/a2/v360/1.m4s"]))["/vod/a2/v360/1.m4s"] \
            == "200 MISS"


async def test_second_pass_catches_a_fetch_in_flight(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    """A miss that started before the delete puts the object back after the first
    pass; the second pass drops it again."""
    edge = make_edge(origin.url)
    origin.delay = 0.6
    seg = "/vod/a1/v360/2.m4s"
    async with aiohttp.ClientSession() as s, PurgeClient([edge.url]) as client:
        async def slow_get() -> int:
            async with s.get(edge.url + seg) as r:
                await r.read()
                return r.status
        in_flight = asyncio.create_task(slow_get())
        await asyncio.sleep(0.2)  # the origin is now busy with the fetch
        purge = asyncio.create_task(client.purge_asset("a1", origin.assets["a1"],
                                                       repeat_after=1.0))
        await asyncio.sleep(0.05)
        del origin.assets["a1"]
        assert await in_flight == 200  # the fetch completed and was cached
        async with s.get(edge.url + seg) as r:
            assert (r.status, r.headers["X-Cache"]) == (200, "HIT")
        result = await purge
        assert result.ok and result.purged == 1
        # The HIT above left the file open in the open-file cache, checked again
        # after at most a second.
        assert await gone_within(s, edge.url, [seg], 2.0)


async def test_purge_is_refused_from_other_addresses(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url, purge_allow=("10.11.12.13",))
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + "/vod/a1/v360/1.m4s") as r:
            assert r.status == 200
            await r.read()  # whole, so the edge has finished its cache entry
        result = await PurgeClient([edge.url], session=s).purge_paths(["/vod/a1/v360/1.m4s"])
        assert not result.ok and "HTTP 403" in result.failed[0]
        async with s.get(edge.url + "/vod/a1/v360/1.m4s") as r:
            assert r.headers["X-Cache"] == "HIT"


async def test_unreachable_edge_is_reported_not_raised() -> None:
    result = await purge_asset(["http://127.0.0.1:9"], "a1", {"v360": 1}, repeat_after=0)
    assert not result.ok and len(result.failed) == 1
    assert "/vod/a1/master.m3u8 (+4)" in result.failed[0]


def test_relative_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="start with"):
        asyncio.run(PurgeClient(["http://127.0.0.1:9"]).purge_paths(["vod/a1"]))


async def test_single_object_purge_and_batches(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url)
    seg = "/vod/a1/audio/2.m4s"
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + seg) as r:
            assert r.status == 200
            await r.read()  # whole, so the edge has finished its cache entry
        async with s.request("PURGE", edge.url + "/_edge/purge" + seg) as r:
            assert r.status == 200
        async with s.request("PURGE", edge.url + "/_edge/purge" + seg) as r:
            assert r.status == 404  # not cached any more
        async with s.get(edge.url + "/_edge/purge" + seg) as r:
            assert r.status == 405
        async with s.get(edge.url + seg) as r:
            assert r.headers["X-Cache"] == "MISS"  # fetched again from the origin
        # Small batches: many requests, same totals.
        client = PurgeClient([edge.url], batch=2, session=s)
        result = await client.purge_paths(asset_paths("a1", origin.assets["a1"]))
        assert (result.purged, result.not_cached, result.failed) == (1, 11, [])
    assert origin.hits[seg] == 2
