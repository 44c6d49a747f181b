"""The whole flow over real TCP: upload a master over gRPC, watch its job to
READY, issue playback, and play the signed HLS URL from the origin (ffprobe
decodes it); the same with the Node.js client of examples/node."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from cdn.tokens import check, verify
from origin.grpc_proto import assets_pb2, playback_pb2
from tests.grpc.conftest import (
    ROOT,
    SIGNING_KEY,
    MakeStack,
    purchase,
    upload,
    upload_messages,
    wait_ready,
)
from tests.media import ffprobe


async def _play(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200, url
            body = await resp.text()
            assert body.startswith("#EXTM3U")
        bare = url.split("?", 1)[0]
        async with http.get(bare) as resp:
            assert resp.status == 403  # tokens are on: no token, no playback


def _decodes(url: str) -> None:
    probe = ffprobe(url, "-show_streams", "-show_format")
    kinds = sorted(s["codec_type"] for s in probe["streams"])
    assert "video" in kinds and "audio" in kinds
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert video["height"] == 240 and video["codec_name"] == "h264"
    assert float(probe["format"]["duration"]) == pytest.approx(2.0, abs=0.6)


async def test_upload_watch_issue_play(make_stack: MakeStack, master: Path) -> None:
    stack = await make_stack()
    assets = stack.assets()
    made = await upload(assets, master, asset_id="flow1")
    assert made.asset.asset_id == "flow1"
    assert made.asset.state == assets_pb2.ASSET_STATE_QUEUED
    assert made.asset.source_name == "master.mp4"

    seen = await wait_ready(assets, "flow1")
    states = [m.asset.state for m in seen]
    assert states[-1] == assets_pb2.ASSET_STATE_READY, seen[-1].asset.error
    assert assets_pb2.ASSET_STATE_FAILED not in states
    marks = [(m.asset.state, round(m.asset.progress, 4), m.asset.error) for m in seen]
    assert all(a != b for a, b in itertools.pairwise(marks))  # one message per change

    got = (await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="flow1"))).asset
    assert got.state == assets_pb2.ASSET_STATE_READY
    assert got.duration_seconds == pytest.approx(2.0, abs=0.3)
    by_id = {r.rendition_id: r for r in got.renditions}
    assert by_id["v240"].height == 240 and by_id["v240"].codec == "h264"
    assert by_id["v240"].segment_count >= 2 and by_id["audio"].kind == "audio"

    listed = await assets.ListAssets(assets_pb2.ListAssetsRequest(page_size=10))
    assert [a.asset_id for a in listed.assets] == ["flow1"] and not listed.next_page_token

    playback = stack.playback()
    issued = await playback.IssuePlayback(purchase("flow1", client_ip="127.0.0.1",
                                                   max_height=720))
    assert issued.hls_url.startswith(f"{stack.base_url}/vod/flow1/master.m3u8?token=")
    assert issued.dash_url.startswith(f"{stack.base_url}/vod/flow1/manifest.mpd?token=")
    token = parse_qs(urlsplit(issued.hls_url).query)["token"][0]
    assert token == issued.token
    expires = check(SIGNING_KEY, token, "flow1", client_ip="127.0.0.1")
    assert expires == issued.expires_at.seconds
    await _play(issued.hls_url)
    await asyncio.to_thread(_decodes, issued.hls_url)  # the origin runs in this loop

    grants = await playback.ListGrants(playback_pb2.ListGrantsRequest(asset_id="flow1"))
    [grant] = grants.grants
    assert grant.grant_id == issued.grant_id
    assert grant.viewer_id == "viewer-1" and grant.max_height == 720
    assert grant.client_ip == "127.0.0.1"
    assert grant.entitlement.kind == playback_pb2.ENTITLEMENT_KIND_PURCHASE
    assert grant.entitlement.reference == "order-42"
    assert grant.expires_at.seconds == expires

    await assets.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id="flow1"))
    async with aiohttp.ClientSession() as http, http.get(issued.hls_url) as resp:
        assert resp.status == 404


async def test_a_height_limited_grant_plays_only_what_it_allows(
        make_stack: MakeStack, master: Path) -> None:
    """IssuePlayback with max_height: the token names the viewer and the limit; the
    master playlist and MPD list only the renditions within it, and a segment above
    it is 403 at the origin."""
    stack = await make_stack()
    assets = stack.assets()
    await upload(assets, master, asset_id="capped", ladder="240:300,120:100")
    seen = await wait_ready(assets, "capped")
    assert seen[-1].asset.state == assets_pb2.ASSET_STATE_READY, seen[-1].asset.error
    issued = await stack.playback().IssuePlayback(purchase("capped", max_height=120))
    claims = verify(SIGNING_KEY, issued.token, "capped")
    assert (claims.viewer, claims.max_height) == ("viewer-1", 120)
    token = issued.token
    base = f"{stack.base_url}/vod/capped"
    async with aiohttp.ClientSession() as http:
        async with http.get(issued.hls_url) as resp:
            assert resp.status == 200
            master_playlist = await resp.text()
        async with http.get(issued.dash_url) as resp:
            mpd = await resp.text()
        assert "v120/" in master_playlist and "v240" not in master_playlist
        assert 'height="120"' in mpd and 'height="240"' not in mpd
        async with http.get(f"{base}/v240/1.m4s?token={token}") as resp:
            assert resp.status == 403
        async with http.get(f"{base}/v120/1.m4s?token={token}") as resp:
            assert resp.status == 200
    # The same asset, uncapped: both rungs.
    free = await stack.playback().IssuePlayback(purchase("capped"))
    async with aiohttp.ClientSession() as http, http.get(free.hls_url) as resp:
        body = await resp.text()
        assert "v240/" in body and "v120/" in body


@pytest.mark.skipif(shutil.which("node") is None, reason="no node")
async def test_node_client(make_stack: MakeStack, master: Path) -> None:
    """The second gRPC implementation (@grpc/grpc-js over the .proto files) drives
    the same flow: upload, watch to READY, issue playback."""
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("npm packages not installed (make setup)")
    stack = await make_stack()
    env = {**os.environ, "CDLC_GRPC": stack.target, "CDLC_GRPC_TOKEN": ""}
    proc = await _run(["node", str(ROOT / "examples" / "node" / "client.js"),
                            str(master), "--id", "node1", "--ladder", "240:300", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["asset_id"] == "node1" and out["state"] == "ASSET_STATE_READY"
    assert out["states"][-1] == "ASSET_STATE_READY" and "ASSET_STATE_FAILED" not in out["states"]
    await _play(out["hls_url"])
    await asyncio.to_thread(_decodes, out["hls_url"])
    assert out["dash_url"].startswith(f"{stack.base_url}/vod/node1/manifest.mpd?token=")


async def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return subprocess.CompletedProcess(cmd, proc.returncode or 0, out.decode(), err.decode())


async def test_commerce_example(make_stack: MakeStack, master: Path) -> None:
    """examples/commerce_grant.py (generated client code only) against an API
    key: it prints a playable URL; a missing asset is one line and exit 1."""
    from origin.auth import Authenticator

    stack = await make_stack(authenticator=Authenticator(api_key="shop-key"))
    metadata = (("authorization", "Bearer shop-key"),)
    assets = stack.assets()

    async def stream() -> AsyncIterator[Any]:
        for m in upload_messages(master, asset_id="film"):
            yield m

    await assets.UploadAsset(stream(), metadata=metadata)
    seen = [m async for m in assets.WatchAsset(
        assets_pb2.WatchAssetRequest(asset_id="film"), metadata=metadata, timeout=60)]
    assert seen[-1].asset.state == assets_pb2.ASSET_STATE_READY
    env = {**os.environ, "CDLC_GRPC": stack.target, "CDLC_GRPC_TOKEN": "shop-key"}
    script = str(ROOT / "examples" / "commerce_grant.py")
    proc = await _run([sys.executable, script, "film", "--order", "o-1001",
                            "--viewer", "u-7", "--ttl", "600"], env)
    assert proc.returncode == 0, proc.stderr
    hls = next(line.split(None, 1)[1] for line in proc.stdout.splitlines()
               if line.startswith("HLS:"))
    await _play(hls)
    grants = await stack.playback().ListGrants(
        playback_pb2.ListGrantsRequest(asset_id="film"), metadata=metadata)
    assert [g.entitlement.reference for g in grants.grants] == ["o-1001"]
    proc = await _run([sys.executable, script, "nothing", "--order", "o-2",
                            "--viewer", "u-7"], env)
    assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr
    proc = await _run([sys.executable, script, "film", "--order", "o-3",
                            "--viewer", "u-7"], {**env, "CDLC_GRPC_TOKEN": "wrong"})
    assert proc.returncode == 1 and "UNAUTHENTICATED" in proc.stderr
