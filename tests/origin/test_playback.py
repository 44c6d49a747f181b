"""Playback of init and media segments: bytes, ranges, validators, CORS, 404s,
traversal, across the local store and a real S3 server (moto)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from metadata.models import Asset, JobState
from tests.origin.conftest import MakeOrigin, Media, Origin, publish_fake

IMMUTABLE = "public, max-age=31536000, immutable"


def uid() -> str:
    return f"a{uuid.uuid4().hex[:10]}"


async def ready(make_origin: MakeOrigin, media: Media, storage: str = "local",
                **kw: Any) -> tuple[Origin, str]:
    o = await make_origin(storage, **kw)
    asset_id = uid()
    await publish_fake(o.store, o.objects, asset_id, media)
    return o, asset_id


@pytest.mark.parametrize("storage", ["local", "s3"])
async def test_segments_served_whole(make_origin: MakeOrigin, media: Media, storage: str) -> None:
    o, a = await ready(make_origin, media, storage)
    for rid, ctype in (("v240", "video/mp4"), ("audio", "audio/mp4")):
        for name in ["init.mp4", "1.m4s", f"{len(media.segments[rid])}.m4s"]:
            resp = await o.client.get(f"/vod/{a}/{rid}/{name}")
            assert resp.status == 200, name
            body = await resp.read()
            assert body == media.file(rid, name)
            assert resp.headers["Content-Length"] == str(len(body))
            assert resp.headers["Cache-Control"] == IMMUTABLE
            assert resp.headers["Content-Type"] == ctype
            assert resp.headers["Accept-Ranges"] == "bytes"
            etag = resp.headers["ETag"]
            assert etag.startswith('"') and not etag.startswith("W/")
            assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_s3_and_local_answer_byte_identically(
    make_origin: MakeOrigin, media: Media
) -> None:
    """Same requests to an asset in S3 and one on local disk: same statuses, same
    bodies, same range and length headers."""
    local, a1 = await ready(make_origin, media, "local")
    s3, a2 = await ready(make_origin, media, "s3")
    size = media.segments["v240"][0].size
    cases: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "init.mp4", {}),
        ("GET", "1.m4s", {}),
        ("GET", "2.m4s", {"Range": "bytes=0-99"}),
        ("GET", "1.m4s", {"Range": "bytes=100-"}),
        ("GET", "1.m4s", {"Range": "bytes=-500"}),
        ("GET", "1.m4s", {"Range": f"bytes=10-{size + 1000}"}),
        ("GET", "1.m4s", {"Range": f"bytes={size}-"}),
        ("GET", "1.m4s", {"Range": "bytes=5-1"}),
        ("HEAD", "1.m4s", {}),
        ("HEAD", "1.m4s", {"Range": "bytes=0-9"}),
    ]
    for method, name, headers in cases:
        answers = []
        for o, a in ((local, a1), (s3, a2)):
            resp = await o.client.request(method, f"/vod/{a}/v240/{name}", headers=headers)
            body = await resp.read()
            # (aiohttp's FileResponse sends its 416 without a Content-Length.)
            length = resp.headers.get("Content-Length") if resp.status < 400 else None
            assert resp.status in (200, 206, 416), (method, name, headers, resp.status)
            answers.append((resp.status, body, resp.headers.get("Content-Range"), length,
                            resp.headers.get("Content-Type")))
        assert answers[0] == answers[1], (method, name, headers)


@pytest.mark.parametrize("storage", ["local", "s3"])
async def test_ranges(make_origin: MakeOrigin, media: Media, storage: str) -> None:
    o, a = await ready(make_origin, media, storage)
    data = media.file("v240", "1.m4s")
    n = len(data)
    url = f"/vod/{a}/v240/1.m4s"
    for rng, lo, hi in [("bytes=10-99", 10, 100), ("bytes=100-", 100, n),
                        ("bytes=-64", n - 64, n), (f"bytes=0-{n * 2}", 0, n)]:
        resp = await o.client.get(url, headers={"Range": rng})
        assert resp.status == 206, rng
        assert await resp.read() == data[lo:hi]
        assert resp.headers["Content-Range"] == f"bytes {lo}-{hi - 1}/{n}"
    resp = await o.client.get(url, headers={"Range": f"bytes={n}-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{n}"
    assert resp.headers.get("Cache-Control") != IMMUTABLE  # never cache an error for a year


@pytest.mark.parametrize("storage", ["local", "s3"])
async def test_conditional_and_head(make_origin: MakeOrigin, media: Media, storage: str) -> None:
    o, a = await ready(make_origin, media, storage)
    url = f"/vod/{a}/v240/2.m4s"
    first = await o.client.get(url)
    etag = first.headers["ETag"]
    await first.read()
    resp = await o.client.get(url, headers={"If-None-Match": etag})
    assert resp.status == 304 and await resp.read() == b""
    assert resp.headers["ETag"] == etag
    resp = await o.client.get(url, headers={"If-None-Match": '"something-else"'})
    assert resp.status == 200 and len(await resp.read()) == len(media.file("v240", "2.m4s"))
    resp = await o.client.head(url)
    assert resp.status == 200 and await resp.read() == b""
    assert resp.headers["Content-Length"] == str(len(media.file("v240", "2.m4s")))
    assert resp.headers["ETag"] == etag


async def test_cors_preflight_and_exposed_headers(make_origin: MakeOrigin, media: Media) -> None:
    o, a = await ready(make_origin, media)
    resp = await o.client.options(f"/vod/{a}/v240/1.m4s", headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Range" in resp.headers["Access-Control-Allow-Headers"]
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    resp = await o.client.get(f"/vod/{a}/v240/1.m4s", headers={
        "Origin": "https://player.example", "Range": "bytes=0-9"})
    exposed = resp.headers["Access-Control-Expose-Headers"]
    assert "Content-Range" in exposed and "Content-Length" in exposed
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_not_found(make_origin: MakeOrigin, media: Media) -> None:
    o, a = await ready(make_origin, media)
    n = len(media.segments["v240"])
    for path in [f"/vod/{uid()}/v240/1.m4s", f"/vod/{a}/v999/1.m4s",
                 f"/vod/{a}/v240/{n + 1}.m4s", f"/vod/{a}/v240/0.m4s",
                 f"/vod/{a}/v240/01.m4s", f"/vod/{a}/v240/1.mp4", f"/vod/{a}/v240/x.m4s",
                 f"/vod/{uid()}/master.m3u8", f"/vod/{uid()}/manifest.mpd"]:
        resp = await o.client.get(path)
        assert resp.status == 404, path
        assert resp.headers.get("Cache-Control") != IMMUTABLE


async def test_only_ready_assets_are_served(make_origin: MakeOrigin, media: Media) -> None:
    o = await make_origin()
    a = uid()
    await publish_fake(o.store, o.objects, a, media)
    await o.store.set_state(a, JobState.PUBLISHING)  # e.g. a republish in progress
    await o.cache.delete(f"cdlc:a:{a}")
    for path in [f"/vod/{a}/v240/1.m4s", f"/vod/{a}/v240/init.mp4"]:
        assert (await o.client.get(path)).status == 404
    pending = uid()
    await o.store.put_asset(Asset(id=pending, state=JobState.TRANSCODING))
    assert (await o.client.get(f"/vod/{pending}/v240/1.m4s")).status == 404


async def raw_get(o: Origin, target: str) -> tuple[int, bytes]:
    """Send the request line exactly as given (no client-side normalisation)."""
    server = o.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_path_traversal_refused(make_origin: MakeOrigin, media: Media) -> None:
    o, a = await ready(make_origin, media)
    secret = b"SQLite format 3"
    for target in [
        "/vod/../metadata.db",
        f"/vod/{a}/../../metadata.db",
        f"/vod/{a}/v240/..%2F..%2F..%2Fmetadata.db",
        f"/vod/{a}/%2e%2e/init.mp4",
        f"/vod/{a}/v240/%2e%2e",
        "/vod/%2e%2e/v240/init.mp4",
        f"/vod/{a}%2Fv240/init.mp4",
        f"/vod/{a}/v240%2F..%2F..%2F..%2Fmetadata.db/init.mp4",
        f"/vod/{a}/..%5Cv240/init.mp4",
        f"/vod/{a}/v240/%00.m4s",
        "/vod/..%252F..%252Fmetadata.db/master.m3u8",
    ]:
        status, body = await raw_get(o, target)
        assert status in (400, 404), (target, status)
        assert secret not in body


async def test_unknown_asset_id_shapes_are_400_or_404(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    for path in ["/vod/-bad/v240/1.m4s", "/vod/a.b/v240/init.mp4", "/vod/" + "a" * 65 + "/x/1.m4s",
                 "/vod/ok/bad.rend/1.m4s"]:
        assert (await o.client.get(path)).status in (400, 404), path


async def test_cache_hits_do_not_touch_the_store(make_origin: MakeOrigin, media: Media) -> None:
    """After the first request the asset's head is cached: more segment requests do
    not query the metadata store (here: the store is closed and would raise)."""
    o, a = await ready(make_origin, media, close_backends=False)
    assert (await o.client.get(f"/vod/{a}/v240/1.m4s")).status == 200
    await o.store.close()
    for n in (1, 2, 3):
        resp = await o.client.get(f"/vod/{a}/v240/{n}.m4s")
        assert resp.status == 200
        assert await resp.read() == media.file("v240", f"{n}.m4s")


async def test_vanished_file_is_a_404_not_cached_for_a_year(
    make_origin: MakeOrigin, media: Media
) -> None:
    o, a = await ready(make_origin, media)
    path = o.objects.local_path(f"media/{a}/v240/2.m4s")
    assert path is not None
    path.unlink()
    resp = await o.client.get(f"/vod/{a}/v240/2.m4s")
    assert resp.status == 404
    assert resp.headers.get("Cache-Control") != IMMUTABLE


async def test_metrics_count_requests_bytes_and_cache(
    make_origin: MakeOrigin, media: Media
) -> None:
    o, a = await ready(make_origin, media)
    body = await (await o.client.get(f"/vod/{a}/v240/1.m4s")).read()
    await (await o.client.get(f"/vod/{a}/v240/2.m4s")).read()
    await (await o.client.get(f"/vod/{uid()}/v240/1.m4s")).read()
    text = await (await o.client.get("/metrics")).text()
    assert 'cdlc_origin_requests_total{route="segment",status="200"} 2.0' in text
    assert 'cdlc_origin_requests_total{route="segment",status="404"} 1.0' in text
    sent = len(body) + len(media.file("v240", "2.m4s")) + len(b"404")  # error bodies count
    assert f'cdlc_origin_response_bytes_total{{route="segment"}} {float(sent)}' in text
    assert 'cdlc_origin_cache_total{kind="asset",result="hit"} 1.0' in text
    assert 'cdlc_origin_cache_total{kind="asset",result="miss"} 2.0' in text
    assert 'cdlc_origin_request_seconds_bucket{le="0.5",route="segment"}' in text
