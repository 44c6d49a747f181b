"""Height-limited playback grants at the origin (cdn/tokens.py version 2, MAXH;
origin/playback.py item 3a): the master playlist and the MPD of a limited token
list only the renditions it allows, parsed with the m3u8 and mpegdash packages;
the files of a rendition above the limit are a 403; the manifests are cached by
the limit's class (the set of renditions it leaves), never by the token."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from cdn import tokens
from cdn.tokens import TEMPLATE_HEADER, TOKEN_PLACEHOLDER
from origin.app import PLAYBACK
from origin.playback import height_class
from tests.cdn.grant_ladder import VIDEO_IDS, dash_renditions, hls_renditions, ladder_media
from tests.origin.conftest import MakeOrigin, Media, Origin, publish_fake

KEY = b"grant-limits-key"
ASSET = "ladder1"


@pytest.fixture
async def ladder(make_origin: MakeOrigin, media: Media, tmp_path: Path) -> Origin:
    o = await make_origin(signing_key=KEY)
    await publish_fake(o.store, o.objects, ASSET, ladder_media(media, tmp_path / "ladder"))
    return o


def grant(max_height: int = 0, viewer: str = "", ttl: int = 600,
          client_ip: str | None = None) -> str:
    return tokens.sign_for(KEY, ASSET, ttl, client_ip, viewer=viewer, max_height=max_height)


async def manifests(o: Origin, token: str) -> dict[str, tuple[set[str], set[int], set[str]]]:
    out = {}
    for name, parse in (("master.m3u8", hls_renditions), ("manifest.mpd", dash_renditions)):
        r = await o.client.get(f"/vod/{ASSET}/{name}", params={"token": token})
        assert r.status == 200, (name, r.status)
        body = await r.text()
        assert f"token={token}" in body and TOKEN_PLACEHOLDER not in body
        out[name] = parse(body)
    return out


async def test_a_480_grant_lists_nothing_above_480(ladder: Origin) -> None:
    for max_height in (480, 500, 719):
        for name, (video, heights, audio) in (await manifests(
                ladder, grant(max_height, viewer="viewer-7"))).items():
            assert video == {"v480", "v360"}, (max_height, name)
            assert heights == {480, 360}, (max_height, name)
            assert audio == {"audio"}, (max_height, name)


async def test_unlimited_grants_and_v1_tokens_see_every_rendition(ladder: Origin) -> None:
    v1 = grant()
    assert v1.count(".") == 2  # no viewer, no limit: still the version-1 token
    for token in (v1, grant(viewer="viewer-7"), grant(1080), grant(4000)):
        for name, (video, heights, audio) in (await manifests(ladder, token)).items():
            assert video == set(VIDEO_IDS), (token, name)
            assert heights == {1080, 720, 480, 360} and audio == {"audio"}, (token, name)


async def test_files_above_the_limit_are_403(ladder: Origin, media: Media) -> None:
    token = grant(480, viewer="viewer-7")
    for rid in ("v1080", "v720"):
        for name in ("media.m3u8", "iframes.m3u8", "init.mp4", "1.m4s", "2.m4s"):
            r = await ladder.client.get(f"/vod/{ASSET}/{rid}/{name}", params={"token": token})
            assert r.status == 403, (rid, name)
            assert r.headers["Cache-Control"] == "no-store"
    # Even for a rendition this asset does not have: decided from the id alone.
    r = await ladder.client.get(f"/vod/{ASSET}/v2160/1.m4s", params={"token": token})
    assert r.status == 403
    clip = media.file("v240", "1.m4s")
    for rid in ("v480", "v360", "audio"):
        for name in ("init.mp4", "1.m4s"):
            r = await ladder.client.get(f"/vod/{ASSET}/{rid}/{name}", params={"token": token})
            assert r.status == 200, (rid, name)
            body = await r.read()
            if rid != "audio" and name == "1.m4s":
                assert body == clip
        r = await ladder.client.get(f"/vod/{ASSET}/{rid}/media.m3u8", params={"token": token})
        assert r.status == 200 and f"1.m4s?token={token}" in await r.text()
    # The same v1080 files with an unlimited grant: served.
    for name in ("media.m3u8", "init.mp4", "1.m4s"):
        r = await ladder.client.get(f"/vod/{ASSET}/v1080/{name}", params={"token": grant()})
        assert r.status == 200, name


async def test_a_limit_below_every_video_rendition_is_403(ladder: Origin) -> None:
    token = grant(240)
    for name in ("master.m3u8", "manifest.mpd", "v360/1.m4s"):
        r = await ladder.client.get(f"/vod/{ASSET}/{name}", params={"token": token})
        assert r.status == 403, name
    # Audio is never limited.
    r = await ladder.client.get(f"/vod/{ASSET}/audio/1.m4s", params={"token": token})
    assert r.status == 200


async def test_tampered_limit_or_viewer_is_403(ladder: Origin) -> None:
    good = grant(480, viewer="viewer-7")
    version, exp, bind, maxh, who, sig = good.split(".")
    other_viewer = tokens.encode_viewer("viewer-8")
    forged = {
        "raised limit": f"{version}.{exp}.{bind}.1080.{who}.{sig}",
        "no limit": f"{version}.{exp}.{bind}.0.{who}.{sig}",
        "other viewer": f"{version}.{exp}.{bind}.{maxh}.{other_viewer}.{sig}",
        "no viewer": f"{version}.{exp}.{bind}.{maxh}..{sig}",
        "as version 1": f"{exp}.{bind}.{sig}",
    }
    for why, token in forged.items():
        for path in ("master.m3u8", "manifest.mpd", "v360/1.m4s", "v360/media.m3u8"):
            r = await ladder.client.get(f"/vod/{ASSET}/{path}", params={"token": token})
            assert r.status == 403, (why, path)
    r = await ladder.client.get(f"/vod/{ASSET}/v360/1.m4s", params={"token": good})
    assert r.status == 200


async def test_client_bound_limited_grant(ladder: Origin) -> None:
    mine = grant(720, client_ip="127.0.0.1")  # the test client's address
    theirs = grant(720, client_ip="198.51.100.4")
    assert (await ladder.client.get(f"/vod/{ASSET}/v720/1.m4s",
                                    params={"token": mine})).status == 200
    assert (await ladder.client.get(f"/vod/{ASSET}/v1080/1.m4s",
                                    params={"token": mine})).status == 403
    assert (await ladder.client.get(f"/vod/{ASSET}/v720/1.m4s",
                                    params={"token": theirs})).status == 403


async def test_manifests_are_cached_by_class_not_by_token(ladder: Origin) -> None:
    """Distinct viewers and limits of one class share one cached template; a
    limit that excludes nothing shares the unlimited one; nothing cached names
    a token or a viewer."""
    pb = ladder.client.app[PLAYBACK]
    seen: dict[int, set[bytes]] = {}
    signatures: list[str] = []
    for i in range(40):
        max_height = (480, 500, 719, 0, 1080, 360)[i % 6]
        token = grant(max_height, viewer=f"viewer-{i}", ttl=600 + i)
        signatures.append(token.rsplit(".", 1)[1])
        for name in ("master.m3u8", "manifest.mpd"):
            r = await ladder.client.get(f"/vod/{ASSET}/{name}", params={"token": token},
                                        headers={"Accept-Encoding": "identity"})
            assert r.status == 200
            body = (await r.read()).replace(token.encode(), b"T")
            seen.setdefault(max_height * 10 + (name == "manifest.mpd"), set()).add(body)
    # One body per (limit, kind) whoever asked, and 480, 500, 719 one and the same.
    assert all(len(bodies) == 1 for bodies in seen.values())
    assert seen[4800] == seen[5000] == seen[7190] != seen[0]
    assert seen[10800] == seen[0] and seen[3600] not in (seen[4800], seen[0])
    keys = list(pb._responses)
    assert len(keys) == 6, keys  # 2 kinds x 3 classes: all, below 720, below 480
    assert sorted({k.rsplit(":", 1)[-1] for k in keys}) == ["lt480", "lt720", "t"]
    cached = [*keys, *getattr(ladder.cache, "_data", {})]  # the memo and the LRU
    assert not any(sig in k or "viewer" in k for k in cached for sig in signatures)


async def test_the_edge_gets_the_template_of_its_class(ladder: Origin) -> None:
    """What cdn/nginx.py asks for: the template (the token's place marked) of the
    requesting token's class, which it caches under that class."""
    for max_height, expected in ((480, {"v480", "v360"}), (0, set(VIDEO_IDS))):
        token = grant(max_height, viewer="edge-viewer")
        r = await ladder.client.get(f"/vod/{ASSET}/master.m3u8", params={"token": token},
                                    headers={TEMPLATE_HEADER: "1",
                                             "Accept-Encoding": "gzip"},
                                    auto_decompress=False)
        assert r.status == 200
        raw = await r.read()
        text = (gzip.decompress(raw) if r.headers.get("Content-Encoding") == "gzip"
                else raw).decode()
        assert token not in text and f"token={TOKEN_PLACEHOLDER}" in text
        assert hls_renditions(text)[0] == expected


def test_height_class() -> None:
    rends = {"v1080": "video", "v720": "video", "v480": "video", "audio": "audio",
             "sub_eng": "text"}
    assert height_class(rends, 1080) == height_class(rends, 5000) == ""
    assert height_class(rends, 720) == height_class(rends, 1079) == ":lt1080"
    assert height_class(rends, 480) == height_class(rends, 719) == ":lt720"
    assert height_class(rends, 479) is None  # nothing to watch: 403
    assert height_class({"audio": "audio"}, 240) == ""  # audio-only: nothing limited


async def test_expired_limited_grant_is_403(ladder: Origin) -> None:
    token = tokens.sign(KEY, ASSET, int(time.time()) - 1, viewer="v", max_height=480)
    r = await ladder.client.get(f"/vod/{ASSET}/v360/1.m4s", params={"token": token})
    assert r.status == 403
