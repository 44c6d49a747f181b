"""The gRPC server of the platform API (proto/cdlc/stream/v1), beside the origin's
HTTP server.

``GrpcServer`` is a ``grpc.aio`` server over the application interface with

- AssetService, PlaybackService and EventService (origin/grpc_assets.py,
  grpc_playback.py, grpc_events.py: thin servicers; refusals mapped to status
  codes in grpc_errors.py);
- auth by one interceptor (grpc_auth.py: the scope each method needs);
- the standard health service (grpc.health.v1.Health): SERVING while the
  metadata store answers its ping, NOT_SERVING while it does not (polled every
  ``health_interval`` seconds), for the server ("") and each service;
- server reflection (grpc.reflection.v1alpha), listing the three services;
- a per-message size limit (4 MiB by default) both ways: a larger upload goes in
  several chunks;
- ``stop(grace)``: calls in flight get ``grace`` seconds to finish.

``grpc_context(...)`` wraps it as an aiohttp cleanup context: the server starts
with the origin app and stops with it, so wiring it is one line
(``app.cleanup_ctx.append(grpc_context(...))``).

With no auth configured the server binds only loopback addresses: another host
is refused at start (ValueError), as nothing opens to the network by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from metadata.grants import GrantStore
from origin.application import Application
from origin.auth import Authenticator
from origin.events import EventIntake
from origin.fetch import FetchPolicy
from origin.grpc_assets import AssetServicer
from origin.grpc_auth import AuthInterceptor
from origin.grpc_events import EventServicer
from origin.grpc_playback import PlaybackConfig, PlaybackServicer
from origin.grpc_proto import (
    SERVICES,
    assets_pb2_grpc,
    events_pb2_grpc,
    playback_pb2_grpc,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 2**20
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True)
class GrpcConfig:
    host: str = "127.0.0.1"
    port: int = 50051                       # 0: any free port (see GrpcServer.port)
    upload_dir: Path = Path("cdlc-data/uploads")
    max_upload_bytes: int = 20 * 2**30
    signing_key: bytes | None = None
    public_base_url: str = "http://127.0.0.1:8080"   # the origin, as viewers reach it
    edge_base_url: str | None = None        # the CDN edge; URLs point there when set
    allow_private_sources: bool = False     # CreateAsset may fetch from private networks
    s3_endpoint: str | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # SO_REUSEPORT: only for worker processes of one origin sharing the port
    # (`cdlc serve --workers N`); off, a second server on a taken port fails to
    # bind instead of silently sharing it.
    reuse_port: bool = False
    health_interval: float = 1.0
    health_timeout: float = 2.0
    watch_interval: float = 0.5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class GrpcServer:
    """The platform API server (module docstring)."""

    def __init__(self, application: Application, grants: GrantStore,
                 authenticator: Authenticator, store_ping: Callable[[], Awaitable[None]],
                 config: GrpcConfig, events: EventIntake | None = None) -> None:
        self.application, self.grants = application, grants
        self.events = events  # watch-event intake and log (None: EventService unimplemented)
        self.authenticator, self.store_ping, self.config = authenticator, store_ping, config
        self.health = HealthServicer()
        self.port = 0
        self.serving: bool | None = None
        self._server: grpc.aio.Server | None = None
        self._monitor: asyncio.Task[None] | None = None

    def _build(self) -> grpc.aio.Server:
        cfg = self.config
        limit = cfg.max_message_bytes
        # With no auth configured every call is allowed (the server is on loopback
        # only): no interceptor then, and no extra coroutine hop on every call.
        interceptors = [AuthInterceptor(self.authenticator)] if self.authenticator.enabled else []
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", limit),
                     ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 1 if cfg.reuse_port else 0)],
        )
        assets = AssetServicer(
            self.application, upload_dir=cfg.upload_dir, max_upload_bytes=cfg.max_upload_bytes,
            fetch_policy=FetchPolicy(max_bytes=cfg.max_upload_bytes,
                                     allow_private=cfg.allow_private_sources,
                                     s3_endpoint=cfg.s3_endpoint),
            watch_interval=cfg.watch_interval)
        playback = PlaybackServicer(
            self.application, self.grants,
            PlaybackConfig(cfg.signing_key, cfg.edge_base_url or cfg.public_base_url))
        assets_pb2_grpc.add_AssetServiceServicer_to_server(assets, server)
        playback_pb2_grpc.add_PlaybackServiceServicer_to_server(playback, server)
        events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(self.events), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
        return server

    async def start(self) -> int:
        """Bind, start serving and the health monitor; the bound port."""
        cfg = self.config
        if not self.authenticator.enabled and not is_loopback(cfg.host):
            raise ValueError(f"gRPC on {cfg.host}: no auth is configured (CDLC_API_KEY or "
                             "CDLC_JWKS), so only loopback addresses may be bound")
        server = self._build()
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        try:
            self.port = server.add_insecure_port(f"{host}:{cfg.port}")
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot bind {cfg.host}:{cfg.port}: {exc}") from exc
        if self.port == 0:
            raise OSError(f"gRPC cannot bind {cfg.host}:{cfg.port}")
        await self._check_health()
        await server.start()
        self._server = server
        self._monitor = asyncio.create_task(self._watch_health())
        log.info("gRPC platform API on %s:%d", cfg.host, self.port)
        return self.port

    async def _check_health(self) -> None:
        try:
            await asyncio.wait_for(self.store_ping(), self.config.health_timeout)
            serving = True
        except Exception as exc:  # any failure of the ping: not serving
            serving = False
            if self.serving is not False:
                log.warning("gRPC health: NOT_SERVING, metadata store ping failed: %s", exc)
        if serving != self.serving:
            status = (health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            for name in ("", *SERVICES):
                await self.health.set(name, status)
            if serving and self.serving is False:
                log.info("gRPC health: SERVING again")
            self.serving = serving

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval)
            await self._check_health()

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop taking calls; those in flight get ``grace`` seconds."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        if self._server is not None:
            await self.health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None


# The running server, for whoever needs its port (tests, a status page).
GRPC_SERVER = web.AppKey("grpc_server", GrpcServer)


def grpc_context(application: Application, *, grants: GrantStore,
                 authenticator: Authenticator, store_ping: Callable[[], Awaitable[None]],
                 config: GrpcConfig, grace: float = 5.0,
                 events: EventIntake | None = None,
                 ) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context: the gRPC server starts with the app and stops
    (``grace`` seconds for calls in flight) when it is cleaned up; the grant store
    is closed after it."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        server = GrpcServer(application, grants, authenticator, store_ping, config, events)
        await server.start()
        app[GRPC_SERVER] = server
        try:
            yield
        finally:
            await server.stop(grace)
            await grants.close()

    return ctx

