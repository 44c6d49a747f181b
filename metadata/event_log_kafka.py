"""EventLog on Kafka (aiokafka), for ``CDLC_EVENTS=kafka://host:port[,host:port]/topic``.

One partition of the topic (partition 0) carries the log, so its offsets are a
total order and the cursor is simply the offset (text). The producer is
idempotent with ``acks=all``: a retried send is not written twice. Kafka itself
does not dedupe by key, so repeats of an ``event_id`` are dropped by a window of
recently seen ids kept in this process (``dedupe_seconds``, bounded in size):
two origin processes writing one topic may both record a resent event. Where
that matters use Redis Streams, whose dedupe is on the server. Retention is the
topic's own (``retention.ms``, ``retention.bytes``), set by whoever runs Kafka.

Tested only where ``CDLC_TEST_KAFKA`` names a broker (tests/events/).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from metadata.event_log import AppendResult, LoggedEvent, Retention, WatchEvent

_MAX_SEEN = 1_000_000


class KafkaEventLog:
    """The Kafka EventLog (module docstring)."""

    dedupe_across_processes = False     # the window of seen ids is this process's

    def __init__(self, bootstrap: str, topic: str, *, retention: Retention | None = None,
                 ) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.retention = retention or Retention()
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._producer: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, retention: Retention | None = None) -> KafkaEventLog:
        parts = urlsplit(url)
        topic = parts.path.strip("/") or "cdlc-watch-events"
        if not parts.netloc:
            raise ValueError(f"kafka URL {url!r} names no broker (kafka://host:port/topic)")
        return cls(parts.netloc, topic, retention=retention)

    async def _start(self) -> Any:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                        enable_idempotence=True)
            await producer.start()
            self._producer = producer
        return self._producer

    def _is_new(self, event_id: str, now: float) -> bool:
        horizon = now - self.retention.dedupe_seconds
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at >= horizon and len(self._seen) < _MAX_SEEN:
                break
            del self._seen[oldest]
        if event_id in self._seen:
            return False
        self._seen[event_id] = now
        return True

    async def append(self, events: Sequence[WatchEvent]) -> AppendResult:
        producer = await self._start()
        now = time.time()
        async with self._lock:
            fresh = [e for e in events if self._is_new(e.event_id, now)]
            futures = [await producer.send(self.topic, e.to_json().encode(),
                                           key=e.session_id.encode(), partition=0)
                       for e in fresh]
            metas = [await f for f in futures]
        added = tuple(LoggedEvent(str(m.offset), e) for m, e in zip(metas, fresh, strict=True))
        return AppendResult(len(added), len(events) - len(added), added)

    async def _consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign([TopicPartition(self.topic, 0)])
        return consumer

    async def read(self, after: str, limit: int = 500, wait: float = 0.0,
                   ) -> list[LoggedEvent]:
        from aiokafka import TopicPartition

        part = TopicPartition(self.topic, 0)
        consumer = await self._consumer()
        try:
            if after:
                consumer.seek(part, int(after) + 1)
            else:
                await consumer.seek_to_beginning(part)
            batches = await consumer.getmany(part, timeout_ms=int(max(wait, 0.05) * 1000),
                                             max_records=limit)
            return [LoggedEvent(str(r.offset), WatchEvent.from_json(r.value))
                    for r in batches.get(part, [])]
        finally:
            await consumer.stop()

    async def head(self) -> str:
        from aiokafka import TopicPartition

        part = TopicPartition(self.topic, 0)
        consumer = await self._consumer()
        try:
            end = (await consumer.end_offsets([part]))[part]
            return str(end - 1) if end > 0 else ""
        finally:
            await consumer.stop()

    async def ping(self) -> None:
        await self._start()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
