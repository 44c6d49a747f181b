"""The watch-event intake over a Redis Streams log this test owns and breaks:
killed, hung (SIGSTOP: connections taken, never answered), brought back.

What must hold, over REST (POST /v1/events, the stats, /readyz) and gRPC
(RecordWatchEvents): an outage is a 503 / UNAVAILABLE within seconds, never a
hang or a 500; the 503 carries CORS and Retry-After, so a page's beacon can read
it and keep its batch; /readyz names the log; once Redis is back the same batch
sent again is recorded once (what the log took before the 503 counts as a
duplicate, nothing twice)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp

from metadata import open_cache, open_objects, open_store
from metadata.event_log_redis import RedisEventLog
from origin.app import OriginDeps, create_app
from origin.events import EventIntake
from origin.grpc_proto import events_pb2
from tests.events.conftest import event_service
from tests.metadata.servers import ServerProcess, redis_server

# A hung Redis fails a call after the log's 5 s socket timeout; the slack is a
# loaded CI machine's.
BOUND_S = 9.0

__all__ = ["redis_server"]  # the fixture


def batch(session: str, n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"{session}-{i}", "session_id": session, "asset_id": "a1",
             "type": "heartbeat", "time": 1_800_000_000 + i,
             "position_seconds": i} for i in range(n)]


@pytest.fixture
async def origin(redis_server: ServerProcess, tmp_path: Path,
                 ) -> AsyncIterator[tuple[TestClient[Any, Any], RedisEventLog]]:
    log = RedisEventLog.from_url(redis_server.url, prefix=f"t:{uuid.uuid4().hex}")
    deps = OriginDeps(store=open_store("", tmp_path), objects=open_objects("", tmp_path),
                      cache=open_cache(""), close_backends=True, events=EventIntake(log))
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(deps)))
    await client.start_server()
    yield client, log
    await client.close()


async def timed(call: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    result = await asyncio.wait_for(call, 30)
    return result, time.monotonic() - t0


async def test_a_hung_then_killed_log_is_a_503_the_beacon_can_read(
        origin: tuple[TestClient[Any, Any], RedisEventLog],
        redis_server: ServerProcess) -> None:
    client, _log = origin
    events = batch("s1", 5)
    r = await client.post("/v1/events", json=events[:2])
    assert r.status == 200 and (await r.json())["accepted"] == 2

    redis_server.pause()
    r, took = await timed(client.post("/v1/events", json=events))
    assert r.status == 503 and took < BOUND_S, (r.status, took)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Retry-After"] and "unavailable" in (await r.json())["title"]
    r, took = await timed(client.get("/v1/assets/a1/stats"))
    assert r.status == 503 and took < BOUND_S, (r.status, took)
    r, took = await timed(client.get("/readyz"))
    body = await r.json()
    assert r.status == 503 and body["events"].startswith("error") and took < BOUND_S
    assert body["store"] == "ok"

    redis_server.kill()
    r, took = await timed(client.post("/v1/events", json=events))
    assert r.status == 503 and took < 2.0
    assert (await client.get("/readyz")).status == 503

    # Back on its port (an empty Redis: it keeps nothing on disk); the beacon sends
    # the batch again and it is taken.
    redis_server.start()
    deadline = time.monotonic() + 15
    while True:
        r = await client.post("/v1/events", json=events)
        if r.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert doc["accepted"] + doc["duplicates"] == 5 and doc["rejected"] == []
    assert (await client.get("/readyz")).status == 200
    r = await client.get("/v1/events/metrics")
    assert 'cdlc_watch_events_rejected_total{reason="unavailable"} 2.0' in await r.text()


async def test_a_batch_the_hung_log_took_late_is_not_counted_twice(
        origin: tuple[TestClient[Any, Any], RedisEventLog],
        redis_server: ServerProcess) -> None:
    """SIGSTOP keeps the command in the socket: Redis runs it when it wakes, after
    the 503. The resend then finds those events seen: duplicates, not new."""
    client, log = origin
    events = batch("s2", 4)
    redis_server.pause()
    r = await client.post("/v1/events", json=events)
    assert r.status == 503
    redis_server.resume()
    await asyncio.sleep(0.3)  # the server works through what waited in its socket
    r = await client.post("/v1/events", json=events)
    assert r.status == 200
    doc = await r.json()
    assert doc["accepted"] + doc["duplicates"] == 4
    logged = await log.read("", 100)
    assert sorted(e.event.event_id for e in logged) == sorted(e["event_id"] for e in events)


async def test_grpc_record_is_unavailable_while_the_log_hangs(
        redis_server: ServerProcess) -> None:
    log = RedisEventLog.from_url(redis_server.url, prefix=f"t:{uuid.uuid4().hex}")
    ts = Timestamp()
    ts.FromSeconds(1_800_000_000)

    async def requests() -> AsyncIterator[Any]:
        yield events_pb2.RecordWatchEventsRequest(event=events_pb2.WatchEvent(
            event_id="g-1", session_id="g", asset_id="a1", viewer_id="u1",
            type=events_pb2.WatchEventType.WATCH_EVENT_TYPE_HEARTBEAT, time=ts))

    async with event_service(EventIntake(log)) as stub:
        redis_server.pause()
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RecordWatchEvents(requests(), metadata=(("authorization", "Bearer k"),),
                                         timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
        assert time.monotonic() - t0 < BOUND_S
        redis_server.resume()
        answer = await stub.RecordWatchEvents(requests(),
                                              metadata=(("authorization", "Bearer k"),))
        assert answer.accepted + answer.duplicates == 1


async def test_the_beacon_keeps_a_bounded_queue_through_an_outage_and_sends_it_after(
        origin: tuple[TestClient[Any, Any], RedisEventLog],
        redis_server: ServerProcess) -> None:
    """The page's beacon (run in Node, its own fetch) while the log is out: every
    flush is a 503 and the events stay queued, at most ``maxQueued`` (the oldest
    dropped). Before, the queue grew without bound and went as one request once
    the origin was back: past 500 events a 413, and all of it was lost."""
    import json
    import shutil

    from origin.events import BEACON_JS

    node = shutil.which("node")
    assert node is not None, "node is installed by make setup"
    client, log = origin
    redis_server.kill()
    endpoint = str(client.make_url("/v1/events"))
    proc = await asyncio.create_subprocess_exec(
        node, str(Path(__file__).with_name("beacon_node.cjs")), str(BEACON_JS), endpoint,
        "a1", "1200", "700", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        # 1201 events: the start and 1200 heartbeats.
        assert line.decode().split() == ["queued", "700", "dropped", "501"], line
        redis_server.start()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out.decode().splitlines()[-1]) == {"sent": 700, "dropped": 501,
                                                         "queued": 0}
    logged = await log.read("", 2000)
    seqs = sorted(int(e.event.event_id.rsplit("-", 1)[1]) for e in logged)
    assert seqs == list(range(501, 1201))  # the newest 700, each once


def test_serve_starts_without_its_event_log_and_takes_events_once_it_answers(
        tmp_path: Path) -> None:
    """`cdlc serve` with CDLC_EVENTS naming a Redis that is not up exited with a
    100-line traceback: playback went down with the analytics. It now serves, says
    so in one warning, answers 503 on the event routes and 503 on /readyz (naming
    the log), and takes events once the Redis answers."""
    import json
    import urllib.request

    from cdn.edge import free_port
    from tests.conftest import http_status, make_env
    from tests.metadata.servers import own_redis

    redis_port, port = free_port(), free_port()
    env = make_env(tmp_path / "data", CDLC_EVENTS=f"redis://127.0.0.1:{redis_port}/0")
    proc = env.serve(port)
    base = f"http://127.0.0.1:{port}"
    body = json.dumps(batch("boot", 2)).encode()
    server = None
    try:
        assert http_status(f"{base}/healthz") == 200
        assert http_status(f"{base}/readyz") == 503
        assert http_status(f"{base}/v1/events", data=body, method="POST") == 503
        server = own_redis(redis_port).start()
        assert http_status(f"{base}/v1/events", data=body, method="POST") == 200
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as resp:
            assert json.loads(resp.read())["events"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if server is not None:
            server.stop()
    log = (tmp_path / "data" / f"serve-{port}.log").read_text()
    warned = [line for line in log.splitlines() if "event log does not answer" in line]
    assert len(warned) == 1 and "Traceback" not in log, log[-3000:]


async def test_a_full_disk_under_the_sqlite_log_is_a_507_and_keeps_nothing_half(
        tmp_path: Path) -> None:
    """The embedded log (a table in metadata.db) on a disk that fills: a batch it
    cannot write is a 507 the beacon can read (CORS), none of its events recorded;
    with room again the same batch is taken whole, each event once."""
    import contextlib
    import os

    from metadata.event_log_sqlite import SQLiteEventLog
    from tests.conftest import tmpfs

    with tmpfs(tmp_path / "disk", "2m") as disk:
        log = SQLiteEventLog(disk / "metadata.db")
        deps = OriginDeps(store=open_store("", tmp_path), objects=open_objects("", tmp_path),
                          cache=open_cache(""), close_backends=True, events=EventIntake(log))
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(deps)))
        await client.start_server()
        try:
            r = await client.post("/v1/events", json=batch("warm", 3))
            assert r.status == 200
            filler = disk / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as out:
                while True:
                    out.write(os.urandom(65536))
                    out.flush()
            # Big enough that SQLite needs pages it cannot get.
            events = [{**e, "error": "x" * 900} for e in batch("full", 200)]
            r = await client.post("/v1/events", json=events)
            assert r.status == 507, await r.text()
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert [e.event.session_id for e in await log.read("", 1000)] == ["warm"] * 3
            filler.unlink()
            r = await client.post("/v1/events", json=events)
            assert r.status == 200 and (await r.json())["accepted"] == 200
            assert len(await log.read("", 1000)) == 203
        finally:
            await client.close()
