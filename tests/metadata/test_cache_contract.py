"""Every Cache passes these: the in-process LRU and Redis (a real server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from cdn.edge import free_port
from metadata import open_cache
from metadata.breaker import BreakerOpen, CircuitBreaker
from metadata.cache import (
    Cache,
    LRUCache,
    RedisCache,
    asset_key,
    invalidate_asset,
    read_through,
)
from tests.metadata.servers import own_redis


@pytest.fixture(params=["lru", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    c = open_cache("" if request.param == "lru" else request.getfixturevalue("redis_url"))
    yield c
    await c.close()


def key() -> str:
    return f"cdlc-test:{uuid.uuid4().hex}"


async def test_set_get_delete(cache: Cache) -> None:
    k = key()
    assert await cache.get(k) is None
    await cache.set(k, b"\x00value", 30)
    assert await cache.get(k) == b"\x00value"
    await cache.set(k, b"other", 30)
    assert await cache.get(k) == b"other"
    await cache.delete(k, key())  # absent keys are fine
    assert await cache.get(k) is None
    await cache.delete()


async def test_ttl_expires(cache: Cache) -> None:
    k = key()
    await cache.set(k, b"v", 0.15)
    assert await cache.get(k) == b"v"
    await asyncio.sleep(0.3)
    assert await cache.get(k) is None


async def test_ttl_must_be_positive(cache: Cache) -> None:
    with pytest.raises(ValueError):
        await cache.set(key(), b"v", 0)


async def test_read_through_loads_once_and_skips_none(cache: Cache) -> None:
    k, calls = key(), []

    async def load() -> bytes | None:
        calls.append(1)
        return b"loaded"

    assert await read_through(cache, k, 30, load) == b"loaded"
    assert await read_through(cache, k, 30, load) == b"loaded"
    assert len(calls) == 1

    async def nothing() -> bytes | None:
        calls.append(1)
        return None

    k2 = key()
    assert await read_through(cache, k2, 30, nothing) is None
    assert await read_through(cache, k2, 30, nothing) is None
    assert len(calls) == 3


async def test_invalidate_asset(cache: Cache) -> None:
    await cache.set(asset_key("a1"), b"head", 30)
    await invalidate_asset(cache, "a1")
    assert await cache.get(asset_key("a1")) is None


async def test_ping(cache: Cache) -> None:
    await cache.ping()


async def test_redis_down_ping_fails_and_read_through_degrades() -> None:
    dead = RedisCache(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(Exception):  # noqa: B017 - redis ConnectionError
            await dead.ping()

        async def load() -> bytes | None:
            return b"from-store"

        assert await read_through(dead, key(), 30, load) == b"from-store"
    finally:
        await dead.close()


def test_lru_evicts_by_count_and_bytes() -> None:
    c = LRUCache(max_entries=3, max_bytes=100)
    for k in "abc":
        c.set_now(k, b"x", 30)
    assert c.get_now("a") == b"x"  # a is now the most recent
    c.set_now("d", b"x", 30)  # 4 entries > 3: the least recent (b) goes
    assert c.get_now("b") is None and c.get_now("a") == b"x" and len(c) == 3
    c = LRUCache(max_entries=10, max_bytes=100)
    for k in "abc":
        c.set_now(k, b"x", 30)
    c.set_now("big", b"y" * 98, 30)  # 101 bytes > 100: the least recent (a) goes
    assert c.get_now("a") is None and c.get_now("b") == b"x" and c.get_now("big") is not None
    c.set_now("huge", b"z" * 101, 30)  # larger than the whole cache: not stored
    assert c.get_now("huge") is None and c.get_now("big") is not None


def test_open_cache_urls(redis_url: str) -> None:
    assert isinstance(open_cache(""), LRUCache)
    assert isinstance(open_cache(redis_url), RedisCache)
    with pytest.raises(ValueError):
        open_cache("memcached://x")


def state(b: CircuitBreaker) -> str:
    """The breaker's state, read afresh (mypy would narrow a property read twice)."""
    return b.state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_once_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker("x", failures=3, cooldown=2.0, clock=clock)
    assert state(b) == "closed" and b.allow()
    b.failure()
    b.failure()
    b.success()  # a success in between resets the count
    b.failure()
    b.failure()
    assert state(b) == "closed"
    b.failure()  # the third in a row
    assert state(b) == "open" and not b.allow() and b.opened == 1
    with pytest.raises(BreakerOpen) as info:
        b.check()
    assert 0 < info.value.retry_after <= 2.0
    clock.now += 2.0
    assert state(b) == "half_open"
    assert b.allow()  # the one probe
    assert not b.allow() and state(b) == "half_open"  # nobody else meanwhile
    b.failure()  # the probe failed: open for another cool-down
    assert state(b) == "open" and not b.allow()
    clock.now += 2.0
    assert b.allow()
    closed: list[bool] = []
    b.on_close = lambda: closed.append(True)
    b.success()
    assert state(b) == "closed" and closed == [True] and b.allow()
    # A cancelled probe gives its slot back.
    for _ in range(3):
        b.failure()
    clock.now += 2.0
    assert b.allow()
    b.release()
    assert b.allow()


def test_breaker_guard_counts_only_real_failures() -> None:
    b = CircuitBreaker("x", failures=1, cooldown=5.0)
    with pytest.raises(KeyError), b.guard(lambda exc: isinstance(exc, KeyError)):
        raise KeyError("404 is an answer")
    assert state(b) == "closed"
    with pytest.raises(OSError), b.guard():
        raise OSError("connection refused")
    assert state(b) == "open"
    with pytest.raises(BreakerOpen), b.guard():
        raise AssertionError("not reached")


async def test_redis_out_falls_back_to_the_lru_and_comes_back() -> None:
    """A Redis killed and restarted on its port: while it is out, the cache
    answers from its in-process copy at once; once back, from Redis again, and
    the fallback copy is dropped."""
    server = own_redis().start()
    cache = RedisCache(server.url, breaker_cooldown=0.5)
    try:
        k = key()
        await cache.set(k, b"in-redis", 30)
        server.kill()
        t0 = time.perf_counter()
        assert await cache.get(k) is None  # Redis is gone: nothing in the fallback yet
        await cache.set(k, b"fallback", 30)
        assert state(cache.breaker) == "open"
        for _ in range(100):
            assert await cache.get(k) == b"fallback"
        assert time.perf_counter() - t0 < 1.0
        with pytest.raises(Exception):  # noqa: B017 - readiness still sees the outage
            await cache.ping()
        server = own_redis(server.port).start()  # back (empty: no persistence)
        await asyncio.sleep(0.6)  # the cool-down: the next call probes
        assert await cache.get(k) is None  # Redis' answer, not the fallback's
        assert state(cache.breaker) == "closed" and len(cache.fallback) == 0
        await cache.set(k, b"again", 30)
        assert await cache.get(k) == b"again"
    finally:
        await cache.close()
        server.stop()


async def test_redis_hung_costs_one_timeout_then_nothing() -> None:
    server = own_redis().start()
    cache = RedisCache(server.url, timeout=0.2, breaker_failures=2)
    try:
        await cache.set("k", b"v", 30)
        server.pause()
        t0 = time.perf_counter()
        for _ in range(50):
            await cache.get("k")
        took = time.perf_counter() - t0
        assert took < 0.2 * 2 + 0.3, took  # two timeouts open it, then no waiting
        assert state(cache.breaker) == "open"
    finally:
        server.resume()
        await cache.close()
        server.stop()
