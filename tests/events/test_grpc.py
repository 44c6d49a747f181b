"""EventService over a real grpc.aio server (the auth interceptor of the platform
API in front) on the SQLite and Redis logs: a client stream counted once per
event_id, a subscriber that disconnects and resumes from its last cursor misses
nothing and repeats nothing, an asset filter, "from now", GetAssetStats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from origin.events import EventIntake
from origin.grpc_proto import events_pb2
from tests.events.conftest import MakeLog, event_service

AUTH = (("authorization", "Bearer k"),)
T = events_pb2.WatchEventType


def msg(n: int, *, asset: str = "a1", session: str = "s1",
        kind: int = T.WATCH_EVENT_TYPE_HEARTBEAT) -> events_pb2.RecordWatchEventsRequest:
    ts = Timestamp()
    ts.FromSeconds(1_800_000_000 + n)
    return events_pb2.RecordWatchEventsRequest(event=events_pb2.WatchEvent(
        event_id=f"{session}-{n}", session_id=session, asset_id=asset, viewer_id="u1",
        type=kind, time=ts, position_seconds=float(n), rendition_id="v240"))  # type: ignore[arg-type]


@pytest.fixture
async def stub(make_log: MakeLog) -> AsyncIterator[Any]:
    async with event_service(EventIntake(make_log())) as client:
        yield client


async def record(stub: Any, requests: list[Any]) -> Any:
    async def gen() -> AsyncIterator[Any]:
        for r in requests:
            yield r
    return await stub.RecordWatchEvents(gen(), metadata=AUTH)


async def take(call: Any, n: int) -> list[Any]:
    out = []
    async for item in call:
        out.append(item)
        if len(out) == n:
            break
    call.cancel()
    return out


async def test_record_counts_each_event_once(stub: Any) -> None:
    first = await record(stub, [msg(i) for i in range(150)])     # two batches inside
    assert (first.accepted, first.duplicates) == (150, 0)
    again = await record(stub, [msg(i) for i in range(140, 160)])
    assert (again.accepted, again.duplicates) == (10, 10)
    stats = (await stub.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="a1"),
                                      metadata=AUTH)).stats
    assert stats.sessions == 1 and stats.watch_seconds == pytest.approx(159.0)
    assert dict(stats.renditions) == {"v240": pytest.approx(159.0)}
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await record(stub, [msg(0, kind=T.WATCH_EVENT_TYPE_UNSPECIFIED)])
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as anon:
        await stub.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="a1"))
    assert anon.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_subscriber_resumes_from_its_cursor(stub: Any) -> None:
    await record(stub, [msg(i) for i in range(3)])         # before: "from now" skips them
    call = stub.SubscribeWatchEvents(events_pb2.SubscribeWatchEventsRequest(), metadata=AUTH)
    reader = asyncio.create_task(take(call, 5))
    await asyncio.sleep(0.5)                                # the subscription is open
    await record(stub, [msg(i) for i in range(3, 13)])
    first = await asyncio.wait_for(reader, 10)              # then it disconnects
    assert [r.event.event_id for r in first] == [f"s1-{i}" for i in range(3, 8)]
    await record(stub, [msg(i) for i in range(13, 16)])     # more while it is away
    resumed = stub.SubscribeWatchEvents(
        events_pb2.SubscribeWatchEventsRequest(cursor=first[-1].cursor), metadata=AUTH)
    rest = await asyncio.wait_for(take(resumed, 8), 10)
    ids = [r.event.event_id for r in first + rest]
    assert ids == [f"s1-{i}" for i in range(3, 16)]         # nothing missed, nothing twice
    assert rest[-1].event.type == T.WATCH_EVENT_TYPE_HEARTBEAT
    assert rest[-1].event.time.seconds == 1_800_000_015


async def test_a_subscription_of_one_asset(stub: Any) -> None:
    await record(stub, [msg(0, asset="a1")])
    call = stub.SubscribeWatchEvents(
        events_pb2.SubscribeWatchEventsRequest(cursor="0", asset_id="a2"), metadata=AUTH)
    reader = asyncio.create_task(take(call, 2))
    await record(stub, [msg(1, asset="a2"), msg(2, asset="a1"), msg(3, asset="a2")])
    got = await asyncio.wait_for(reader, 10)
    assert [(r.event.asset_id, r.event.event_id) for r in got] == [("a2", "s1-1"),
                                                                   ("a2", "s1-3")]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await take(stub.SubscribeWatchEvents(
            events_pb2.SubscribeWatchEventsRequest(cursor="x;y"), metadata=AUTH), 1)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def batch(numbers: range, **kw: Any) -> events_pb2.RecordWatchEventsRequest:
    """One message carrying many events (the repeated ``events`` field)."""
    return events_pb2.RecordWatchEventsRequest(events=[msg(n, **kw).event for n in numbers])


async def test_record_takes_batches_beside_single_events(stub: Any) -> None:
    # A batch, a single event, a message with both (event first), and a batch
    # that repeats some: each event_id counted once, all in log order.
    both = events_pb2.RecordWatchEventsRequest(event=msg(40).event,
                                               events=[msg(n).event for n in range(41, 45)])
    reply = await record(stub, [batch(range(0, 20)), msg(20), both, batch(range(15, 25))])
    assert (reply.accepted, reply.duplicates) == (30, 6)
    call = stub.SubscribeWatchEvents(events_pb2.SubscribeWatchEventsRequest(cursor="0"),
                                     metadata=AUTH)
    got = await asyncio.wait_for(take(call, 30), 10)
    assert [r.event.event_id for r in got] == (
        [f"s1-{n}" for n in range(0, 21)] + [f"s1-{n}" for n in range(40, 45)]
        + [f"s1-{n}" for n in range(21, 25)])
    # A message with no event at all, and a batch holding a bad event, are refused.
    for bad_request in (events_pb2.RecordWatchEventsRequest(),
                        batch(range(50, 52), kind=T.WATCH_EVENT_TYPE_UNSPECIFIED)):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await record(stub, [bad_request])
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
