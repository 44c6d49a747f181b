"""A real stack for the platform API tests: the Engine with its in-process
executor over SQLite and local objects, the origin's HTTP app (so playback URLs
resolve) and the gRPC server, each on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from engine.application import Engine
from engine.celery_executor import CeleryExecutor
from engine.config import Settings
from engine.executor import InProcessExecutor
from engine.services import open_backends
from metadata.grants import SQLiteGrants
from origin.app import OriginDeps, create_app
from origin.auth import Authenticator
from origin.grpc_proto import assets_pb2, assets_pb2_grpc, playback_pb2, playback_pb2_grpc
from origin.grpc_server import GrpcConfig, GrpcServer
from tests.media import make_master
from tests.metadata.servers import s3_endpoint
from tests.origin.conftest import HeldJobs

ROOT = Path(__file__).resolve().parents[2]
SIGNING_KEY = b"grpc-test-signing-key"
LADDER = "240:300"


@pytest.fixture(scope="session")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 320x240 H.264 + AAC master."""
    return make_master(tmp_path_factory.mktemp("grpc") / "master.mp4", seconds=2.0,
                       width=320, height=240, fps="25")


@dataclass
class Stack:
    engine: Engine
    server: GrpcServer
    http: TestServer
    grants: SQLiteGrants
    settings: Settings
    target: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    def channel(self) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(self.target)
        self.channels.append(ch)
        return ch

    def assets(self) -> Any:
        return assets_pb2_grpc.AssetServiceStub(self.channel())

    def playback(self) -> Any:
        return playback_pb2_grpc.PlaybackServiceStub(self.channel())


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[MakeStack]:
    """make_stack(authenticator=..., signing_key=..., max_upload_bytes=..., broker=a
    Celery broker URL)."""
    opened: list[tuple[Stack, Any, Any]] = []

    async def make(*, authenticator: Authenticator | None = None,
                   signing_key: bytes | None = SIGNING_KEY, max_upload_bytes: int = 50 * 2**20,
                   allow_private_sources: bool = True, hold_jobs: bool = False,
                   s3_endpoint: str | None = None, broker: str | None = None) -> Stack:
        settings = Settings(data_dir=tmp_path / f"data{len(opened)}", preset="ultrafast",
                            segment_seconds=1.0, gop_seconds=1.0, max_attempts=1,
                            max_upload_bytes=max_upload_bytes, broker=broker or "",
                            encoder="cpu" if broker else "auto")
        backends = open_backends(settings)
        executor: InProcessExecutor | HeldJobs | CeleryExecutor
        if broker:  # published to the broker; no worker takes them here
            executor = CeleryExecutor(settings, backends)
        elif hold_jobs:  # jobs recorded, never run
            executor = HeldJobs(backends.objects)
        else:
            executor = InProcessExecutor(settings, backends, poll_seconds=0.2)
        engine = Engine(settings, backends, executor)
        await executor.start()
        grants = SQLiteGrants(settings.data_dir / "metadata.db")
        deps = OriginDeps(store=backends.store, objects=backends.objects, cache=backends.cache,
                          signing_key=signing_key, application=engine)
        http = TestServer(create_app(deps), host="127.0.0.1")
        await http.start_server()
        config = GrpcConfig(
            host="127.0.0.1", port=0, upload_dir=settings.data_dir / "uploads",
            max_upload_bytes=max_upload_bytes, signing_key=signing_key,
            public_base_url=f"http://127.0.0.1:{http.port}",
            allow_private_sources=allow_private_sources, health_interval=0.2,
            s3_endpoint=s3_endpoint,
            watch_interval=0.2)
        server = GrpcServer(engine, grants, authenticator or Authenticator(),
                            backends.store.ping, config)
        port = await server.start()
        stack = Stack(engine, server, http, grants, settings, f"127.0.0.1:{port}")
        opened.append((stack, executor, backends))
        return stack

    yield make
    for stack, executor, backends in reversed(opened):
        # Each step bounded: a step that hangs fails the test, naming itself.
        for step, aw in (("channels", asyncio.gather(*(ch.close() for ch in stack.channels))),
                         ("grpc server", stack.server.stop(0.5)),
                         ("http server", stack.http.close()), ("executor", executor.close()),
                         ("grants", stack.grants.close()), ("backends", backends.close())):
            try:
                await asyncio.wait_for(aw, 15)
            except TimeoutError:
                stacks = io.StringIO()
                for task in asyncio.all_tasks():
                    task.print_stack(file=stacks)
                raise AssertionError(f"teardown of {step} hung:\n{stacks.getvalue()}") from None


def upload_messages(path: Path, *, asset_id: str = "", ladder: str = LADDER,
                    chunk: int = 256 * 1024, **options: Any) -> list[Any]:
    """The messages of an UploadAsset stream for ``path``."""
    data = path.read_bytes()
    header = assets_pb2.UploadHeader(
        asset_id=asset_id, file_name=path.name, size_bytes=len(data),
        options=assets_pb2.JobOptions(ladder=ladder, preset="ultrafast", **options))
    return [assets_pb2.UploadAssetRequest(header=header)] + [
        assets_pb2.UploadAssetRequest(chunk=data[i:i + chunk])
        for i in range(0, len(data), chunk)]


async def upload(stub: Any, path: Path, **kw: Any) -> Any:
    async def stream() -> AsyncIterator[Any]:
        for m in upload_messages(path, **kw):
            yield m

    return await stub.UploadAsset(stream(), timeout=30)


async def wait_ready(stub: Any, asset_id: str, timeout: float = 60) -> list[Any]:
    """Every WatchAsset message until the stream ends."""
    return [m async for m in stub.WatchAsset(assets_pb2.WatchAssetRequest(asset_id=asset_id),
                                             timeout=timeout)]


def purchase(asset_id: str, **kw: Any) -> Any:
    return playback_pb2.IssuePlaybackRequest(
        asset_id=asset_id, viewer_id="viewer-1", ttl_seconds=kw.pop("ttl_seconds", 3600),
        entitlement=playback_pb2.Entitlement(kind=playback_pb2.ENTITLEMENT_KIND_PURCHASE,
                                             reference="order-42"), **kw)


@dataclass
class Keys:
    """Signing keys of a test authorization server and its JWKS file."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    other: rsa.RSAPrivateKey        # a key the JWKS does not hold
    jwks: Path
    issuer: str = "https://auth.test"


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ec.generate_private_key(ec.SECP256R1())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk_r = json.loads(RSAAlgorithm.to_jwk(r.public_key()))
    jwk_e = json.loads(ECAlgorithm.to_jwk(e.public_key()))
    jwk_r.update(kid="rsa-1", use="sig", alg="RS256")
    jwk_e.update(kid="ec-1", use="sig", alg="ES256")
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk_r, jwk_e]}))
    return Keys(r, e, other, path)


@pytest.fixture(scope="session", autouse=True)
def generated_code() -> None:
    """The generated code is fresh (origin.grpc_proto generates it on import too;
    this also covers the script itself)."""
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py")], check=True)


__all__ = ["s3_endpoint"]
