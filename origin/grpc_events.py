"""EventService, for now: every rpc answers UNIMPLEMENTED.

The service is registered (so reflection lists it and its scopes are enforced)
until the event log behind it lands; that implementation replaces this class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from origin.grpc_proto import events_pb2

Context = grpc.aio.ServicerContext[Any, Any]

_NOT_YET = "watch events are not served by this origin yet"


class EventServicer:
    """cdlc.stream.v1.EventService stubs."""

    async def RecordWatchEvents(
        self, request_iterator: AsyncIterator[events_pb2.RecordWatchEventsRequest],
        context: Context,
    ) -> events_pb2.RecordWatchEventsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NOT_YET)

    async def SubscribeWatchEvents(
        self, request: events_pb2.SubscribeWatchEventsRequest, context: Context,
    ) -> AsyncIterator[events_pb2.SubscribeWatchEventsResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NOT_YET)
        yield events_pb2.SubscribeWatchEventsResponse()  # pragma: no cover (a generator)

    async def GetAssetStats(self, request: events_pb2.GetAssetStatsRequest,
                            context: Context) -> events_pb2.GetAssetStatsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NOT_YET)
