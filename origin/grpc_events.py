"""EventService (proto/cdlc/stream/v1/events.proto): thin over origin.events.EventIntake.

- RecordWatchEvents: a client stream of events (events:write), one per message
  (``event``) or a batch per message (``events``, after ``event`` when both are
  set), appended in batches of up to ``BATCH`` with dedupe by event_id; answers
  how many were new and how many repeats. A message with no event at all is
  INVALID_ARGUMENT. A collector with events:write is trusted to name asset
  and viewer (the players' own door, POST /v1/events, is where tokens decide).
- SubscribeWatchEvents (events:read): events as they are recorded, after
  ``cursor`` (empty: from now), of one asset when ``asset_id`` is set. Each
  response carries the cursor to resume after it: resuming with the last cursor
  received misses nothing and repeats nothing already delivered; the stream is at
  least once only in that a client that stops processing before saving a cursor
  sees those events again.
- GetAssetStats (events:read): the read model's figures of one asset, with its
  delivered bytes; NOT_FOUND for an asset the application does not have.

Built without an intake (``EventServicer()``) every rpc answers UNIMPLEMENTED,
as before the event log existed.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from metadata.event_log import EVENT_TYPES, MAX_ID_CHARS, MAX_TIME, WatchEvent
from origin.events import EventIntake, UnknownAsset
from origin.grpc_errors import Refusal, mapped, mapped_stream
from origin.grpc_proto import events_pb2

Context = grpc.aio.ServicerContext[Any, Any]

_NOT_YET = "watch events are not served by this origin (no event log configured)"
_CURSOR = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
BATCH = 100
SUBSCRIBE_WAIT = 1.0


def event_from_proto(msg: events_pb2.WatchEvent) -> WatchEvent:
    """A WatchEvent from its message; Refusal(INVALID_ARGUMENT) when unusable."""
    eid, sid, asset, kind, pos = (msg.event_id, msg.session_id, msg.asset_id, msg.type,
                                  msg.position_seconds)
    if (0 < len(eid) <= MAX_ID_CHARS and 0 < len(sid) <= MAX_ID_CHARS
            and 0 < len(asset) <= MAX_ID_CHARS and 1 <= kind <= len(EVENT_TYPES)
            and 0 <= pos < math.inf and msg.HasField("time")
            and 0 <= msg.time.seconds < MAX_TIME):
        t = msg.time
        return WatchEvent(eid, sid, asset, msg.viewer_id, EVENT_TYPES[kind - 1],
                          t.seconds + t.nanos / 1e9, pos, msg.rendition_id,
                          max(0, msg.bitrate), msg.error[:1000])
    bad = grpc.StatusCode.INVALID_ARGUMENT
    if not 1 <= kind <= len(EVENT_TYPES):
        raise Refusal(bad, f"event {eid[:64]!r}: type is unspecified or unknown")
    for name, value in (("event_id", eid), ("session_id", sid), ("asset_id", asset)):
        if not value or len(value) > MAX_ID_CHARS:
            raise Refusal(bad, f"event {eid[:64]!r}: {name} is required "
                               f"(at most {MAX_ID_CHARS} characters)")
    if not msg.HasField("time"):
        raise Refusal(bad, f"event {eid[:64]!r}: time is required")
    if not 0 <= msg.time.seconds < MAX_TIME:
        raise Refusal(bad, f"event {eid[:64]!r}: time must be from 1970 to 9999")
    raise Refusal(bad, f"event {eid[:64]!r}: position_seconds must be a finite number >= 0")


def event_to_proto(e: WatchEvent) -> events_pb2.WatchEvent:
    ts = Timestamp()
    ts.seconds = int(e.time)
    ts.nanos = round((e.time - int(e.time)) * 1e9) % 1_000_000_000
    return events_pb2.WatchEvent(
        event_id=e.event_id, session_id=e.session_id, asset_id=e.asset_id,
        viewer_id=e.viewer_id, type=EVENT_TYPES.index(e.type) + 1,  # type: ignore[arg-type]
        time=ts, position_seconds=e.position_seconds, rendition_id=e.rendition_id,
        bitrate=e.bitrate, error=e.error)


class EventServicer:
    """cdlc.stream.v1.EventService (module docstring)."""

    def __init__(self, intake: EventIntake | None = None) -> None:
        self.intake = intake

    async def _intake(self, context: Context) -> EventIntake:
        if self.intake is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NOT_YET)
        assert self.intake is not None
        return self.intake

    @mapped
    async def RecordWatchEvents(
        self, request_iterator: AsyncIterator[events_pb2.RecordWatchEventsRequest],
        context: Context,
    ) -> events_pb2.RecordWatchEventsResponse:
        intake = await self._intake(context)
        accepted = duplicates = 0
        batch: list[WatchEvent] = []
        async for request in request_iterator:
            has_one = request.HasField("event")
            if has_one:
                batch.append(event_from_proto(request.event))
            elif not request.events:
                raise Refusal(grpc.StatusCode.INVALID_ARGUMENT,
                              "a message without an event (set event or events)")
            batch += (event_from_proto(m) for m in request.events)
            if len(batch) >= BATCH:
                result = await intake.record(batch)
                accepted, duplicates = accepted + result.accepted, duplicates + result.duplicates
                batch = []
        if batch:
            result = await intake.record(batch)
            accepted, duplicates = accepted + result.accepted, duplicates + result.duplicates
        return events_pb2.RecordWatchEventsResponse(accepted=accepted, duplicates=duplicates)

    @mapped_stream
    async def SubscribeWatchEvents(
        self, request: events_pb2.SubscribeWatchEventsRequest, context: Context,
    ) -> AsyncIterator[events_pb2.SubscribeWatchEventsResponse]:
        intake = await self._intake(context)
        cursor = request.cursor
        if cursor and not _CURSOR.fullmatch(cursor):
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"malformed cursor {cursor[:40]!r}")
        if not cursor:
            cursor = await intake.log.head()  # "" (empty log): from the start, which is now
        while True:
            entries = await intake.log.read(cursor, 500, SUBSCRIBE_WAIT)
            for entry in entries:
                cursor = entry.cursor
                if request.asset_id and entry.event.asset_id != request.asset_id:
                    continue
                yield events_pb2.SubscribeWatchEventsResponse(
                    event=event_to_proto(entry.event), cursor=entry.cursor)

    @mapped
    async def GetAssetStats(self, request: events_pb2.GetAssetStatsRequest,
                            context: Context) -> events_pb2.GetAssetStatsResponse:
        intake = await self._intake(context)
        if not request.asset_id:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "asset_id is required")
        try:
            s = await intake.stats(request.asset_id)
        except UnknownAsset as exc:
            raise Refusal(grpc.StatusCode.NOT_FOUND, str(exc)) from exc
        return events_pb2.GetAssetStatsResponse(stats=events_pb2.AssetStats(
            asset_id=s.asset_id, sessions=s.sessions, viewers=s.viewers,
            watch_seconds=s.watch_seconds, completion_rate=s.completion_rate,
            startup_p50_seconds=s.startup_p50_seconds,
            startup_p95_seconds=s.startup_p95_seconds, rebuffer_ratio=s.rebuffer_ratio,
            renditions=s.renditions, errors=s.errors,
            delivered_bytes_origin=s.delivered_bytes_origin,
            delivered_bytes_edge=s.delivered_bytes_edge))
