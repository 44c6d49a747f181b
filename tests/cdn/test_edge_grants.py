"""Height-limited playback grants (cdn/tokens.py version 2) through the real
stack: the origin app (tests/e2e/origin_main.py over SQLite and the local object
store) behind a real nginx edge (cdn/nginx.py), a four-rung ladder asset.

The edge refuses a rendition above the token's MAXH itself (the origin's own
/metrics shows it never heard of those requests), caches the master playlist
and the MPD once per limit, and keeps serving each limit its own copy while the
origin is down."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cdn import tokens
from cdn.edge import NGINX, NginxEdge, free_port
from metadata import open_objects, open_store
from tests.cdn.grant_ladder import VIDEO_IDS, dash_renditions, hls_renditions, ladder_media
from tests.e2e.servers import OriginProcess
from tests.origin.conftest import Media, publish_fake
from tests.origin.conftest import media as media  # the session's CMAF clip (fixture)

KEY = b"edge-grants-key"
ASSET = "grants1"
MANIFESTS = {"master.m3u8": hls_renditions, "manifest.mpd": dash_renditions}
LOW = {"v480", "v360"}

pytestmark = pytest.mark.skipif(shutil.which(NGINX) is None, reason="needs nginx")


@pytest.fixture
async def stack(media: Media, tmp_path: Path) -> AsyncIterator[tuple[OriginProcess, NginxEdge]]:
    data = tmp_path / "data"
    store, objects = open_store("", data), open_objects("", data)
    try:
        await publish_fake(store, objects, ASSET, ladder_media(media, tmp_path / "ladder"))
    finally:
        await store.close()
    origin = OriginProcess(data, signing_key=KEY).start()
    edge = NginxEdge(origin.url, tmp_path / "edge", signing_key=KEY, worker_processes=1)
    try:
        edge.start()
        yield origin, edge
    finally:
        edge.stop()
        origin.stop()


def grant(max_height: int = 0, viewer: str = "", ttl: int = 600) -> str:
    return tokens.sign_for(KEY, ASSET, ttl, viewer=viewer, max_height=max_height)


async def origin_requests(s: aiohttp.ClientSession, origin: OriginProcess) -> int:
    """Playback requests the origin served, by its own count."""
    async with s.get(origin.url + "/metrics") as r:
        text = await r.text()
    return int(sum(float(m.group(2)) for m in re.finditer(
        r'^cdlc_origin_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M)
        if 'route="metrics"' not in m.group(1)))


async def fetch(s: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str, bytes]:
    async with s.get(url, params={"token": token}) as r:
        return r.status, r.headers.get("X-Cache", ""), await r.read()


def every(video: set[str]) -> dict[str, set[str]]:
    return {name: set(video) for name in MANIFESTS}


async def listed(s: aiohttp.ClientSession, base: str, token: str,
                 expect_cache: tuple[str, ...] | None = None) -> dict[str, set[str]]:
    """The video renditions each top-level manifest lists for this token (and
    that the token is in its child URLs, no other); with ``expect_cache``, the
    edge's X-Cache must be one of those."""
    out = {}
    for name, parse in MANIFESTS.items():
        status, cache, body = await fetch(s, f"{base}/vod/{ASSET}/{name}", token)
        assert status == 200, (name, status)
        assert expect_cache is None or cache in expect_cache, (name, cache)
        text = body.decode()
        assert f"token={token}" in text and tokens.TOKEN_PLACEHOLDER not in text
        video, heights, audio = parse(text)
        assert audio == {"audio"}, name
        assert heights == {int(v[1:]) for v in video}, name
        out[name] = video
    return out


async def test_limits_at_the_edge_and_the_origin(
    stack: tuple[OriginProcess, NginxEdge], media: Media
) -> None:
    origin, edge = stack
    capped = grant(480, viewer="basic-plan-viewer")
    async with aiohttp.ClientSession() as s:
        for base in (edge.url, origin.url):
            assert await listed(s, base, capped) == every(LOW), base
            for token in (grant(), grant(viewer="premium"), grant(1080, viewer="hd")):
                assert await listed(s, base, token) == every(set(VIDEO_IDS)), (base, token)

        # Above the limit: 403 from the edge, the origin never asked; and the
        # origin's own answer to the same requests is a 403 too.
        above = [f"/vod/{ASSET}/{rid}/{name}" for rid in ("v1080", "v720")
                 for name in ("1.m4s", "init.mp4", "media.m3u8")]
        before = await origin_requests(s, origin)
        for path in above:
            assert (await fetch(s, edge.url + path, capped))[:2] == (403, "DENIED"), path
        assert await origin_requests(s, origin) == before
        for path in above:
            assert (await fetch(s, origin.url + path, capped))[0] == 403, path

        # Within it: the published bytes.
        clip = media.file("v240", "1.m4s")
        for base in (edge.url, origin.url):
            status, _, body = await fetch(s, f"{base}/vod/{ASSET}/v360/1.m4s", capped)
            assert (status, body) == (200, clip), base
            assert (await fetch(s, f"{base}/vod/{ASSET}/audio/1.m4s", capped))[0] == 200

        # Forged limits and viewers: 403 at both.
        version, exp, bind, maxh, who, sig = capped.split(".")
        for forged in (f"{version}.{exp}.{bind}.1080.{who}.{sig}",
                       f"{version}.{exp}.{bind}.0.{who}.{sig}",
                       f"{version}.{exp}.{bind}.{maxh}.{tokens.encode_viewer('other')}.{sig}"):
            for base in (edge.url, origin.url):
                for path in (f"/vod/{ASSET}/master.m3u8", f"/vod/{ASSET}/v360/1.m4s",
                             f"/vod/{ASSET}/v1080/1.m4s"):
                    assert (await fetch(s, base + path, forged))[0] == 403, (base, path)


async def test_each_limit_keeps_its_own_cached_manifests(
    stack: tuple[OriginProcess, NginxEdge],
) -> None:
    """Warm the edge with a limited and an unlimited viewer, kill the origin:
    new viewers of either class (tokens the origin never saw, v1 included) get
    their own class's master playlist and MPD from the edge's cache."""
    origin, edge = stack
    async with aiohttp.ClientSession() as s:
        assert await listed(s, edge.url, grant(480, viewer="warm-low")) == \
            every(LOW)
        assert await listed(s, edge.url, grant(viewer="warm-full")) == \
            every(set(VIDEO_IDS))
        origin.stop(kill=True)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(origin.url + "/healthz"):
                pass
        # Fresh hits first, then the same past the manifests' max-age (stale).
        for wait in (0.0, 2.5):
            await asyncio.sleep(wait)
            cached = ("HIT",) if not wait else ("HIT", "STALE")
            now = int(time.time())
            for token, expected in (
                (tokens.sign(KEY, ASSET, now + 900, viewer="cold-low", max_height=480), LOW),
                (tokens.sign(KEY, ASSET, now + 901), set(VIDEO_IDS)),
                (tokens.sign(KEY, ASSET, now + 902, viewer="cold-full"), set(VIDEO_IDS)),
            ):
                assert await listed(s, edge.url, token, cached) == \
                    every(expected), (wait, token)
            # A limit never seen before has no copy: the edge cannot make one.
            status, _, _ = await fetch(s, f"{edge.url}/vod/{ASSET}/master.m3u8",
                                       grant(720, viewer="new-class"))
            assert status == 502


async def test_takedown_drops_every_limits_copy(media: Media, tmp_path: Path) -> None:
    """The admin DELETE purges the edge (CDLC_EDGES, cdn/purge.py): the master
    playlist and MPD cached for each height limit are dropped with it, not left
    to expire."""
    data = tmp_path / "data"
    store, objects = open_store("", data), open_objects("", data)
    try:
        await publish_fake(store, objects, ASSET, ladder_media(media, tmp_path / "ladder"))
    finally:
        await store.close()
    edge_port = free_port()
    paths = [f"/vod/{ASSET}/{name}" for name in MANIFESTS]
    views = [grant(480, viewer="low"), grant(720, viewer="mid"), grant(viewer="full")]
    with OriginProcess(data, signing_key=KEY, cli=True,
                       edges=[f"http://127.0.0.1:{edge_port}"]) as origin, \
            NginxEdge(origin.url, tmp_path / "edge", port=edge_port, signing_key=KEY,
                      worker_processes=1) as edge:
        async with aiohttp.ClientSession() as s:
            for token in views:
                for p in paths:
                    for expected in ("MISS", "HIT"):
                        assert (await fetch(s, edge.url + p, token))[:2] == (200, expected)
            async with s.delete(f"{origin.url}/v1/assets/{ASSET}") as r:
                assert r.status == 204  # after the origin's first purge pass
            # Past open_file_cache_valid (1 s) but within the copies' max-age (2 s):
            # only a purge that found every limit's copy makes them all 404 now.
            await asyncio.sleep(1.2)
            codes = {(t.split(".")[3], p): (await fetch(s, edge.url + p, t))[:2]
                     for t in views for p in paths}
            assert set(codes.values()) == {(404, "MISS")}, codes
