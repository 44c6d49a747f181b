"""Stats of an asset that does not exist: 404 problem+json over REST, NOT_FOUND
over gRPC; an existing asset without events stays 200 with zeros (REST and
gRPC); a deleted asset's stats go with it. The intake asks the engine's real
application layer (origin/app.py wires it), over a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp.test_utils import TestClient

from engine.application import Engine
from engine.config import Settings
from engine.pipeline import Services
from metadata import open_cache, open_objects, open_store
from metadata.event_log import WatchEvent
from metadata.event_log_sqlite import SQLiteEventLog
from metadata.models import Asset
from metadata.store import MetadataStore
from origin.app import OriginDeps, create_app
from origin.events import EventIntake
from origin.grpc_events import EventServicer
from origin.grpc_proto import events_pb2, events_pb2_grpc
from tests.origin.conftest import HeldJobs


@dataclass
class Stack:
    client: TestClient[Any, Any]
    stub: Any
    intake: EventIntake
    store: MetadataStore
    engine: Engine


@pytest.fixture
async def stack(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Stack]:
    store, objects, cache = (open_store("", tmp_path), open_objects("", tmp_path),
                             open_cache(""))
    services = Services(store=store, objects=objects, cache=cache, work_dir=tmp_path / "w")
    engine = Engine(Settings(data_dir=tmp_path), services, HeldJobs(objects))
    intake = EventIntake(SQLiteEventLog(tmp_path / "metadata.db"))
    client = await aiohttp_client(create_app(OriginDeps(
        store=store, objects=objects, cache=cache, application=engine, events=intake,
        close_backends=True)))
    server = grpc.aio.server()
    events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(intake), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await store.put_asset(Asset(id="quiet"))
    await store.put_asset(Asset(id="watched"))
    await intake.record([WatchEvent("e1", "s1", "watched", "u1", "start", 1_800_000_000.0)])
    try:
        yield Stack(client, events_pb2_grpc.EventServiceStub(channel), intake, store, engine)
    finally:
        await channel.close()
        await server.stop(0)


async def test_rest_stats_of_a_missing_asset_are_a_404(stack: Stack) -> None:
    r = await stack.client.get("/v1/assets/nosuch/stats")
    assert r.status == 404
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert "nosuch" in (await r.json())["title"]
    r = await stack.client.get("/v1/assets/bad.id!/stats")
    assert r.status == 400
    r = await stack.client.get("/v1/assets/quiet/stats")
    assert r.status == 200
    doc = await r.json()
    assert (doc["sessions"], doc["watch_seconds"], doc["delivered_bytes_origin"],
            doc["hours"]) == (0, 0.0, 0, [])
    r = await stack.client.get("/v1/assets/watched/stats")
    assert (r.status, (await r.json())["sessions"]) == (200, 1)


async def test_grpc_stats_of_a_missing_asset_are_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="nosuch"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nosuch" in (err.value.details() or "")
    quiet = await stack.stub.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="quiet"))
    assert (quiet.stats.asset_id, quiet.stats.sessions, quiet.stats.delivered_bytes_edge) == (
        "quiet", 0, 0)
    watched = await stack.stub.GetAssetStats(
        events_pb2.GetAssetStatsRequest(asset_id="watched"))
    assert watched.stats.sessions == 1


async def test_a_deleted_assets_stats_are_gone(stack: Stack) -> None:
    await stack.engine.delete("watched")
    r = await stack.client.get("/v1/assets/watched/stats")
    assert r.status == 404
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="watched"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_without_an_event_log_the_routes_answer_503(tmp_path: Path,
                                                          aiohttp_client: Any) -> None:
    store, objects, cache = (open_store("", tmp_path), open_objects("", tmp_path),
                             open_cache(""))
    client = await aiohttp_client(create_app(OriginDeps(
        store=store, objects=objects, cache=cache, close_backends=True)))
    for method, path in (("GET", "/v1/assets/a1/stats"), ("POST", "/v1/events"),
                         ("GET", "/v1/events/metrics")):
        r = await client.request(method, path)
        assert r.status == 503, path
        assert "no event log" in (await r.json())["title"]
    r = await client.get("/player/cdlc-beacon.js")
    assert r.status == 200 and "sendBeacon" in await r.text()
