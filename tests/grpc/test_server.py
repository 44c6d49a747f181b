"""The server around the services: reflection, the aiohttp lifecycle hook, the
loopback-only rule without auth, a port already in use, graceful stop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from metadata.grants import SQLiteGrants
from origin.auth import Authenticator
from origin.grpc_proto import SERVICES, assets_pb2, assets_pb2_grpc
from origin.grpc_server import GRPC_SERVER, GrpcConfig, GrpcServer, grpc_context
from tests.grpc.conftest import MakeStack


def health_stub(channel: grpc.aio.Channel) -> Any:
    return health_pb2_grpc.HealthStub(channel)  # its stubs lack the methods


async def test_reflection_lists_the_services(make_stack: MakeStack) -> None:
    stack = await make_stack()
    channel: Any = stack.channel()  # the stubs type the stub for sync channels only
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="cdlc.stream.v1.PlaybackService")

    replies = [r async for r in stub.ServerReflectionInfo(ask())]
    names = {s.name for s in replies[0].list_services_response.service}
    assert set(SERVICES) <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto  # the .proto itself


async def test_grpc_context_runs_with_the_aiohttp_app(tmp_path: Path) -> None:
    """grpc_context starts the server with the app and stops it with the app."""

    class NoApp:
        async def get(self, asset_id: str) -> Any:
            from metadata.jobs import NotFound

            raise NotFound(f"no asset {asset_id}")

    async def ping() -> None:
        return None

    grants = SQLiteGrants(tmp_path / "metadata.db")
    app = web.Application()
    app.cleanup_ctx.append(grpc_context(
        NoApp(), grants=grants, authenticator=Authenticator(), store_ping=ping,  # type: ignore[arg-type]
        config=GrpcConfig(port=0, upload_dir=tmp_path / "up"), grace=0.5))
    http = TestServer(app, host="127.0.0.1")
    await http.start_server()
    server = app[GRPC_SERVER]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await assets_pb2_grpc.AssetServiceStub(channel).GetAsset(
                assets_pb2.GetAssetRequest(asset_id="a1"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await http.close()  # runs the cleanup: the server stops, grants close
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_stub(channel).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close()


async def test_binding_rules(tmp_path: Path) -> None:
    async def ping() -> None:
        return None

    grants = SQLiteGrants(tmp_path / "metadata.db")
    app: Any = None
    open_server = GrpcServer(app, grants, Authenticator(), ping,
                             GrpcConfig(host="0.0.0.0", port=0, upload_dir=tmp_path))
    with pytest.raises(ValueError, match="loopback"):
        await open_server.start()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = GrpcServer(app, grants, Authenticator(api_key="k"), ping,
                          GrpcConfig(host="127.0.0.1", port=port, upload_dir=tmp_path))
        with pytest.raises(OSError, match="bind"):
            await busy.start()
    first = GrpcServer(app, grants, Authenticator(api_key="k"), ping,
                       GrpcConfig(host="127.0.0.1", port=0, upload_dir=tmp_path))
    port = await first.start()
    second = GrpcServer(app, grants, Authenticator(api_key="k"), ping,
                        GrpcConfig(host="127.0.0.1", port=port, upload_dir=tmp_path))
    with pytest.raises(OSError, match="bind"):  # no silent sharing of a taken port
        await second.start()
    await first.stop(0)
    await grants.close()
