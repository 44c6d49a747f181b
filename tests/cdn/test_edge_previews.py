"""Posters, storyboard sheets and the thumbnails track through a real nginx edge:
the poster and the sheets are cached once for every viewer whatever the token,
the track is one template with each viewer's token put in, and all three are
refused at the edge without a valid token."""

from __future__ import annotations

import time

import aiohttp

from cdn import tokens
from cdn.purge import asset_paths
from tests.cdn.conftest import EdgeFactory, FakeOrigin, segment_bytes

KEY = b"edge-preview-key"


async def test_previews_are_cached_once_and_guarded(origin: FakeOrigin,
                                                    make_edge: EdgeFactory) -> None:
    origin.add("a1", {"v360": 3, "audio": 3, "storyboard": 2})
    edge = make_edge(origin.url, signing_key=KEY)
    viewers = [tokens.sign(KEY, "a1", int(time.time()) + ttl) for ttl in (100, 200)]
    async with aiohttp.ClientSession() as s:
        for path in ("/vod/a1/poster.jpg", "/vod/a1/storyboard/1.jpg",
                     "/vod/a1/storyboard.vtt"):
            async with s.get(edge.url + path) as r:
                assert r.status == 403, path
        assert sum(origin.hits.values()) == 0
        for path, body in (("/vod/a1/poster.jpg", segment_bytes("a1", "", "poster.jpg")),
                           ("/vod/a1/storyboard/2.jpg",
                            segment_bytes("a1", "storyboard", "2.jpg"))):
            for i, token in enumerate(viewers):
                async with s.get(edge.url + path, params={"token": token}) as r:
                    assert r.status == 200 and await r.read() == body, path
                    assert r.headers["X-Cache"] == ("MISS" if i == 0 else "HIT"), path
            assert origin.hits[path] == 1, path
        for token in viewers:
            async with s.get(edge.url + "/vod/a1/storyboard.vtt", params={"token": token}) as r:
                assert r.status == 200
                assert f"?token={token}\n" in await r.text()
        assert origin.hits["/vod/a1/storyboard.vtt"] == 1
        # Not a preview file: the edge answers without asking the origin.
        async with s.get(edge.url + "/vod/a1/storyboard/1.png",
                         params={"token": viewers[0]}) as r:
            assert r.status == 404
        assert origin.hits["/vod/a1/storyboard/1.png"] == 0


def test_a_takedown_purges_the_previews() -> None:
    paths = asset_paths("a1", {"v360": 1, "storyboard": 2})
    for path in ("/vod/a1/poster.jpg", "/vod/a1/storyboard.vtt", "/vod/a1/storyboard/1.jpg",
                 "/vod/a1/storyboard/2.jpg", "/vod/a1/storyboard/poster.jpg"):
        assert path in paths
    assert "/vod/a1/storyboard/init.mp4" not in paths
