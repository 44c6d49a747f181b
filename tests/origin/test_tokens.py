"""Playback tokens: the format of cdn/tokens.py, and the origin enforcing it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from cdn.tokens import (
    MAX_VIEWER_BYTES,
    Claims,
    TokenError,
    allows,
    check,
    encode_viewer,
    is_valid,
    rendition_label,
    sign,
    verify,
)
from tests.origin.conftest import MakeOrigin, Media, publish_fake

KEY = b"test-signing-key"


def test_format_matches_the_documented_recipe() -> None:
    token = sign(b"k", "a1", 2000000000)
    mac = hmac.new(b"k", b"cdlc1\na1\n2000000000\n", hashlib.sha256).digest()
    assert token == "2000000000.a." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    bound = sign(b"k", "a1", 2000000000, "10.0.0.7")
    mac = hmac.new(b"k", b"cdlc1\na1\n2000000000\n10.0.0.7", hashlib.sha256).digest()
    assert bound == "2000000000.ip." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_check_accepts_and_refuses() -> None:
    now = 1_700_000_000
    t = sign(KEY, "a1", now + 60)
    assert check(KEY, t, "a1", now=now) == now + 60
    assert is_valid(KEY, t, "a1", now=now + 60)  # the expiry second itself is valid
    cases = {
        "expired": (t, "a1", now + 61, None),
        "signature": (t, "a2", now, None),
    }
    for reason, (tok, asset, at, ip) in cases.items():
        with pytest.raises(TokenError) as err:
            check(KEY, tok, asset, now=at, client_ip=ip)
        assert err.value.reason == reason
    exp, bind, sig = t.split(".")
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    for bad in [f"{exp}.{bind}.{flipped}", f"{int(exp) + 1}.{bind}.{sig}", f"{exp}.ip.{sig}",
                "", "x", f"{exp}.{bind}", f"{exp}.{bind}.{sig}.x", f"0{exp}.{bind}.{sig}",
                f"{exp}.b.{sig}", f"{exp}.{bind}.{sig[:-1]}", f"-{exp}.{bind}.{sig}",
                f"{exp}.{bind}.{sig[:-1]}\u00e9"]:
        assert not is_valid(KEY, bad, "a1", now=now), bad
    assert not is_valid(b"other key", t, "a1", now=now)


def test_client_binding() -> None:
    t = sign(KEY, "a1", int(time.time()) + 60, "192.0.2.1")
    assert is_valid(KEY, t, "a1", client_ip="192.0.2.1")
    assert not is_valid(KEY, t, "a1", client_ip="192.0.2.2")
    assert not is_valid(KEY, t, "a1")


async def test_origin_enforces_tokens(make_origin: MakeOrigin, media: Media) -> None:
    o = await make_origin(signing_key=KEY)
    await publish_fake(o.store, o.objects, "tok1", media)
    await publish_fake(o.store, o.objects, "tok2", media)
    good = sign(KEY, "tok1", int(time.time()) + 300)
    url = "/vod/tok1/v240/1.m4s"
    resp = await o.client.get(url, params={"token": good})
    assert resp.status == 200 and await resp.read() == media.file("v240", "1.m4s")
    exp, bind, sig = good.split(".")
    tampered = f"{exp}.{bind}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    stretched = f"{int(exp) + 3600}.{bind}.{sig}"
    expired = sign(KEY, "tok1", int(time.time()) - 1)
    other_asset = sign(KEY, "tok2", int(time.time()) + 300)
    other_ip = sign(KEY, "tok1", int(time.time()) + 300, "203.0.113.9")
    for bad in [None, "", tampered, stretched, expired, other_asset, other_ip]:
        params = {} if bad is None else {"token": bad}
        for path in [url, "/vod/tok1/v240/init.mp4", "/vod/tok1/master.m3u8",
                     "/vod/tok1/manifest.mpd", "/vod/tok1/audio/media.m3u8"]:
            resp = await o.client.get(path, params=params)
            assert resp.status == 403, (bad, path)
    # Bound to the address the origin sees (the test client connects from 127.0.0.1).
    mine = sign(KEY, "tok1", int(time.time()) + 300, "127.0.0.1")
    assert (await o.client.get(url, params={"token": mine})).status == 200
    # Unknown asset with a valid token for it is still a 404, not a 403.
    ghost = sign(KEY, "ghost", int(time.time()) + 300)
    assert (await o.client.get("/vod/ghost/v240/1.m4s", params={"token": ghost})).status == 404


async def test_client_bound_token_behind_a_trusted_edge(
    make_origin: MakeOrigin, media: Media
) -> None:
    """Behind the edge the TCP peer is the edge; its X-Real-IP names the viewer, and
    only a configured (trusted) peer may say so."""
    url = "/vod/edge1/v240/1.m4s"
    viewer = sign(KEY, "edge1", int(time.time()) + 300, "198.51.100.7")
    headers = {"X-Real-IP": "198.51.100.7"}
    trusting = await make_origin(signing_key=KEY, trusted_proxies=["127.0.0.1"])
    await publish_fake(trusting.store, trusting.objects, "edge1", media)
    assert (await trusting.client.get(url, params={"token": viewer}, headers=headers)).status \
        == 200
    # Another viewer's address in the header does not match the token.
    other = {"X-Real-IP": "198.51.100.8"}
    assert (await trusting.client.get(url, params={"token": viewer}, headers=other)).status \
        == 403
    # An untrusted peer cannot claim to be the viewer.
    wary = await make_origin(signing_key=KEY)
    await publish_fake(wary.store, wary.objects, "edge1", media)
    assert (await wary.client.get(url, params={"token": viewer}, headers=headers)).status == 403


# -- version 2: viewer and height limit ----------------------------------------------------

def _mac_b64(key: bytes, message: bytes) -> str:
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_version2_format_matches_the_documented_recipe() -> None:
    token = sign(b"k", "a1", 2000000000, viewer="u1", max_height=480)
    assert token == "2.2000000000.a.480.dTE." + _mac_b64(
        b"k", b"cdlc2\na1\n2000000000\n\n480\ndTE")
    bound = sign(b"k", "a1", 2000000000, "10.0.0.7", viewer="", max_height=720)
    assert bound == "2.2000000000.ip.720.." + _mac_b64(
        b"k", b"cdlc2\na1\n2000000000\n10.0.0.7\n720\n")
    # A viewer alone makes a version-2 token too; neither keeps version 1.
    assert sign(b"k", "a1", 2000000000, viewer="u1").startswith("2.2000000000.a.0.dTE.")
    assert sign(b"k", "a1", 2000000000).count(".") == 2


def test_verify_returns_the_claims() -> None:
    now = 1_700_000_000
    v1 = sign(KEY, "a1", now + 60, "192.0.2.1")
    assert verify(KEY, v1, "a1", client_ip="192.0.2.1", now=now) == Claims(
        1, "a1", now + 60, "", 0, "192.0.2.1")
    viewer = "viewer: Zoë 🎬 / line\nbreak"  # any text: LF cannot shift the fields
    v2 = sign(KEY, "a1", now + 60, viewer=viewer, max_height=720)
    claims = verify(KEY, v2, "a1", now=now)
    assert claims == Claims(2, "a1", now + 60, viewer, 720, "")
    assert check(KEY, v2, "a1", now=now) == now + 60
    assert [claims.allows(r) for r in ("v1080", "v720", "v480", "audio", "sub_eng")] == \
        [False, True, True, True, True]
    longest = "x" * MAX_VIEWER_BYTES
    assert verify(KEY, sign(KEY, "a1", now + 60, viewer=longest), "a1", now=now).viewer == \
        longest
    with pytest.raises(ValueError):
        sign(KEY, "a1", now + 60, viewer=longest + "x")
    for bad_height in (-1, 100_000):
        with pytest.raises(ValueError):
            sign(KEY, "a1", now + 60, max_height=bad_height)


def test_version2_refuses_any_change() -> None:
    now = 1_700_000_000
    t = sign(KEY, "a1", now + 60, viewer="u1", max_height=480)
    assert is_valid(KEY, t, "a1", now=now)
    version, exp, bind, maxh, who, sig = t.split(".")
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    other = encode_viewer("u2")
    cases = {
        "signature": f"{version}.{exp}.{bind}.{maxh}.{who}.{flipped}",
        "raised limit": f"{version}.{exp}.{bind}.1080.{who}.{sig}",
        "dropped limit": f"{version}.{exp}.{bind}.0.{who}.{sig}",
        "other viewer": f"{version}.{exp}.{bind}.{maxh}.{other}.{sig}",
        "no viewer": f"{version}.{exp}.{bind}.{maxh}..{sig}",
        "stretched": f"{version}.{int(exp) + 1}.{bind}.{maxh}.{who}.{sig}",
        "bound": f"{version}.{exp}.ip.{maxh}.{who}.{sig}",
        "version 3": f"3.{exp}.{bind}.{maxh}.{who}.{sig}",
        "version 1 shape": f"{exp}.{bind}.{sig}",
        "leading zero": f"{version}.{exp}.{bind}.0480.{who}.{sig}",
        "six digits": f"{version}.{exp}.{bind}.100000.{who}.{sig}",
        "padded viewer": f"{version}.{exp}.{bind}.{maxh}.{who}=.{sig}",
        "viewer length 4n+1": f"{version}.{exp}.{bind}.{maxh}.dTEaB.{sig}",
        "seven fields": f"{t}.x",
        "five fields": f"{version}.{exp}.{bind}.{maxh}.{sig}",
    }
    for why, bad in cases.items():
        assert not is_valid(KEY, bad, "a1", now=now), why
    with pytest.raises(TokenError) as err:
        verify(KEY, t, "a1", now=now + 61)
    assert err.value.reason == "expired"
    with pytest.raises(TokenError) as err:
        verify(KEY, t, "a2", now=now)
    assert err.value.reason == "signature"


def test_rendition_labels() -> None:
    assert [rendition_label(r) for r in ("v1080", "v720", "v0360", "v1080_hevc")] == \
        [1080, 720, 360, 1080]
    assert [rendition_label(r) for r in ("audio", "audio_fra", "sub_eng", "video", "v")] == \
        [None] * 5
    assert allows(0, "v2160") and allows(480, "v480") and not allows(480, "v720")
    assert allows(240, "audio") and allows(240, "sub_eng")


async def test_origin_accepts_version1_and_version2(make_origin: MakeOrigin,
                                                    media: Media) -> None:
    o = await make_origin(signing_key=KEY)
    await publish_fake(o.store, o.objects, "tok3", media)
    exp = int(time.time()) + 300
    for token in (sign(KEY, "tok3", exp), sign(KEY, "tok3", exp, viewer="u9"),
                  sign(KEY, "tok3", exp, viewer="u9", max_height=240)):
        for path in ("master.m3u8", "manifest.mpd", "v240/1.m4s", "audio/media.m3u8"):
            r = await o.client.get(f"/vod/tok3/{path}", params={"token": token})
            assert r.status == 200, (token, path)
    # 240 is this clip's only video rung: a 239 limit leaves nothing to watch.
    low = sign(KEY, "tok3", exp, max_height=239)
    for path in ("master.m3u8", "manifest.mpd", "v240/1.m4s"):
        assert (await o.client.get(f"/vod/tok3/{path}", params={"token": low})).status == 403
