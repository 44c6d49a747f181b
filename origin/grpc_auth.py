"""Auth for the gRPC servers: one interceptor, one table of the scope each method
needs (origin.auth verifies the credentials).

Methods of our services that the table does not name are refused
(PERMISSION_DENIED): a new rpc is closed until someone gives it a scope. The
standard services (health, reflection) are open, as load balancers and tools
call them without credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc

from origin.auth import (
    ASSETS_READ,
    ASSETS_WRITE,
    EVENTS_READ,
    EVENTS_WRITE,
    PLAYBACK_ISSUE,
    Authenticator,
)
from origin.grpc_errors import status_of
from origin.grpc_proto import ASSET_SERVICE, EVENT_SERVICE, PLAYBACK_SERVICE, SERVICES

Req = TypeVar("Req")
Resp = TypeVar("Resp")

METHOD_SCOPES: dict[str, str] = {
    f"/{ASSET_SERVICE}/UploadAsset": ASSETS_WRITE,
    f"/{ASSET_SERVICE}/CreateAsset": ASSETS_WRITE,
    f"/{ASSET_SERVICE}/DeleteAsset": ASSETS_WRITE,
    f"/{ASSET_SERVICE}/RetryAsset": ASSETS_WRITE,
    f"/{ASSET_SERVICE}/GetAsset": ASSETS_READ,
    f"/{ASSET_SERVICE}/ListAssets": ASSETS_READ,
    f"/{ASSET_SERVICE}/WatchAsset": ASSETS_READ,
    f"/{PLAYBACK_SERVICE}/IssuePlayback": PLAYBACK_ISSUE,
    f"/{PLAYBACK_SERVICE}/ListGrants": PLAYBACK_ISSUE,
    f"/{EVENT_SERVICE}/RecordWatchEvents": EVENTS_WRITE,
    f"/{EVENT_SERVICE}/SubscribeWatchEvents": EVENTS_READ,
    f"/{EVENT_SERVICE}/GetAssetStats": EVENTS_READ,
}
_OURS = tuple(f"/{name}/" for name in SERVICES)


def _header(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> str | None:
    for key, value in metadata or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _refusing(handler: grpc.RpcMethodHandler[Req, Resp], code: grpc.StatusCode,
              message: str) -> grpc.RpcMethodHandler[Req, Resp]:
    """A handler of the same kind as ``handler`` that aborts every call."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Req, Resp]) -> Any:
        await context.abort(code, message)

    kw: dict[str, Any] = {"request_deserializer": handler.request_deserializer,
                          "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kw)
    return grpc.unary_unary_rpc_method_handler(refuse, **kw)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks ``authorization: Bearer TOKEN`` (or ``x-api-key``) against the scope
    the method needs, before the servicer runs."""

    def __init__(self, authenticator: Authenticator,
                 scopes: Mapping[str, str] = METHOD_SCOPES) -> None:
        self.authenticator = authenticator
        self.scopes = dict(scopes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_OURS):
            return handler
        scope = self.scopes.get(method)
        if scope is None:
            return _refusing(handler, grpc.StatusCode.PERMISSION_DENIED,
                             f"{method} has no scope assigned")
        metadata = handler_call_details.invocation_metadata
        try:
            await self.authenticator.authorize(
                _header(metadata, "authorization"), _header(metadata, "x-api-key"), scope)
        except Exception as exc:
            code, message = status_of(exc)
            return _refusing(handler, code, message)
        return handler
