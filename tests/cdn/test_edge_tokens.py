"""Playback tokens checked at the edge (njs, cdn/templates/token.js) in the format
of cdn/tokens.py: valid ones reach the cache, tampered, expired, foreign and
malformed ones are a 403 from the edge itself, without a request to the origin."""

from __future__ import annotations

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
    """The njs verdict equals cdn.tokens.verify for a spread of near-miss tokens."""
    edge = make_edge(origin.url, signing_key=KEY)
    now = int(time.time())
    base = tokens.sign(KEY, "a1", now + 60)
    cases = [base, tokens.sign(KEY, "a1", now + 1), tokens.sign(KEY, "a1", 9_999_999_999)]
    cases += [flip(base, i) for i in range(len(base)) if base[i] != "."]
    cases += [base + "A", base[:-1], base.upper(), base.replace(".", "..", 1),
              f"{now + 60}.a.{'A' * 43}", "1e10.a." + base.rsplit(".", 1)[1]]
    async with aiohttp.ClientSession() as s:
        for token in cases:
            expected = 200 if tokens.verify(KEY, token, "a1") else 403
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
