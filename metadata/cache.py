"""Caches for the read path: an in-process LRU with TTL (embedded default) and a
Redis read-through cache (shared by every origin process and machine).

Values are bytes; callers serialise. Keys that depend on published data carry the
asset's version (bumped on every publish), so a publish makes old entries
unreachable; the per-asset head entry (``asset_key``) is the one that must be
invalidated explicitly: the origin does it on DELETE, publishers call
``invalidate_asset`` after ``MetadataStore.publish``. Both backends pass
tests/metadata/test_cache_contract.py.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (> 0)."""

    async def delete(self, *keys: str) -> None:
        """Explicit invalidation; absent keys are ignored."""

    async def ping(self) -> None:
        """Raise if the backend is unreachable (readiness)."""

    async def close(self) -> None: ...


def asset_key(asset_id: str) -> str:
    """The head entry of an asset on the read path (state, version, renditions)."""
    return f"cdlc:a:{asset_id}"


async def invalidate_asset(cache: Cache, asset_id: str) -> None:
    """Forget what the read path cached about ``asset_id`` (after publish or delete).
    Entries keyed by the publication (origin.playback.revision) need no deletion:
    a new publication never reads them."""
    await cache.delete(asset_key(asset_id))


async def read_through(
    cache: Cache,
    key: str,
    ttl: float,
    load: Callable[[], Awaitable[bytes | None]],
) -> bytes | None:
    """``cache[key]``, else ``load()`` stored for ``ttl`` seconds (None is not stored).
    A cache that fails (Redis down) degrades to the loader instead of failing the
    request; readiness reports the outage."""
    try:
        hit = await cache.get(key)
    except Exception:
        hit = None
    if hit is not None:
        return hit
    value = await load()
    if value is not None:
        try:
            await cache.set(key, value, ttl)
        except Exception:
            pass
    return value


class LRUCache:
    """In-process LRU bounded by entry count and total bytes, entries with a TTL.

    Not shared between processes: with several origin workers each keeps its own
    copy, and a change made elsewhere becomes visible when the entry expires.
    """

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 256 * 2**20) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get_now(self, key: str) -> bytes | None:
        """Synchronous lookup (no await on the hot path)."""
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[0] < time.monotonic():
            self._drop(key)
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return entry[1]

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def set_now(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        if len(value) > self._max_bytes:
            return
        self._drop(key)
        self._data[key] = (time.monotonic() + ttl, value)
        self._bytes += len(value)
        while len(self._data) > self._max_entries or self._bytes > self._max_bytes:
            _, (_, old) = self._data.popitem(last=False)
            self._bytes -= len(old)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.set_now(key, value, ttl)

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[1])

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self.clear()


class RedisCache:
    """Redis (redis-py asyncio) with TTLs in milliseconds (SET PX).

    A Redis that is down or hung must not slow the read path: short socket
    timeouts bound each call (no retries: a timed-out call fails once), and a
    circuit breaker (``self.breaker``, metadata/breaker.py) opens after
    ``breaker_failures`` failures in a row.
    While it is open every call is answered by an in-process LRU (``fallback``)
    without touching the network: reads of what this process cached during the
    outage, writes kept there, deletes applied there. One call per cool-down probes
    Redis; when it answers, the breaker closes and the fallback is emptied (what it
    holds may be older than what Redis holds by then). ``ping`` always asks Redis
    (readiness must see the outage).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        max_connections: int = 64,
        breaker_failures: int = 2,
        breaker_cooldown: float = 2.0,
        fallback_entries: int = 20_000,
        fallback_bytes: int = 64 * 2**20,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from metadata.breaker import CircuitBreaker

        self.url = url
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=max_connections,
            decode_responses=False,
            # No retries inside redis-py (its default retries a timeout 3 times
            # with backoff: a hung server then cost each call over a second);
            # the breaker decides when to try again.
            retry=Retry(NoBackoff(), 0),
        )
        self.breaker = CircuitBreaker(
            "redis", failures=breaker_failures, cooldown=breaker_cooldown
        )
        self.fallback = LRUCache(max_entries=fallback_entries, max_bytes=fallback_bytes)
        self.breaker.on_close = self._forget_fallback

    def _forget_fallback(self) -> None:
        self.fallback.clear()

    async def get(self, key: str) -> bytes | None:
        if not self.breaker.allow():
            return self.fallback.get_now(key)
        try:
            value = await self._redis.get(key)
        except Exception:
            self.breaker.failure()
            return self.fallback.get_now(key)
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return value if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        if not self.breaker.allow():
            self.fallback.set_now(key, value, ttl)
            return
        try:
            await self._redis.set(key, value, px=max(1, int(ttl * 1000)))
        except Exception:
            self.breaker.failure()
            self.fallback.set_now(key, value, ttl)
        except BaseException:
            self.breaker.release()
            raise
        else:
            self.breaker.success()

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        await self.fallback.delete(*keys)
        self.breaker.check()  # BreakerOpen: Redis keeps the entry until its TTL
        try:
            await self._redis.delete(*keys)
        except Exception:
            self.breaker.failure()
            raise  # the caller must know: Redis still holds the entry until its TTL
        except BaseException:
            self.breaker.release()
            raise
        else:
            self.breaker.success()

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        self._forget_fallback()
        # redis>=5 has aclose(); the types-redis stubs predate it.
        await self._redis.aclose()  # type: ignore[attr-defined]
