"""The nginx edge's cache against a real nginx: MISS then HIT, a token-free cache
key, one upstream fetch for concurrent viewers, stale content when the origin is
down, TTLs from the origin, and no shared 403s."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from cdn.edge import NGINX
from cdn.nginx import EdgeConfigError, render_nginx_config
from tests.cdn.conftest import IMMUTABLE, MANIFEST_TTL, EdgeFactory, FakeOrigin, segment_bytes

SEG = "/vod/a1/v360/1.m4s"

pytestmark = pytest.mark.skipif(shutil.which(NGINX) is None, reason="nginx not installed")


async def get(url: str, **kw: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, params=kw or None) as r:
        return r.status, dict(r.headers), await r.read()


def nginx_t(conf: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "t.conf"
    path.write_text(conf)
    return subprocess.run([NGINX, "-t", "-q", "-c", str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("key", [None, b"k"])
@pytest.mark.parametrize("origin_url", ["http://127.0.0.1:9", "https://localhost:8443"])
def test_rendered_config_passes_nginx_t(tmp_path: Path, key: bytes | None,
                                       origin_url: str) -> None:
    conf = render_nginx_config(origin_url, "127.0.0.1:8081", tmp_path / "c", key)
    result = nginx_t(conf, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"pid {(tmp_path / 'c').resolve()}/nginx.pid;" in conf
    assert "daemon on;" in conf and "proxy_cache_lock on;" in conf


def test_rendered_config_without_purge_or_cors(tmp_path: Path) -> None:
    conf = render_nginx_config("http://127.0.0.1:9", "[::1]:8081", tmp_path / "c", None,
                               purge=False, cors_origin=None, daemon=False)
    assert "proxy_cache_purge" not in conf and "load_module" not in conf
    assert "Access-Control" not in conf.replace("proxy_hide_header Access-Control", "")
    assert nginx_t(conf, tmp_path).returncode == 0


@pytest.mark.parametrize(("origin_url", "listen"), [
    ("ftp://h", "127.0.0.1:1"),
    ("http://h/path", "127.0.0.1:1"),
    ("http://h:99999", "127.0.0.1:1"),
    ("http://h", "127.0.0.1"),
    ("http://h", "127.0.0.1:0"),
    ("http://h", "a b:80"),
])
def test_bad_arguments_are_refused(tmp_path: Path, origin_url: str, listen: str) -> None:
    with pytest.raises(EdgeConfigError):
        render_nginx_config(origin_url, listen, tmp_path, None)


def test_missing_module_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(EdgeConfigError, match="libnginx-mod-http-js"):
        render_nginx_config("http://h", "127.0.0.1:1", tmp_path, b"k", module_dirs=[tmp_path])


async def test_miss_then_hit(origin: FakeOrigin, make_edge: EdgeFactory) -> None:
    edge = make_edge(origin.url)
    status, headers, body = await get(edge.url + SEG)
    assert (status, headers["X-Cache"]) == (200, "MISS")
    assert body == segment_bytes("a1", "v360", "1.m4s")
    assert headers["Cache-Control"] == IMMUTABLE  # the origin's policy reaches players
    status, headers, body2 = await get(edge.url + SEG)
    assert (status, headers["X-Cache"], body2) == (200, "HIT", body)
    assert origin.hits[SEG] == 1
    # The access log records the cache status of each request, never the token.
    await get(edge.url + SEG, token="secret-ish")
    edge.reopen_logs()
    await asyncio.sleep(0.2)
    log = edge.access_log.read_text()
    assert log.count(f"GET {SEG} ") == 3 and "cache=MISS" in log and "cache=HIT" in log
    assert "secret-ish" not in log


async def test_cache_key_ignores_token(origin: FakeOrigin, make_edge: EdgeFactory) -> None:
    edge = make_edge(origin.url)
    first = await get(edge.url + SEG, token="viewer-one")
    second = await get(edge.url + SEG, token="viewer-two")
    third = await get(edge.url + SEG)
    assert [r[1]["X-Cache"] for r in (first, second, third)] == ["MISS", "HIT", "HIT"]
    assert first[2] == second[2] == third[2]
    assert origin.hits[SEG] == 1
    # The miss was forwarded with its query: the origin checks tokens on misses.
    assert origin.tokens_seen == ["viewer-one"]


async def test_a_body_broken_mid_way_is_never_cached(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    """The origin announces the whole length, sends half and aborts (its store died
    mid-stream): the viewer sees a broken response, not a short 200, and the edge
    keeps nothing, so the next viewer gets a fresh, whole copy from the origin."""
    edge = make_edge(origin.url)
    origin.broken.add(SEG)
    async with aiohttp.ClientSession() as s:
        for _ in range(2):  # broken twice: no copy was kept the first time
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(edge.url + SEG) as r:
                    assert r.status == 200
                    await r.read()
        assert origin.hits[SEG] == 2
        origin.broken.clear()
        async with s.get(edge.url + SEG) as r:
            assert (r.status, r.headers["X-Cache"]) == (200, "MISS")
            assert await r.read() == segment_bytes("a1", "v360", "1.m4s")
        async with s.get(edge.url + SEG) as r:
            assert (r.status, r.headers["X-Cache"]) == (200, "HIT")
            assert await r.read() == segment_bytes("a1", "v360", "1.m4s")
    assert origin.hits[SEG] == 3


async def test_concurrent_viewers_cause_one_origin_fetch(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url)
    origin.delay = 0.4  # long enough for all requests to arrive during the fetch
    async with aiohttp.ClientSession() as s:
        async def fetch() -> tuple[int, bytes]:
            async with s.get(edge.url + SEG) as r:
                return r.status, await r.read()
        results = await asyncio.gather(*(fetch() for _ in range(20)))
    expected = segment_bytes("a1", "v360", "1.m4s")
    assert all(r == (200, expected) for r in results)
    assert origin.hits[SEG] == 1


async def test_stale_content_while_origin_is_down(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url)
    segs = [f"/vod/a1/v360/{n}.m4s" for n in (1, 2, 3)] + ["/vod/a1/v360/init.mp4"]
    manifest = "/vod/a1/master.m3u8"
    for path in [*segs, manifest]:
        assert (await get(edge.url + path))[0] == 200
    await origin.stop()
    await asyncio.sleep(MANIFEST_TTL + 1.2)  # expired (whole seconds)
    for path in segs:
        status, headers, body = await get(edge.url + path)
        assert (status, headers["X-Cache"]) == (200, "HIT"), path
        assert body == segment_bytes("a1", "v360", path.rsplit("/", 1)[1])
    status, headers, body = await get(edge.url + manifest)
    assert (status, headers["X-Cache"]) == (200, "STALE")
    assert body.startswith(b"#EXTM3U")
    # Never cached, origin down: an honest 502, not a hang.
    status, _, _ = await get(edge.url + "/vod/a1/audio/1.m4s")
    assert status == 502


async def test_manifest_ttl_comes_from_the_origin(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url)
    path = "/vod/a1/v360/media.m3u8"
    for expected in ("MISS", "HIT"):
        status, headers, body = await get(edge.url + path)
        assert (status, headers["X-Cache"]) == (200, expected)
        assert body == f"#EXTM3U\n# {path} 1\n".encode()
    await asyncio.sleep(MANIFEST_TTL + 1.2)  # nginx counts whole seconds
    # Expired: refreshed (in the background, the stale copy answers meanwhile).
    status, headers, _ = await get(edge.url + path)
    assert status == 200 and headers["X-Cache"] in ("EXPIRED", "UPDATING", "STALE")
    for _ in range(50):
        if origin.hits[path] == 2:
            break
        await asyncio.sleep(0.05)
    assert origin.hits[path] == 2


async def test_unknown_and_forbidden_are_not_shared(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url)
    origin.forbidden.add(SEG)
    # A 403 from the origin belongs to one viewer's token: never cached, even
    # though the origin sent max-age.
    for _ in range(2):
        assert (await get(edge.url + SEG))[0] == 403
    assert origin.hits[SEG] == 2
    assert (await get(edge.url + "/vod/nope/v360/1.m4s"))[0] == 404
    # Paths outside the playback URLs never reach the origin.
    for path in ("/admin/assets", "/vod/a1/v360/x/1.m4s", "/metrics"):
        assert (await get(edge.url + path))[0] == 404
    assert sum(origin.hits.values()) == 3
    assert (await get(edge.url + "/_edge/health"))[0] == 200


async def test_cors_for_players_on_other_origins(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url)
    _, headers, _ = await get(edge.url + SEG)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Cache" in headers["Access-Control-Expose-Headers"]


async def test_preflight_is_answered_by_the_edge(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    edge = make_edge(origin.url, signing_key=b"k")
    async with aiohttp.ClientSession() as s, s.options(edge.url + SEG, headers={
        "Origin": "http://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range",
    }) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Range" in r.headers["Access-Control-Allow-Headers"]
    # A refused token still carries CORS headers: the player can read the 403.
    status, headers, _ = await get(edge.url + SEG, token="bad")
    assert (status, headers["Access-Control-Allow-Origin"]) == (403, "*")
    assert sum(origin.hits.values()) == 0


async def test_byte_ranges_on_miss_and_hit(origin: FakeOrigin, make_edge: EdgeFactory) -> None:
    edge = make_edge(origin.url)
    full = segment_bytes("a1", "v360", "1.m4s")
    async with aiohttp.ClientSession() as s:
        for expected in ("MISS", "HIT"):
            async with s.get(edge.url + SEG, headers={"Range": "bytes=100-1099"}) as r:
                assert (r.status, r.headers["X-Cache"]) == (206, expected)
                assert r.headers["Content-Range"] == f"bytes 100-1099/{len(full)}"
                assert await r.read() == full[100:1100]
    # The miss fetched the whole object once (the cache never stores a slice).
    assert origin.hits[SEG] == 1
