"""What a failure means, wherever it surfaced: a full disk, or a backend (metadata
store, object store, cache, Celery broker, a breaker) that is out rather than a request
that is wrong. Each front door maps these to its own answer (HTTP 507 / 503, gRPC
RESOURCE_EXHAUSTED / UNAVAILABLE, the CLI's one line)."""

from __future__ import annotations

import errno
import functools
import sqlite3

from metadata.breaker import BreakerOpen

__all__ = ["backend_errors", "first_line", "is_no_space"]


def is_no_space(exc: BaseException | None) -> bool:
    """ENOSPC anywhere in the exception chain (OSError, the native core's IOError,
    sqlite3's "database or disk is full")."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        text = str(exc)
        if "No space left on device" in text or "disk is full" in text:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def first_line(exc: BaseException) -> str:
    """``Type: first line of its text`` (or the type alone): a fault in one log line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def message_line(exc: BaseException) -> str:
    """The first line of the fault's text, or its type when it has none: the tail of
    a one-line error a user reads ("broker X is unreachable: <this>")."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@functools.cache
def backend_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a backend is out, not that the request is wrong."""
    # OSError last resort: a disk or directory the store cannot use (a full disk,
    # an OSError too, is told apart first by is_no_space).
    kinds: list[type[BaseException]] = [BreakerOpen, ConnectionError, TimeoutError,
                                        sqlite3.OperationalError, sqlite3.DatabaseError,
                                        OSError]
    try:  # scylla-driver, when installed
        from cassandra import OperationTimedOut, Unavailable
        from cassandra.cluster import NoHostAvailable

        kinds += [NoHostAvailable, OperationTimedOut, Unavailable]
    except ImportError:
        pass
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        # EndpointConnectionError and ConnectTimeoutError are botocore
        # ConnectionErrors; a read timeout is an HTTPClientError.
        kinds += [BotoConnectionError, HTTPClientError]
    except ImportError:
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        kinds += [RedisConnectionError, RedisTimeoutError]
    except ImportError:
        pass
    try:  # the Celery broker (kombu wraps its transports' errors in this)
        from kombu.exceptions import OperationalError as BrokerError

        kinds.append(BrokerError)
    except ImportError:
        pass
    return tuple(kinds)
