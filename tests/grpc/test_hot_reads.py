"""The hot reads of the platform API answered from memory, and what they must
still see: a READY asset's view is kept for ``ready_ttl`` seconds (no store read),
a delete through the engine is seen at once, a delete made elsewhere (another
process's store connection) within ``ready_ttl``; a JWT is verified once and then
remembered until its ``exp``, never past it, and forgotten when the key set is
fetched again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from engine.application import Engine
from engine.config import Settings
from engine.pipeline import Services
from metadata import open_cache, open_objects
from metadata.grants import SQLiteGrants
from metadata.models import Asset, Rendition, Segment
from metadata.sqlite_store import SQLiteStore
from origin.auth import Authenticator, Unauthenticated
from origin.grpc_proto import assets_pb2, assets_pb2_grpc, playback_pb2_grpc
from origin.grpc_server import GrpcConfig, GrpcServer
from tests.grpc.conftest import Keys, purchase
from tests.origin.conftest import HeldJobs

CODE = grpc.StatusCode
SIGNING_KEY = b"hot-reads-signing-key"
TTL = 0.4


async def _publish(path: Path, asset_id: str) -> None:
    """A READY asset (two renditions, three segments each) written the way a
    worker's publish writes it, through a store of its own."""
    store = SQLiteStore(path)
    rends = [Rendition(asset_id, "v480", "video", "h264", "avc1.64001e", 90000, 1_000_000,
                       width=854, height=480, frame_rate="25"),
             Rendition(asset_id, "audio", "audio", "aac", "mp4a.40.2", 48000, 128_000,
                       sample_rate=48000, channels=2)]
    segs = [Segment(asset_id, r.id, n, (n - 1) * 4 * r.timescale, 4 * r.timescale, 1000)
            for r in rends for n in (1, 2, 3)]
    await store.publish(Asset(asset_id, duration=12.0), rends, segs)
    await store.close()


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return CODE.OK


async def test_ready_view_from_memory_and_deletes_seen(tmp_path: Path) -> None:
    db = tmp_path / "metadata.db"
    for asset_id in ("kept", "elsewhere", "here"):
        await _publish(db, asset_id)
    store = SQLiteStore(db)
    objects = open_objects("", tmp_path)
    services = Services(store=store, objects=objects, cache=open_cache(""),
                        work_dir=tmp_path / "work")
    engine = Engine(Settings(data_dir=tmp_path), services, HeldJobs(objects), ready_ttl=TTL)
    grants = SQLiteGrants(db)
    server = GrpcServer(engine, grants, Authenticator(), store.ping,
                        GrpcConfig(port=0, upload_dir=tmp_path / "up",
                                   signing_key=SIGNING_KEY))
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    assets: Any = assets_pb2_grpc.AssetServiceStub(channel)
    playback: Any = playback_pb2_grpc.PlaybackServiceStub(channel)
    other = SQLiteStore(db)  # another process's view of the same file
    try:
        got = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="kept"))
        assert got.asset.state == assets_pb2.ASSET_STATE_READY
        assert [(r.rendition_id, r.segment_count) for r in got.asset.renditions] == \
            [("v480", 3), ("audio", 3)]
        again = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="kept"))
        assert again == got
        issued = await playback.IssuePlayback(purchase("kept"))
        assert issued.token and issued.expires_at.seconds > time.time()

        # Deleted by another process: still READY from memory for at most TTL.
        await engine.get("elsewhere")
        assert await other.delete_asset("elsewhere")
        deleted_at = time.monotonic()
        while await _code(assets.GetAsset(
                assets_pb2.GetAssetRequest(asset_id="elsewhere"))) == CODE.OK:
            assert time.monotonic() - deleted_at < TTL + 0.5, "a deleted asset stayed READY"
            await asyncio.sleep(0.02)
        assert await _code(playback.IssuePlayback(purchase("elsewhere"))) == CODE.NOT_FOUND

        # Deleted through the engine (as REST and gRPC deletes are): gone at once.
        await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="here"))
        await assets.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id="here"))
        assert await _code(assets.GetAsset(
            assets_pb2.GetAssetRequest(asset_id="here"))) == CODE.NOT_FOUND
        assert await _code(playback.IssuePlayback(purchase("here"))) == CODE.NOT_FOUND
        # The kept asset is read again once its TTL has run out, and is unchanged.
        await asyncio.sleep(TTL)
        assert await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id="kept")) == got
    finally:
        await channel.close()
        await server.stop(0.5)
        await grants.close()
        await other.close()
        await store.close()
        await objects.close()


def _token(keys: Keys, exp: float, scope: str = "assets:read") -> str:
    return jwt.encode({"iss": keys.issuer, "aud": "cdlc-stream", "sub": "svc", "exp": exp,
                       "scope": scope}, keys.rsa_key, algorithm="RS256",
                      headers={"kid": "rsa-1"})


async def test_jwt_verified_once_until_exp(keys: Keys) -> None:
    auth = Authenticator(jwks=str(keys.jwks), issuer=keys.issuer, leeway_seconds=0)
    long_lived = f"Bearer {_token(keys, time.time() + 300)}"
    for _ in range(20):
        principal = await auth.authorize(long_lived, None, "assets:read")
    assert principal.via == "jwt" and principal.subject == "svc"
    assert auth.verifications == 1
    # The scope is checked on every call, remembered or not.
    with pytest.raises(Exception, match="assets:write"):
        await auth.authorize(long_lived, None, "assets:write")
    assert auth.verifications == 1

    # Remembered only until exp: afterwards it is verified again, and refused.
    exp = int(time.time()) + 2
    short = f"Bearer {_token(keys, exp)}"
    await auth.authorize(short, None, "assets:read")
    await auth.authorize(short, None, "assets:read")
    assert auth.verifications == 2
    while time.time() < exp:
        await asyncio.sleep(0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authorize(short, None, "assets:read")
    assert auth.verifications == 3

    # Bad tokens are never remembered: each is checked (and refused) each time.
    forged = _token(keys, time.time() + 300)[:-4] + "AAAA"
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.authorize(f"Bearer {forged}", None, "assets:read")
    assert auth.verifications == 5

    # A refetch of the key set (an unknown kid) forgets what was remembered.
    assert auth.keys is not None
    auth.keys.refresh_seconds = 0
    unknown = jwt.encode({"iss": keys.issuer, "aud": "cdlc-stream", "exp": time.time() + 60},
                         keys.other, algorithm="RS256", headers={"kid": "rsa-9"})
    with pytest.raises(Unauthenticated, match="rsa-9"):
        await auth.authorize(f"Bearer {unknown}", None, "assets:read")
    assert auth.keys.fetches == 2
    await auth.authorize(long_lived, None, "assets:read")
    assert auth.verifications == 7
    await auth.authorize(long_lived, None, "assets:read")
    assert auth.verifications == 7
