"""Delivered bytes seen by the origin: the real origin (origin.app over SQLite and
the local object store, the engine's application layer) serving a real CMAF asset
counts the body bytes of its 200/206 playback answers per asset, and nothing for
HEAD, 304, 404 or 416; the stats show the count beside what players reported; it
reaches the ledger periodically and at shutdown (a restarted origin still has
it). And the ledger's contract on SQLite and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from engine.application import Engine
from engine.config import Settings
from engine.pipeline import Services
from metadata import open_cache, open_objects, open_store
from metadata.event_log_delivery import (
    DeliveryLedger,
    RedisDeliveryLedger,
    SQLiteDeliveryLedger,
)
from metadata.event_log_sqlite import SQLiteEventLog
from origin.app import OriginDeps, create_app
from origin.events import EventIntake
from tests.e2e.asset import BuiltAsset, Rung, make_asset
from tests.origin.conftest import HeldJobs

ASSET = "delivered1"
IDENTITY = {"Accept-Encoding": "identity"}  # the body on the wire is the body read

Client = TestClient[Any, Any]
MakeOrigin = Callable[..., Awaitable[tuple[Client, EventIntake]]]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuiltAsset]:
    d = tmp_path_factory.mktemp("delivery")
    return d, make_asset(d, ASSET, seconds=4, ladder=(Rung(144, 256, 120),))


@pytest.fixture
async def make_origin(published: tuple[Path, BuiltAsset], tmp_path: Path,
                      aiohttp_client: Any) -> MakeOrigin:
    """make_origin(flush_seconds=...): the origin over the published asset, with
    the event log and the delivery ledger in this test's own file."""
    data = published[0]

    async def make(flush_seconds: float = 3600.0) -> tuple[Client, EventIntake]:
        store, objects, cache = open_store("", data), open_objects("", data), open_cache("")
        services = Services(store=store, objects=objects, cache=cache, work_dir=tmp_path / "w")
        engine = Engine(Settings(data_dir=data), services, HeldJobs(objects))
        intake = EventIntake(SQLiteEventLog(tmp_path / "events.db"),
                             delivery=SQLiteDeliveryLedger(tmp_path / "events.db"),
                             flush_seconds=flush_seconds)
        deps = OriginDeps(store=store, objects=objects, cache=cache, application=engine,
                          events=intake, close_backends=True)
        return await aiohttp_client(create_app(deps)), intake
    return make


def hours_since(started: float) -> set[str]:
    """The RFC 3339 starts of the UTC hours from ``started`` to now."""
    return {time.strftime("%Y-%m-%dT%H:00:00.000Z", time.gmtime(h * 3600))
            for h in range(int(started // 3600), int(time.time() // 3600) + 1)}


async def fetch(client: Client, path: str, **headers: str) -> tuple[int, bytes]:
    async with client.get(path, headers={**IDENTITY, **headers}) as r:
        body = await r.read()
        if r.status in (200, 206):
            assert len(body) == int(r.headers["Content-Length"]), path
        return r.status, body


async def test_origin_counts_the_bodies_it_served(
        make_origin: MakeOrigin, published: tuple[Path, BuiltAsset], tmp_path: Path) -> None:
    started = time.time()
    client, _ = await make_origin()
    built = published[1]
    sent = 0
    paths = [f"/vod/{ASSET}/master.m3u8", f"/vod/{ASSET}/manifest.mpd"]
    for rid, count in built.renditions.items():
        paths += [f"/vod/{ASSET}/{rid}/media.m3u8", f"/vod/{ASSET}/{rid}/init.mp4"]
        paths += [f"/vod/{ASSET}/{rid}/{n}.m4s" for n in range(1, count + 1)]
    for path in paths:
        status, body = await fetch(client, path)
        assert status == 200, path
        sent += len(body)
    segment = f"/vod/{ASSET}/{next(iter(built.renditions))}/1.m4s"
    status, part = await fetch(client, segment, Range="bytes=10-109")
    assert (status, len(part)) == (206, 100)
    sent += 100
    # Answers without a body count nothing: HEAD, 304, 404, 416.
    async with client.head(segment) as r:
        assert r.status == 200
        etag = r.headers["ETag"]
    assert (await fetch(client, segment, **{"If-None-Match": etag}))[0] == 304
    assert (await fetch(client, f"/vod/{ASSET}/nope/1.m4s"))[0] == 404
    assert (await fetch(client, f"/vod/{ASSET}/master.m3u8x"))[0] == 404
    assert (await fetch(client, segment, Range="bytes=999999999-"))[0] == 416

    async with client.get(f"/v1/assets/{ASSET}/stats") as r:
        assert r.status == 200
        stats = await r.json()
    assert stats["delivered_bytes_origin"] == sent
    assert stats["delivered_bytes_edge"] == 0 and stats["sessions"] == 0
    # Per hour: the hours of this test (two when it ran across the hour).
    assert {h["hour"] for h in stats["hours"]} <= hours_since(started)
    assert sum(h["delivered_bytes_origin"] for h in stats["hours"]) == sent

    # Nothing was written per request; the app's shutdown adds it to the ledger.
    ledger = SQLiteDeliveryLedger(tmp_path / "events.db")
    assert await ledger.delivered(ASSET) == {}
    await client.close()
    delivered = await ledger.delivered(ASSET)
    await ledger.close()
    assert [by_source for by_source in delivered.values()] == [{"origin": sent}]

    # A restarted origin shows it again, and adds to it.
    client, _ = await make_origin()
    status, body = await fetch(client, f"/vod/{ASSET}/master.m3u8")
    assert status == 200
    async with client.get(f"/v1/assets/{ASSET}/stats") as r:
        assert (await r.json())["delivered_bytes_origin"] == sent + len(body)


async def test_counts_reach_the_ledger_periodically(make_origin: MakeOrigin,
                                                    tmp_path: Path) -> None:
    client, _ = await make_origin(flush_seconds=0.05)
    status, body = await fetch(client, f"/vod/{ASSET}/manifest.mpd")
    assert status == 200
    ledger = SQLiteDeliveryLedger(tmp_path / "events.db")
    try:
        deadline = time.monotonic() + 10
        while await ledger.delivered(ASSET) == {}:
            assert time.monotonic() < deadline, "never flushed"
            await asyncio.sleep(0.05)
        assert list((await ledger.delivered(ASSET)).values()) == [{"origin": len(body)}]
    finally:
        await ledger.close()


async def test_a_failing_ledger_keeps_the_counts(make_origin: MakeOrigin) -> None:
    """An outage of the ledger's store loses nothing: the counts stay pending and
    go in with the next flush."""
    client, intake = await make_origin()
    assert intake.counter is not None and intake.delivery is not None
    status, body = await fetch(client, f"/vod/{ASSET}/master.m3u8")
    assert status == 200
    real_add = intake.delivery.add
    calls = 0

    async def broken(source: str, counts: Any) -> None:
        nonlocal calls
        calls += 1
        raise OSError("disk gone")

    intake.delivery.add = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await intake.flush_delivery()
    assert calls == 1 and sum(intake.counter.unflushed(ASSET).values()) == len(body)
    intake.delivery.add = real_add  # type: ignore[method-assign]
    await intake.flush_delivery()
    assert intake.counter.unflushed(ASSET) == {}
    assert [v for v in (await intake.delivery.delivered(ASSET)).values()] == [
        {"origin": len(body)}]


# -- the ledger's contract ----------------------------------------------------------

@pytest.fixture(params=["sqlite", "redis"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[Callable[[], DeliveryLedger]]:
    """A factory: each call opens the same ledger afresh (a restarted process)."""
    opened: list[DeliveryLedger] = []
    prefix = f"test:delivery:{uuid.uuid4().hex}"
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def make() -> DeliveryLedger:
        one: DeliveryLedger = (SQLiteDeliveryLedger(tmp_path / "d.db") if not url
                               else RedisDeliveryLedger.from_url(url, prefix=prefix))
        opened.append(one)
        return one

    yield make
    for one in opened:
        await one.close()
    if url:
        cleaner = RedisDeliveryLedger.from_url(url, prefix=prefix)
        keys = [k async for k in cleaner.client.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleaner.client.delete(*keys)
        await cleaner.close()


async def test_ledger_adds_per_asset_hour_and_source(
        ledger: Callable[[], DeliveryLedger]) -> None:
    a = ledger()
    await a.add("origin", {("a1", 10): 100, ("a1", 11): 5, ("a2", 10): 7})
    await a.add("origin", {("a1", 10): 1})
    await a.add("edge", {("a1", 10): 1000, ("a1", 12): 0})
    with pytest.raises(ValueError, match="unknown delivery source"):
        await a.add("player", {("a1", 10): 1})
    b = ledger()
    assert await b.delivered("a1") == {10: {"origin": 101, "edge": 1000}, 11: {"origin": 5}}
    assert await b.delivered("a2") == {10: {"origin": 7}}
    assert await b.delivered("nothing") == {}


async def test_ledger_ingest_moves_the_offset_once(
        ledger: Callable[[], DeliveryLedger]) -> None:
    a = ledger()
    assert await a.offset("file-1") == 0
    assert await a.ingest("file-1", 0, 500, {("a1", 10): 300})
    # A second ingest of the same slice (a rerun that read the old offset) is
    # refused and changes nothing.
    assert not await a.ingest("file-1", 0, 500, {("a1", 10): 300})
    assert await a.offset("file-1") == 500
    assert await a.ingest("file-1", 500, 800, {("a1", 10): 20, ("a1", 11): 1})
    assert await a.ingest("file-2", 0, 10, {("a1", 11): 2})
    b = ledger()
    assert (await b.offset("file-1"), await b.offset("file-2")) == (800, 10)
    assert await b.delivered("a1") == {10: {"edge": 320}, 11: {"edge": 3}}
