"""RFC 9110 conditional and range requests on every playback route, against both
object stores (the local directory with sendfile, a real S3 server): one table of
requests, the same answers from both (origin/http_conditional.py is the one
evaluator)."""

from __future__ import annotations

import uuid
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import pytest

from tests.origin.conftest import MakeOrigin, Media, Origin, publish_fake

STORES = ["local", "s3"]


async def ready(make_origin: MakeOrigin, media: Media, storage: str,
                **kw: Any) -> tuple[Origin, str]:
    o = await make_origin(storage, **kw)
    asset_id = f"a{uuid.uuid4().hex[:10]}"
    await publish_fake(o.store, o.objects, asset_id, media)
    return o, asset_id


def _cases(size: int, etag: str, lm: str) -> list[tuple[str, str, dict[str, str], int,
                                                         tuple[int, int] | None]]:
    """(why, method, headers, status, byte span of the body or None = empty)."""
    earlier = formatdate(parsedate_to_datetime(lm).timestamp() - 86400, usegmt=True)
    later = formatdate(parsedate_to_datetime(lm).timestamp() + 86400, usegmt=True)
    whole = (0, size)
    return [
        ("plain", "GET", {}, 200, whole),
        ("single range", "GET", {"Range": "bytes=0-99"}, 206, (0, 100)),
        ("open range", "GET", {"Range": "bytes=100-"}, 206, (100, size)),
        ("suffix range", "GET", {"Range": "bytes=-500"}, 206, (size - 500, size)),
        ("range past the end, clipped", "GET", {"Range": f"bytes=10-{size + 1000}"}, 206,
         (10, size)),
        ("one byte", "GET", {"Range": "bytes=0-0"}, 206, (0, 1)),
        ("last byte", "GET", {"Range": f"bytes={size - 1}-"}, 206, (size - 1, size)),
        ("unit is case-insensitive", "GET", {"Range": "BYTES=0-9"}, 206, (0, 10)),
        ("whitespace around specs", "GET", {"Range": "bytes= 0-9 ,"}, 206, (0, 10)),
        ("multiple ranges: whole body", "GET", {"Range": "bytes=0-9,20-29"}, 200, whole),
        ("multiple ranges, one satisfiable", "GET", {"Range": f"bytes=0-9,{size}-"}, 206,
         (0, 10)),
        ("unsatisfiable: at the end", "GET", {"Range": f"bytes={size}-"}, 416, None),
        ("unsatisfiable: -0", "GET", {"Range": "bytes=-0"}, 416, None),
        ("unsatisfiable: all past the end", "GET",
         {"Range": f"bytes={size}-{size + 5},{size + 10}-"}, 416, None),
        ("invalid: garbage", "GET", {"Range": "garbage"}, 200, whole),
        ("invalid: bytes=abc", "GET", {"Range": "bytes=abc"}, 200, whole),
        ("invalid: bytes=", "GET", {"Range": "bytes="}, 200, whole),
        ("invalid: other unit", "GET", {"Range": "items=0-5"}, 200, whole),
        ("invalid: last < first", "GET", {"Range": "bytes=5-1"}, 200, whole),
        ("invalid: bare dash", "GET", {"Range": "bytes=-"}, 200, whole),
        ("invalid: three parts", "GET", {"Range": "bytes=1-2-3"}, 200, whole),
        ("invalid: negative", "GET", {"Range": "bytes=--5"}, 200, whole),
        ("If-Range: current ETag", "GET", {"Range": "bytes=0-9", "If-Range": etag}, 206,
         (0, 10)),
        ("If-Range: wrong ETag", "GET", {"Range": "bytes=0-9", "If-Range": '"nope"'}, 200,
         whole),
        ("If-Range: weak ETag never matches", "GET",
         {"Range": "bytes=0-9", "If-Range": "W/" + etag}, 200, whole),
        ("If-Range: Last-Modified", "GET", {"Range": "bytes=0-9", "If-Range": lm}, 206,
         (0, 10)),
        ("If-Range: other date", "GET", {"Range": "bytes=0-9", "If-Range": earlier}, 200,
         whole),
        ("If-Range: bad date", "GET", {"Range": "bytes=0-9", "If-Range": "soon"}, 200, whole),
        ("If-Match: current", "GET", {"If-Match": etag}, 200, whole),
        ("If-Match: in a list", "GET", {"If-Match": f'"x", {etag}'}, 200, whole),
        ("If-Match: star", "GET", {"If-Match": "*"}, 200, whole),
        ("If-Match: other", "GET", {"If-Match": '"nope"'}, 412, None),
        ("If-Match: weak is not strong", "GET", {"If-Match": "W/" + etag}, 412, None),
        ("If-Match fails before Range", "GET", {"If-Match": '"nope"', "Range": "bytes=0-9"},
         412, None),
        ("If-None-Match: current", "GET", {"If-None-Match": etag}, 304, None),
        ("If-None-Match: weak comparison", "GET", {"If-None-Match": "W/" + etag}, 304, None),
        ("If-None-Match: in a list", "GET", {"If-None-Match": f'"x", {etag}'}, 304, None),
        ("If-None-Match: star", "GET", {"If-None-Match": "*"}, 304, None),
        ("If-None-Match: other", "GET", {"If-None-Match": '"nope"'}, 200, whole),
        ("If-None-Match: other, with Range", "GET",
         {"If-None-Match": '"nope"', "Range": "bytes=0-9"}, 206, (0, 10)),
        ("If-Modified-Since: Last-Modified", "GET", {"If-Modified-Since": lm}, 304, None),
        ("If-Modified-Since: later", "GET", {"If-Modified-Since": later}, 304, None),
        ("If-Modified-Since: earlier", "GET", {"If-Modified-Since": earlier}, 200, whole),
        ("If-Modified-Since: invalid date", "GET", {"If-Modified-Since": "yesterday"}, 200,
         whole),
        ("If-None-Match wins over If-Modified-Since", "GET",
         {"If-None-Match": '"nope"', "If-Modified-Since": lm}, 200, whole),
        ("If-Unmodified-Since: earlier", "GET", {"If-Unmodified-Since": earlier}, 412, None),
        ("If-Unmodified-Since: Last-Modified", "GET", {"If-Unmodified-Since": lm}, 200,
         whole),
        ("If-Unmodified-Since: invalid date", "GET", {"If-Unmodified-Since": "x"}, 200, whole),
        ("If-Match wins over If-Unmodified-Since", "GET",
         {"If-Match": etag, "If-Unmodified-Since": earlier}, 200, whole),
        ("HEAD", "HEAD", {}, 200, None),
        ("HEAD ignores Range", "HEAD", {"Range": "bytes=0-9"}, 200, None),
        ("HEAD, If-None-Match", "HEAD", {"If-None-Match": etag}, 304, None),
        ("HEAD, If-Match other", "HEAD", {"If-Match": '"nope"'}, 412, None),
    ]


@pytest.mark.parametrize("storage", STORES)
@pytest.mark.parametrize("name", ["1.m4s", "init.mp4"])
async def test_media_conditionals_and_ranges(
    make_origin: MakeOrigin, media: Media, storage: str, name: str
) -> None:
    o, a = await ready(make_origin, media, storage)
    url = f"/vod/{a}/v240/{name}"
    data = media.file("v240", name)
    size = len(data)
    first = await o.client.get(url)
    assert first.status == 200 and await first.read() == data
    etag, lm = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag.startswith('"') and parsedate_to_datetime(lm).tzinfo is not None
    failures = []
    for why, method, headers, status, span in _cases(size, etag, lm):
        resp = await o.client.request(method, url, headers=headers)
        body = await resp.read()
        got = (resp.status, body)
        want = (status, data[span[0]:span[1]] if span else b"")
        if got != want:
            failures.append((why, resp.status, len(body)))
            continue
        h = resp.headers
        if status in (200, 206):
            length = (span[1] - span[0]) if span else size
            assert h["Content-Length"] == str(length), why
            assert h["ETag"] == etag and h["Last-Modified"] == lm, why
            assert h["Cache-Control"] == "public, max-age=31536000, immutable", why
            assert h["Accept-Ranges"] == "bytes", why
        if status == 206:
            assert span is not None
            assert h["Content-Range"] == f"bytes {span[0]}-{span[1] - 1}/{size}", why
        else:
            assert "Content-Range" not in h or status == 416, why
        if status == 416:
            assert h["Content-Range"] == f"bytes */{size}", why
        if status == 304:
            assert h["ETag"] == etag, why  # RFC 9110 §15.4.5
            assert "Content-Type" not in h, why
        if status in (412, 416):
            assert h["Cache-Control"] == "no-store", why
        assert h["Access-Control-Allow-Origin"] == "*", why
    assert not failures, failures


@pytest.mark.parametrize("storage", STORES)
async def test_manifest_conditionals_and_ranges(
    make_origin: MakeOrigin, media: Media, storage: str
) -> None:
    """Manifests have a strong ETag and no Last-Modified: the same evaluator, date
    preconditions ignored (RFC 9110 §13.1.3, §13.1.4)."""
    o, a = await ready(make_origin, media, storage)
    for url in (f"/vod/{a}/master.m3u8", f"/vod/{a}/v240/media.m3u8",
                f"/vod/{a}/manifest.mpd"):
        plain = {"Accept-Encoding": "identity"}
        first = await o.client.get(url, headers=plain)
        data = await first.read()
        etag = first.headers["ETag"]
        size = len(data)
        lm = formatdate(0, usegmt=True)
        cases = [
            ({"Range": "bytes=0-9"}, 206, data[:10]),
            ({"Range": "garbage"}, 200, data),
            ({"Range": "bytes=-0"}, 416, b""),
            ({"Range": "bytes=0-9", "If-Range": '"nope"'}, 200, data),
            ({"If-None-Match": etag}, 304, b""),
            ({"If-None-Match": "W/" + etag}, 304, b""),
            ({"If-Match": '"nope"'}, 412, b""),
            ({"If-Match": etag}, 200, data),
            ({"If-Modified-Since": lm}, 200, data),  # no Last-Modified: ignored
            ({"If-Unmodified-Since": lm}, 200, data),
        ]
        for headers, status, body in cases:
            resp = await o.client.get(url, headers={**plain, **headers})
            assert (resp.status, await resp.read()) == (status, body), (url, headers)
            if status == 416:
                assert resp.headers["Content-Range"] == f"bytes */{size}"
        head = await o.client.head(url, headers=plain)
        assert head.status == 200 and head.headers["Content-Length"] == str(size)
        assert await head.read() == b""


@pytest.mark.parametrize("storage", STORES)
async def test_unknown_and_unpublished_objects(
    make_origin: MakeOrigin, media: Media, storage: str
) -> None:
    """404 for what is not published, whatever the conditionals say."""
    o, a = await ready(make_origin, media, storage)
    n = len(media.segments["v240"])
    for url in (f"/vod/{a}/v240/{n + 1}.m4s", f"/vod/{a}/nope/1.m4s", "/vod/zzz/v240/1.m4s"):
        for headers in ({}, {"Range": "bytes=0-9"}, {"If-None-Match": "*"}):
            resp = await o.client.get(url, headers=headers)
            assert resp.status == 404, (url, headers)
            assert resp.headers["Cache-Control"] == "no-store"


async def test_per_viewer_manifests_have_their_own_validators(
    make_origin: MakeOrigin, media: Media
) -> None:
    """With tokens on, one cached template serves every viewer; each viewer's body
    (its token in the child URLs) has its own ETag, so a 304 never confirms
    another viewer's body."""
    import gzip as gz

    from cdn import tokens

    key = b"rfc-key"
    o, a = await ready(make_origin, media, "local", signing_key=key)
    first, second = (tokens.sign_for(key, a, ttl) for ttl in (600, 700))
    url = f"/vod/{a}/v240/media.m3u8"
    etags = {}
    for tok in (first, second):
        for enc in ("identity", "gzip"):
            r = await o.client.get(url, params={"token": tok},
                                   headers={"Accept-Encoding": enc}, auto_decompress=False)
            raw = await r.read()
            text = gz.decompress(raw) if enc == "gzip" else raw
            assert r.status == 200 and f"?token={tok}".encode() in text
            assert (r.headers.get("Content-Encoding") == "gzip") == (enc == "gzip")
            etags[tok, enc] = r.headers["ETag"]
            again = await o.client.get(url, params={"token": tok}, headers={
                "Accept-Encoding": enc, "If-None-Match": etags[tok, enc]})
            assert again.status == 304 and again.headers["ETag"] == etags[tok, enc]
    assert len(set(etags.values())) == 4, etags
    crossed = await o.client.get(url, params={"token": second}, headers={
        "Accept-Encoding": "identity", "If-None-Match": etags[first, "identity"]})
    assert crossed.status == 200
