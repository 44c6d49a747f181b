"""Every Cache passes these: the in-process LRU and Redis (a real server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from cdn.edge import free_port
from metadata import open_cache
from metadata.cache import (
    Cache,
    LRUCache,
    RedisCache,
    asset_key,
    invalidate_asset,
    read_through,
)


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
