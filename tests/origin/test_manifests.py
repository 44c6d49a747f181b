"""Manifests built per request from metadata by the packager, cached per asset
version: HLS master/media/I-frame playlists and the DASH MPD."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from cdn.tokens import sign
from metadata.cache import invalidate_asset
from metadata.models import Asset, Rendition, Segment
from tests.media import ffprobe
from tests.origin.conftest import MakeOrigin, Media, publish_fake

pytest.importorskip("packager.hls", reason="packager.hls has not landed yet")
pytest.importorskip("packager.dash", reason="packager.dash has not landed yet")

HLS = "application/vnd.apple.mpegurl"


def uris(playlist: str) -> list[str]:
    """URI lines and URI="..." attributes of an M3U8 (RFC 8216 §4.1)."""
    out = [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
    for ln in playlist.splitlines():
        if 'URI="' in ln:
            out.append(ln.split('URI="', 1)[1].split('"', 1)[0])
    return out


async def test_hls_and_dash(make_origin: MakeOrigin, media: Media) -> None:
    o = await make_origin()
    await publish_fake(o.store, o.objects, "m1", media)
    resp = await o.client.get("/vod/m1/master.m3u8")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith(HLS)
    assert resp.headers["Cache-Control"] == "public, max-age=2"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    master = await resp.text()
    assert master.startswith("#EXTM3U")
    assert any("v240/media.m3u8" in u for u in uris(master))
    resp = await o.client.get("/vod/m1/v240/media.m3u8")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith(HLS)
    media_pl = await resp.text()
    listed = uris(media_pl)
    assert any(u.endswith("init.mp4") for u in listed)
    n = len(media.segments["v240"])
    assert [u for u in listed if u.endswith(".m4s")] == [f"{i}.m4s" for i in range(1, n + 1)]
    resp = await o.client.get("/vod/m1/v240/iframes.m3u8")
    assert resp.status == 200 and (await resp.text()).startswith("#EXTM3U")
    resp = await o.client.get("/vod/m1/manifest.mpd")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/dash+xml")
    assert "<MPD" in await resp.text()
    assert (await o.client.get("/vod/m1/v999/media.m3u8")).status == 404


async def test_gzip_etag_and_head(make_origin: MakeOrigin, media: Media) -> None:
    o = await make_origin()
    await publish_fake(o.store, o.objects, "m2", media)
    plain = await o.client.get("/vod/m2/v240/media.m3u8", headers={"Accept-Encoding": "identity"})
    body = await plain.read()
    assert "Content-Encoding" not in plain.headers
    zipped = await o.client.get("/vod/m2/v240/media.m3u8",
                                headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(await zipped.read()) == body
    assert zipped.headers["ETag"] != plain.headers["ETag"]  # two representations
    again = await o.client.get("/vod/m2/v240/media.m3u8",
                               headers={"Accept-Encoding": "identity",
                                        "If-None-Match": plain.headers["ETag"]})
    assert again.status == 304
    head = await o.client.head("/vod/m2/v240/media.m3u8", headers={"Accept-Encoding": "identity"})
    assert head.status == 200 and head.headers["Content-Length"] == str(len(body))


async def test_tokens_are_carried_into_child_urls(make_origin: MakeOrigin, media: Media) -> None:
    key = b"k" * 32
    o = await make_origin(signing_key=key)
    await publish_fake(o.store, o.objects, "m3", media)
    token = sign(key, "m3", int(time.time()) + 600)
    for path in ["/vod/m3/master.m3u8", "/vod/m3/v240/media.m3u8", "/vod/m3/audio/media.m3u8"]:
        resp = await o.client.get(path, params={"token": token})
        assert resp.status == 200, path
        listed = uris(await resp.text())
        assert listed and all(f"token={token}" in u for u in listed), (path, listed)
        # ...and those URLs work.
    for u in uris(await (await o.client.get("/vod/m3/v240/media.m3u8",
                                             params={"token": token})).text()):
        assert (await o.client.get(f"/vod/m3/v240/{u}")).status == 200, u
    mpd = await (await o.client.get("/vod/m3/manifest.mpd", params={"token": token})).text()
    assert f"token={token}" in mpd


async def test_manifests_come_from_cache_and_follow_republish(
    make_origin: MakeOrigin, media: Media
) -> None:
    o = await make_origin(close_backends=False)
    asset = await publish_fake(o.store, o.objects, "m4", media)
    first = await (await o.client.get("/vod/m4/v240/media.m3u8")).text()
    n = len(media.segments["v240"])
    # Republish with one segment fewer, then invalidate as publishers do.
    rends = [Rendition(**{**r.__dict__, "asset_id": "m4"}) for r in media.renditions]
    segs = [Segment("m4", s.rendition_id, s.number, s.start, s.duration, s.size)
            for r in media.renditions for s in media.segments[r.id][: n - 1]]
    await o.store.publish(Asset(id="m4", version=asset.version), rends, segs)
    cached = await (await o.client.get("/vod/m4/v240/media.m3u8")).text()
    assert cached == first  # within the head TTL the old version is still served
    await invalidate_asset(o.cache, "m4")
    second = await (await o.client.get("/vod/m4/v240/media.m3u8")).text()
    assert f"{n}.m4s" in first and f"{n}.m4s" not in second
    # From here on the store is not needed: every answer is a cache hit.
    await o.store.close()
    for _ in range(3):
        assert await (await o.client.get("/vod/m4/v240/media.m3u8")).text() == second


async def test_iframe_playlist_ranges_decode(
    make_origin: MakeOrigin, media: Media, tmp_path: Path
) -> None:
    """The I-frame playlist's byte ranges cut real segments at the first sample, and
    audio renditions have no I-frame playlist."""
    o = await make_origin()
    await publish_fake(o.store, o.objects, "m5", media)
    text = await (await o.client.get("/vod/m5/v240/iframes.m3u8")).text()
    ranges = [ln.split(":", 1)[1] for ln in text.splitlines()
              if ln.startswith("#EXT-X-BYTERANGE:")]
    assert len(ranges) == len(media.segments["v240"])
    n, _, off = ranges[0].partition("@")
    resp = await o.client.get("/vod/m5/v240/1.m4s",
                              headers={"Range": f"bytes={off}-{int(off) + int(n) - 1}"})
    assert resp.status == 206
    piece = await resp.read()
    assert len(piece) == int(n)
    # The judge: FFmpeg decodes init + that range to exactly one key frame.
    probe_in = tmp_path / "iframe.mp4"
    probe_in.write_bytes(media.file("v240", "init.mp4") + piece)
    out = ffprobe(probe_in, "-count_frames", "-select_streams", "v:0",
                  "-show_entries", "stream=nb_read_frames")
    assert out["streams"][0]["nb_read_frames"] == "1"
    assert (await o.client.get("/vod/m5/audio/iframes.m3u8")).status == 404


async def test_republish_after_delete_serves_the_new_index(
    make_origin: MakeOrigin, media: Media
) -> None:
    """Manifests are cached under the asset's version. An asset deleted and
    published again under the same id must not be answered from the entries of its
    first life (a store that restarted its versions at 1 would be)."""
    o = await make_origin(api_key="k")
    asset_id = "again"
    await publish_fake(o.store, o.objects, asset_id, media)
    first = await (await o.client.get(f"/vod/{asset_id}/master.m3u8")).text()
    assert "v240" in first
    resp = await o.client.delete(f"/v1/assets/{asset_id}", headers={"X-API-Key": "k"})
    assert resp.status in (200, 204)
    assert (await o.client.get(f"/vod/{asset_id}/master.m3u8")).status == 404
    # Second life: only the audio rendition.
    audio_only = Media(media.root, [r for r in media.renditions if r.kind == "audio"],
                       {"audio": media.segments["audio"]})
    await publish_fake(o.store, o.objects, asset_id, audio_only)
    await invalidate_asset(o.cache, asset_id)  # as engine.pipeline does after publish
    resp = await o.client.get(f"/vod/{asset_id}/master.m3u8")
    assert resp.status == 200
    second = await resp.text()
    assert "v240" not in second and second != first
    mpd = await (await o.client.get(f"/vod/{asset_id}/manifest.mpd")).text()
    assert "v240" not in mpd
