"""Playback tokens checked at the edge (njs, cdn/templates/edge.js) in the formats
of cdn/tokens.py (versions 1 and 2): valid ones reach the cache, tampered,
expired, foreign and malformed ones are a 403 from the edge itself, without a
request to the origin, and so are a rendition's files above a version-2 token's
height limit; master playlists are cached once per height limit."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from cdn import tokens
from cdn.tokens import TOKEN_PLACEHOLDER
from tests.cdn.conftest import EdgeFactory, FakeOrigin, segment_bytes

KEY = b"edge-test-key"
SEG = "/vod/a1/v360/1.m4s"


def flip(text: str, index: int) -> str:
    """The same token with one base64url character changed."""
    c = text[index]
    return text[:index] + ("A" if c != "A" else "B") + text[index + 1:]


async def status_of(session: aiohttp.ClientSession, url: str, token: str | None) -> int:
    params = {"token": token} if token is not None else None
    async with session.get(url, params=params) as r:
        await r.read()
        return r.status


async def test_tokens_at_the_edge(origin: FakeOrigin, make_edge: EdgeFactory) -> None:
    edge = make_edge(origin.url, signing_key=KEY)
    now = int(time.time())
    good = tokens.sign(KEY, "a1", now + 300)
    async with aiohttp.ClientSession() as s:
        refused = {
            "missing": None,
            "empty": "",
            "tampered signature": flip(good, len(good) - 5),
            "tampered expiry": str(now + 301) + good[good.index("."):],
            "expired": tokens.sign(KEY, "a1", now - 2),
            "other asset": tokens.sign(KEY, "a2", now + 300),
            "other key": tokens.sign(b"not-the-key", "a1", now + 300),
            "bound to another client": tokens.sign(KEY, "a1", now + 300, "10.9.8.7"),
            "two fields": good.rsplit(".", 1)[0],
            "leading zero": "0" + good,
            "unknown binding": good.replace(".a.", ".x.", 1),
        }
        for why, token in refused.items():
            assert await status_of(s, edge.url + SEG, token) == 403, why
        # None of those reached the origin.
        assert sum(origin.hits.values()) == 0

        assert await status_of(s, edge.url + SEG, good) == 200
        # A token bound to this client's address (the edge sees 127.0.0.1).
        bound = tokens.sign(KEY, "a1", now + 300, "127.0.0.1")
        async with s.get(edge.url + SEG, params={"token": bound}) as r:
            assert (r.status, r.headers["X-Cache"]) == (200, "HIT")
            assert await r.read() == segment_bytes("a1", "v360", "1.m4s")
        # Repeated token parameters are malformed, not "first one wins".
        async with s.get(edge.url + SEG + f"?token={good}&token={good}") as r:
            assert r.status == 403
    assert origin.hits[SEG] == 1


async def test_edge_agrees_with_tokens_check(origin: FakeOrigin, make_edge: EdgeFactory) -> None:
    """The njs verdict equals cdn.tokens.is_valid for a spread of near-miss tokens."""
    edge = make_edge(origin.url, signing_key=KEY)
    now = int(time.time())
    base = tokens.sign(KEY, "a1", now + 60)
    cases = [base, tokens.sign(KEY, "a1", now + 1), tokens.sign(KEY, "a1", 9_999_999_999)]
    cases += [flip(base, i) for i in range(len(base)) if base[i] != "."]
    cases += [base + "A", base[:-1], base.upper(), base.replace(".", "..", 1),
              f"{now + 60}.a.{'A' * 43}", "1e10.a." + base.rsplit(".", 1)[1]]
    async with aiohttp.ClientSession() as s:
        for token in cases:
            expected = 200 if tokens.is_valid(KEY, token, "a1") else 403
            assert await status_of(s, edge.url + SEG, token) == expected, token


async def test_manifests_are_one_template_with_each_viewers_token(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    """With tokens on, the edge keeps one copy of a manifest (the origin's
    template, the token's place marked) for every viewer, and each viewer gets
    the copy with its own token in the child URLs, never another viewer's."""
    edge = make_edge(origin.url, signing_key=KEY)
    path = "/vod/a1/master.m3u8"
    async with aiohttp.ClientSession() as s:
        for ttl in (100, 200, 300):
            token = tokens.sign(KEY, "a1", int(time.time()) + ttl)
            async with s.get(edge.url + path, params={"token": token}) as r:
                assert r.status == 200
                body = await r.text()
            assert f"v360/media.m3u8?token={token}\n" in body, body
            assert TOKEN_PLACEHOLDER not in body
            # Compressed by the edge after the substitution (the client asked).
            assert r.headers.get("Content-Encoding") == "gzip"
        # A bad token is still refused before the cache.
        async with s.get(edge.url + path, params={"token": "1.a.x"}) as r:
            assert r.status == 403
    assert origin.hits[path] == 1
    assert origin.templates_asked == 1


# -- version 2: viewer and height limit (cdn/tokens.py) ------------------------------------

async def test_edge_agrees_with_tokens_check_on_version2(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    """The njs verdict equals cdn.tokens.is_valid (and Claims.allows) for version-2
    tokens and their near misses, on a segment and on the master playlist."""
    edge = make_edge(origin.url, signing_key=KEY)
    now = int(time.time())
    base = tokens.sign(KEY, "a1", now + 60, viewer="viewer-1", max_height=720)
    version, exp, bind, maxh, who, sig = base.split(".")
    cases = [base, tokens.sign(KEY, "a1", now + 60, viewer="Zoë 🎬"),
             tokens.sign(KEY, "a1", now + 60, max_height=360),
             tokens.sign(KEY, "a1", now + 60, max_height=359),   # below v360
             tokens.sign(KEY, "a1", now + 60, viewer="x" * 1024, max_height=99_999),
             tokens.sign(KEY, "a1", now + 60, "127.0.0.1", viewer="v", max_height=480),
             tokens.sign(KEY, "a1", now + 60, "10.1.2.3", viewer="v", max_height=480)]
    cases += [flip(base, i) for i in range(len(base)) if base[i] != "."]
    head = f"{version}.{exp}.{bind}"
    cases += [f"{head}.1080.{who}.{sig}", f"{head}.0.{who}.{sig}", f"{head}.{maxh}..{sig}",
              f"{head}.0{maxh}.{who}.{sig}", f"{head}.{maxh}.{who}A.{sig}",
              f"{head}.{maxh}.{sig}", f"3.{exp}.{bind}.{maxh}.{who}.{sig}", base + ".x",
              base.replace("2.", "02.", 1)]
    me = "127.0.0.1"  # the address the edge sees
    async with aiohttp.ClientSession() as s:
        for token in cases:
            valid = tokens.is_valid(KEY, token, "a1", client_ip=me)
            seg_ok = valid and tokens.verify(KEY, token, "a1", client_ip=me).allows("v360")
            assert await status_of(s, edge.url + SEG, token) == (200 if seg_ok else 403), token
            audio = await status_of(s, edge.url + "/vod/a1/audio/1.m4s", token)
            assert audio == (200 if valid else 403), token


async def test_renditions_above_the_limit_stop_at_the_edge(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    """A segment, init segment or media playlist of a rendition above the token's
    MAXH is a 403 from the edge, even when another viewer's request cached it."""
    edge = make_edge(origin.url, signing_key=KEY)
    now = int(time.time())
    full = tokens.sign(KEY, "a1", now + 300, viewer="subscriber")
    capped = tokens.sign(KEY, "a1", now + 300, viewer="basic", max_height=240)
    paths = ["/vod/a1/v360/1.m4s", "/vod/a1/v360/init.mp4", "/vod/a1/v360/media.m3u8"]
    async with aiohttp.ClientSession() as s:
        for p in paths:  # cached by a viewer who may
            assert await status_of(s, edge.url + p, full) == 200, p
        before = sum(origin.hits.values())
        for p in paths:
            async with s.get(edge.url + p, params={"token": capped}) as r:
                assert (r.status, r.headers["X-Cache"]) == (403, "DENIED"), p
        assert await status_of(s, edge.url + "/vod/a1/v1080/1.m4s", capped) == 403
        assert sum(origin.hits.values()) == before  # the origin was never asked
        assert await status_of(s, edge.url + "/vod/a1/audio/1.m4s", capped) == 200


async def test_top_manifests_are_cached_per_height_limit(
    origin: FakeOrigin, make_edge: EdgeFactory
) -> None:
    """One cached template per limit for master playlist and MPD (whatever the
    viewer or the expiry), the unlimited one under the path alone; a purge of the
    path drops every limit's copy."""
    from cdn.purge import PurgeClient

    edge = make_edge(origin.url, signing_key=KEY)
    now = int(time.time())
    path = "/vod/a1/master.m3u8"

    def tok(max_height: int, viewer: str, ttl: int = 300) -> str:
        return tokens.sign(KEY, "a1", now + ttl, viewer=viewer, max_height=max_height)

    async def get(token: str) -> tuple[str, str]:
        async with s.get(edge.url + path, params={"token": token}) as r:
            assert r.status == 200
            return r.headers["X-Cache"], await r.text()

    async with aiohttp.ClientSession() as s:
        # The fake origin's body names its fetch count: a copy shows who warmed it.
        warmed = {}
        for max_height in (0, 480, 720):
            cache, body = await get(tok(max_height, "first"))
            assert cache == "MISS"
            warmed[max_height] = body.splitlines()[1]
        assert len(set(warmed.values())) == 3
        v1 = tokens.sign(KEY, "a1", now + 100)
        for max_height, token in ((0, v1), (0, tok(0, "other", 400)),
                                  (480, tok(480, "other", 500)), (720, tok(720, "x", 600))):
            cache, body = await get(token)
            assert (cache, body.splitlines()[1]) == ("HIT", warmed[max_height]), max_height
            assert f"token={token}\n" in body
        assert origin.hits[path] == 3 and origin.templates_asked == 3

        async with PurgeClient([edge.url]) as purge:
            result = await purge.purge_paths([path])
        assert (result.purged, result.not_cached, result.failed) == (1, 0, [])
        await asyncio.sleep(1.2)  # open_file_cache_valid 1s: a dropped file's last hits
        for max_height in (0, 480, 720):
            cache, _ = await get(tok(max_height, "after purge"))
            assert cache == "MISS", max_height
    assert origin.hits[path] == 6
