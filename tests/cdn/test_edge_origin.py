"""The nginx edge in front of the real origin (origin.app over SQLite and the local
object store) serving a real CMAF asset: segments through the edge are the
published bytes, tokens are refused at the edge before the origin hears of them,
a takedown (admin DELETE + purge) empties the edge within 5 s, and a killed
origin leaves cached segments playing. The origin's own /metrics is the judge of
what reached it."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cdn import tokens
from cdn.edge import NGINX, NginxEdge, free_port
from cdn.purge import asset_paths
from tests.e2e.asset import BuiltAsset, aclone_asset, make_asset
from tests.e2e.servers import OriginProcess

KEY = b"edge-origin-key"
ASSET = "edgeasset"

pytestmark = pytest.mark.skipif(
    shutil.which(NGINX) is None or shutil.which("ffmpeg") is None,
    reason="needs nginx and ffmpeg",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuiltAsset]:
    d = tmp_path_factory.mktemp("edge-origin")
    return d, make_asset(d, ASSET, seconds=6)


@pytest.fixture
def stack(data_dir: tuple[Path, BuiltAsset], tmp_path: Path
          ) -> Iterator[tuple[OriginProcess, NginxEdge]]:
    edge_port = free_port()
    origin = OriginProcess(data_dir[0], signing_key=KEY, cli=True,
                           edges=[f"http://127.0.0.1:{edge_port}"]).start()
    edge = NginxEdge(origin.url, tmp_path / "edge", port=edge_port, signing_key=KEY,
                     worker_processes=1)
    try:
        edge.start()
        yield origin, edge
    finally:
        edge.stop()
        origin.stop()


async def origin_requests(s: aiohttp.ClientSession, origin: OriginProcess) -> int:
    """Requests the origin served, by its own count (all routes but /metrics)."""
    async with s.get(origin.url + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for m in re.finditer(r'^cdlc_origin_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        if 'route="metrics"' not in m.group(1):
            total += float(m.group(2))
    return int(total)


def token(asset: str = ASSET) -> str:
    return tokens.sign_for(KEY, asset, 600)


async def test_segments_through_the_edge_are_the_published_bytes(
    data_dir: tuple[Path, BuiltAsset], stack: tuple[OriginProcess, NginxEdge]
) -> None:
    origin, edge = stack
    objects = data_dir[0] / "objects" / "media" / ASSET
    async with aiohttp.ClientSession() as s:
        before = await origin_requests(s, origin)
        for rendition, count in data_dir[1].renditions.items():
            for name in ["init.mp4", *(f"{n}.m4s" for n in range(1, count + 1))]:
                url = f"{edge.url}/vod/{ASSET}/{rendition}/{name}"
                for expected in ("MISS", "HIT"):
                    # A fresh token each time: the cache key must not care.
                    async with s.get(url, params={"token": token()}) as r:
                        assert (r.status, r.headers["X-Cache"]) == (200, expected), url
                        assert r.headers["Cache-Control"] == \
                            "public, max-age=31536000, immutable"
                        body = await r.read()
                    assert body == (objects / rendition / name).read_bytes()
        fetched = sum(c + 1 for c in data_dir[1].renditions.values())
        assert await origin_requests(s, origin) - before == fetched


async def test_bad_tokens_stop_at_the_edge(stack: tuple[OriginProcess, NginxEdge]) -> None:
    origin, edge = stack
    url = f"{edge.url}/vod/{ASSET}/v360/1.m4s"
    async with aiohttp.ClientSession() as s:
        before = await origin_requests(s, origin)
        for bad in (None, tokens.sign(KEY, ASSET, int(time.time()) - 1),
                    token("other"), token()[:-1] + "x"):
            async with s.get(url, params={"token": bad} if bad else None) as r:
                assert (r.status, r.headers["X-Cache"]) == (403, "DENIED")
        assert await origin_requests(s, origin) == before
        # And the origin itself agrees about the same token (its own check).
        async with s.get(f"{origin.url}/vod/{ASSET}/v360/1.m4s",
                         params={"token": token("other")}) as r:
            assert r.status == 403


async def test_takedown_at_the_origin_empties_the_edge(
    data_dir: tuple[Path, BuiltAsset], stack: tuple[OriginProcess, NginxEdge]
) -> None:
    origin, edge = stack
    victim = await aclone_asset(data_dir[0], ASSET, "takedown1")
    # Manifests too: with tokens on they are shared cache entries (templates).
    segs = asset_paths(victim.asset_id, victim.renditions)
    async with aiohttp.ClientSession() as s:
        q = {"token": token(victim.asset_id)}
        for p in segs:
            for _ in range(2):
                async with s.get(edge.url + p, params=q) as r:
                    await r.read()
            assert (r.status, r.headers["X-Cache"]) == (200, "HIT"), p

        # The origin (CDLC_EDGES) purges its edges itself as part of the DELETE.
        deleted_at = time.monotonic()
        async with s.delete(f"{origin.url}/v1/assets/{victim.asset_id}") as r:
            assert r.status == 204
        while True:
            codes = []
            for p in segs:
                async with s.get(edge.url + p, params=q) as r:
                    codes.append(r.status)
            if set(codes) == {404}:
                break
            assert time.monotonic() - deleted_at < 5.0, codes
            await asyncio.sleep(0.1)
        # Other assets keep playing.
        async with s.get(f"{edge.url}/vod/{ASSET}/v360/1.m4s", params={"token": token()}) as r:
            assert r.status == 200


async def test_cached_segments_play_while_the_origin_is_dead(
    data_dir: tuple[Path, BuiltAsset], stack: tuple[OriginProcess, NginxEdge]
) -> None:
    origin, edge = stack
    rend = "v240"
    count = data_dir[1].renditions[rend]
    paths = [f"/vod/{ASSET}/{rend}/{n}.m4s" for n in range(1, count + 1)]
    async with aiohttp.ClientSession() as s:
        for p in paths:
            # Read each body whole: a response left unread is cut by the client,
            # and the edge may still be filling its cache entry when the origin dies.
            async with s.get(edge.url + p, params={"token": token()}) as r:
                assert r.status == 200
                await r.read()
        origin.stop(kill=True)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(origin.url + "/healthz") as r:
                pass
        for p in paths:
            async with s.get(edge.url + p, params={"token": token()}) as r:
                assert (r.status, r.headers["X-Cache"]) == (200, "HIT"), p
                body = await r.read()
            assert body == (data_dir[0] / "objects" / "media" / ASSET / rend /
                            p.rsplit("/", 1)[1]).read_bytes()
        # Never cached: an honest 502 from the edge.
        async with s.get(f"{edge.url}/vod/{ASSET}/v144/1.m4s", params={"token": token()}) as r:
            assert r.status == 502


async def test_takedown_without_tokens_includes_shared_manifests(
    data_dir: tuple[Path, BuiltAsset], tmp_path: Path
) -> None:
    """Tokens off: manifests are shared cache entries too (gzip variants by Vary);
    the purge drops them with the segments."""
    victim = await aclone_asset(data_dir[0], ASSET, "takedown2")
    paths = asset_paths(victim.asset_id, victim.renditions)
    edge_port = free_port()
    with OriginProcess(data_dir[0], cli=True, edges=[f"http://127.0.0.1:{edge_port}"]) as origin, \
            NginxEdge(origin.url, tmp_path / "edge", port=edge_port, worker_processes=1) as edge:
        async with aiohttp.ClientSession() as s:
            for p in paths:
                for _ in range(2):
                    async with s.get(edge.url + p) as r:  # Accept-Encoding: gzip, deflate
                        await r.read()
                assert (r.status, r.headers["X-Cache"]) == (200, "HIT"), p
            async with s.get(edge.url + paths[0]) as r:
                assert r.headers.get("Content-Encoding") == "gzip"
                assert r.headers.get("Vary") == "Accept-Encoding"

            deleted_at = time.monotonic()
            async with s.delete(f"{origin.url}/v1/assets/{victim.asset_id}") as r:
                assert r.status == 204  # the origin purged its edge (CDLC_EDGES)
            while True:
                codes = {}
                for p in paths:
                    async with s.get(edge.url + p) as r:
                        codes[p] = r.status
                if set(codes.values()) == {404}:
                    break
                assert time.monotonic() - deleted_at < 5.0, codes
                await asyncio.sleep(0.1)


def _uris(playlist: str) -> list[str]:
    """Child URIs of an HLS playlist: URI="..." attributes and URI lines."""
    found = re.findall(r'URI="([^"]+)"', playlist)
    found += [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
    return found


async def _play_start(s: aiohttp.ClientSession, base: str, tok: str,
                      segments: int = 2) -> list[tuple[str, int, str, str]]:
    """What a player does to start: master, every media playlist, init and the
    first segments of each; (url, status, X-Cache, body) of every request."""
    from urllib.parse import urljoin

    seen: list[tuple[str, int, str, str]] = []

    async def get(url: str) -> str:
        async with s.get(url) as r:
            body = await r.read()
            seen.append((url, r.status, r.headers.get("X-Cache", ""),
                         body.decode("latin-1") if url.split("?")[0].endswith(".m3u8")
                         else ""))
            return body.decode("latin-1")

    master_url = f"{base}/vod/{ASSET}/master.m3u8?token={tok}"
    master = await get(master_url)
    for media_uri in _uris(master):
        media_url = urljoin(master_url, media_uri)
        media = await get(media_url)
        uris = _uris(media)
        for uri in [u for u in uris if "init.mp4" in u] + [u for u in uris if ".m4s" in u][
                :segments]:
            await get(urljoin(media_url, uri))
    return seen


@pytest.fixture
def app_stack(data_dir: tuple[Path, BuiltAsset], tmp_path: Path
              ) -> Iterator[tuple[OriginProcess, NginxEdge]]:
    """The origin app alone (tests/e2e/origin_main.py, no job executor) behind an
    edge, tokens on."""
    origin = OriginProcess(data_dir[0], signing_key=KEY).start()
    edge = NginxEdge(origin.url, tmp_path / "edge", signing_key=KEY, worker_processes=1)
    try:
        edge.start()
        yield origin, edge
    finally:
        edge.stop()
        origin.stop()


async def test_a_new_viewer_starts_from_the_edge_while_the_origin_is_down(
    app_stack: tuple[OriginProcess, NginxEdge],
) -> None:
    """Tokens on: manifests are cached at the edge with the token outside the key,
    so a viewer whose token the origin never saw gets master, media playlists and
    the first segments from the edge, each carrying its own token."""
    origin, edge = app_stack
    now = int(time.time())
    first, second = tokens.sign(KEY, ASSET, now + 600), tokens.sign(KEY, ASSET, now + 700)
    async with aiohttp.ClientSession() as s:
        warm = await _play_start(s, edge.url, first)
        assert warm and all(status == 200 for _, status, _, _ in warm), warm
        assert len(warm) >= 1 + 2 * 3, [u for u, *_ in warm]  # master, 2+ renditions
        origin.stop(kill=True)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(origin.url + "/healthz"):
                pass
        await asyncio.sleep(2.5)  # past the manifests' max-age: stale, not fresh
        cold = await _play_start(s, edge.url, second)
    assert [u.replace(second, "T") for u, *_ in cold] == \
        [u.replace(first, "T") for u, *_ in warm]
    for url, status, cache, body in cold:
        assert status == 200, (url, status, cache)
        assert cache in ("HIT", "STALE"), (url, cache)
        if body:  # a playlist: this viewer's token in every child URL, no other
            assert first not in body and "__CDLC_TOKEN__" not in body, body
            assert all(f"token={second}" in u for u in _uris(body)), body
