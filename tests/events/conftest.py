"""Event logs for the contract suite: SQLite (a fresh metadata.db), Redis Streams
(the real Redis of tests/metadata/servers.py, a unique key prefix per test) and
Kafka where CDLC_TEST_KAFKA names a broker (host:port; skipped otherwise)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from metadata.event_log import EventLog, Retention, WatchEvent
from metadata.event_log_redis import RedisEventLog
from metadata.event_log_sqlite import SQLiteEventLog
from origin.events import EventIntake
from tests.metadata.servers import redis_url

__all__ = ["redis_url"]

MakeLog = Callable[..., EventLog]


@pytest.fixture(params=["sqlite", "redis", "kafka"])
async def make_log(request: pytest.FixtureRequest, tmp_path: Path,
                   ) -> AsyncIterator[MakeLog]:
    """make_log(retention=None, name="a"): a log of this backend; the same name
    again is the same log (a restarted process), opened afresh."""
    kind: str = request.param
    prefix = f"test:events:{uuid.uuid4().hex}"
    opened: list[EventLog] = []
    redis = request.getfixturevalue("redis_url") if kind == "redis" else ""
    kafka = os.environ.get("CDLC_TEST_KAFKA", "")
    if kind == "kafka" and not kafka:
        pytest.skip("CDLC_TEST_KAFKA names no Kafka broker")

    def make(retention: Retention | None = None, name: str = "a") -> EventLog:
        log: EventLog
        if kind == "sqlite":
            log = SQLiteEventLog(tmp_path / f"{name}.db", retention=retention)
        elif kind == "redis":
            log = RedisEventLog.from_url(redis, prefix=f"{prefix}:{name}", retention=retention)
        else:
            from metadata.event_log_kafka import KafkaEventLog

            log = KafkaEventLog(kafka, f"cdlc-test-{prefix[12:]}-{name}", retention=retention)
        opened.append(log)
        return log

    yield make
    for log in opened:
        await log.close()
    if kind == "redis":
        cleaner = RedisEventLog.from_url(redis, prefix=prefix)
        keys = [k async for k in cleaner.client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await cleaner.client.delete(*keys)
        await cleaner.close()


def event(n: int, *, session: str = "s1", asset: str = "a1", viewer: str = "u1",
          kind: str = "heartbeat", at: float = 1_800_000_000.0, position: float = 0.0,
          rendition: str = "v360") -> WatchEvent:
    return WatchEvent(event_id=f"{session}-{n}", session_id=session, asset_id=asset,
                      viewer_id=viewer, type=kind, time=at, position_seconds=position,
                      rendition_id=rendition)


@contextlib.asynccontextmanager
async def event_service(intake: EventIntake, api_key: str = "k") -> AsyncIterator[Any]:
    """EventService over ``intake`` on a real grpc.aio server on 127.0.0.1, the auth
    interceptor in front (``Bearer {api_key}``); yields a client stub. The intake is
    started here and closed after."""
    import grpc.aio

    from origin.auth import Authenticator
    from origin.grpc_auth import AuthInterceptor
    from origin.grpc_events import EventServicer
    from origin.grpc_proto import events_pb2_grpc

    await intake.start()
    server = grpc.aio.server(interceptors=[AuthInterceptor(Authenticator(api_key=api_key))])
    events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(intake), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield events_pb2_grpc.EventServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        await intake.close()
