"""One funnel from the application's refusals to gRPC status codes.

The table is origin.application's (RequestError INVALID_ARGUMENT, NotFound
NOT_FOUND, AlreadyExists ALREADY_EXISTS, FailedPrecondition FAILED_PRECONDITION,
StorageFull RESOURCE_EXHAUSTED), plus the origin's own: auth (UNAUTHENTICATED,
PERMISSION_DENIED), fetching a source (origin.fetch), and a backend that cannot
be reached (the metadata store, the object store, the cache: UNAVAILABLE, so a
client retries). A known case never surfaces as UNKNOWN; anything else is logged
and answered INTERNAL without its text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from metadata.faults import backend_errors
from metadata.jobs import AlreadyExists, FailedPrecondition, NotFound, RequestError
from origin.application import NotQueued, StorageFull
from origin.auth import PermissionDenied, Unauthenticated
from origin.fetch import SourceRefused, SourceTooLarge, SourceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class Refusal(Exception):
    """A servicer's own refusal with its status code (e.g. a malformed field that
    never reaches the application)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Order matters: the first match wins (StorageFull is an OSError, SourceTooLarge a
# ValueError, BreakerOpen a ConnectionError).
_TABLE: tuple[tuple[tuple[type[BaseException], ...], grpc.StatusCode], ...] = (
    ((Unauthenticated,), grpc.StatusCode.UNAUTHENTICATED),
    ((PermissionDenied, SourceRefused), grpc.StatusCode.PERMISSION_DENIED),
    ((StorageFull, SourceTooLarge), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ((SourceUnavailable, NotQueued), grpc.StatusCode.UNAVAILABLE),
    ((RequestError,), grpc.StatusCode.INVALID_ARGUMENT),
    ((NotFound,), grpc.StatusCode.NOT_FOUND),
    ((AlreadyExists,), grpc.StatusCode.ALREADY_EXISTS),
    ((FailedPrecondition,), grpc.StatusCode.FAILED_PRECONDITION),
    (backend_errors(), grpc.StatusCode.UNAVAILABLE),
)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and the message a client sees for ``exc``."""
    if isinstance(exc, Refusal):
        return exc.code, exc.message
    for kinds, code in _TABLE:
        if isinstance(exc, kinds):
            if code is grpc.StatusCode.UNAVAILABLE and not isinstance(
                    exc, (SourceUnavailable, NotQueued)):
                return code, f"a backend is unavailable: {type(exc).__name__}"
            text = str(exc.args[0]) if exc.args else str(exc)
            return code, text[:500]
    return grpc.StatusCode.INTERNAL, "internal error"


async def abort_with(context: grpc.aio.ServicerContext[object, object],
                     exc: BaseException) -> None:
    """Abort the call with the status of ``exc`` (logged when it is not a known case)."""
    code, message = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("gRPC call failed", exc_info=exc)
    elif code is grpc.StatusCode.UNAVAILABLE:
        log.warning("gRPC call: backend unavailable: %s", exc)
    await context.abort(code, message)


def mapped(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """A unary or client-streaming servicer method whose exceptions go through the
    table (``context`` is its last positional argument)."""

    async def run(self: object, request: object,
                  context: grpc.aio.ServicerContext[object, object]) -> T:
        try:
            return await fn(self, request, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            await abort_with(context, exc)
            raise  # abort raises; never reached

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def mapped_stream(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
    """The same for a server-streaming method (an async generator)."""

    async def run(self: object, request: object,
                  context: grpc.aio.ServicerContext[object, object]) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            await abort_with(context, exc)
            raise

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run
