"""AssetService: upload, fetch, read, list, follow, retry and delete assets.

Thin over the application interface (origin.application): each method reads its
message, calls one operation and answers with a message; refusals go through
origin.grpc_errors. An upload or a fetched source is streamed into a temp file
in ``upload_dir`` under ``max_upload_bytes`` (the REST API's limit) and removed
on any failure or cancellation; the complete file goes to ``application.submit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from metadata.jobs import NotFound, RequestError, check_asset_id
from metadata.models import JobState
from origin.application import Application, AssetView
from origin.fetch import FetchPolicy, FileSink, fetch_source, source_name
from origin.grpc_convert import STATE_FROM_PROTO, STATE_TO_PROTO, asset_message, job_options
from origin.grpc_errors import Refusal, mapped, mapped_stream
from origin.grpc_proto import assets_pb2

Context = grpc.aio.ServicerContext[Any, Any]

MAX_PAGE = 1000
DEFAULT_PAGE = 50
MAX_HELD_ANSWERS = 4096


def _asset_id(value: str) -> str:
    if not value:
        raise RequestError("asset_id is required")
    return check_asset_id(value)


async def _not_cancelled(context: Context) -> None:
    """grpc.aio ends a server's request stream the same way when the client
    half-closes (the upload is complete) and when it cancels (RST_STREAM): the
    cancellation is reported separately, a moment later. Before a streamed upload
    is taken as complete, let that report land (a few loop turns) and refuse a
    cancelled call, so a truncated master is not submitted. This narrows the race
    to a report delayed by more than those turns; only a completion marker in the
    protocol (a declared size, or a last message) would close it."""
    for _ in range(4):
        await asyncio.sleep(0)
    if context.cancelled():
        raise asyncio.CancelledError("the client cancelled the upload")


class AssetServicer:
    """cdlc.stream.v1.AssetService over an Application."""

    def __init__(self, application: Application, *, upload_dir: Path, max_upload_bytes: int,
                 fetch_policy: FetchPolicy, watch_interval: float = 0.5) -> None:
        self.application = application
        self.upload_dir = Path(upload_dir)
        self.max_upload_bytes = max_upload_bytes
        self.fetch_policy = fetch_policy
        self.watch_interval = watch_interval
        # The GetAsset answer of a READY view, by asset: kept while the application
        # hands back that same view object (the engine does, from memory, until
        # its ready_ttl runs out), so a hot read builds no message.
        self._answers: dict[str, tuple[AssetView, assets_pb2.GetAssetResponse]] = {}

    def _temp_path(self) -> Path:
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        # The pid in the name lets a sweep tell a dead upload's file (engine.sweep).
        return self.upload_dir / f"upload-{uuid.uuid4().hex}.{os.getpid()}.part"

    @mapped
    async def UploadAsset(self, request_iterator: AsyncIterator[assets_pb2.UploadAssetRequest],
                          context: Context) -> assets_pb2.UploadAssetResponse:
        stream = aiter(request_iterator)
        first = await anext(stream, None)
        if first is None or first.WhichOneof("content") != "header":
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT,
                          "the first message of an upload must be its header")
        header = first.header
        asset_id = check_asset_id(header.asset_id) if header.asset_id else None
        options = job_options(header.options)
        tmp = self._temp_path()
        try:
            async with FileSink(tmp, self.max_upload_bytes, "upload") as sink:
                async for message in stream:
                    if message.WhichOneof("content") != "chunk":
                        raise Refusal(grpc.StatusCode.INVALID_ARGUMENT,
                                      "an upload has one header, before the chunks")
                    await sink.write(message.chunk)
            await _not_cancelled(context)
            if sink.written == 0:
                raise RequestError("empty upload: no bytes of the master were sent")
            if header.size_bytes and sink.written != header.size_bytes:
                raise RequestError(f"upload ended after {sink.written} of the "
                                   f"{header.size_bytes} bytes its header announced; "
                                   "nothing was kept")
        except BaseException:  # refused, too large, or the client went away
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        # The application owns the file from here: kept, or removed on refusal.
        view = await self.application.submit(
            asset_id, tmp, options, source_name=Path(header.file_name).name or "master")
        return assets_pb2.UploadAssetResponse(asset=asset_message(view.asset, view))

    @mapped
    async def CreateAsset(self, request: assets_pb2.CreateAssetRequest,
                          context: Context) -> assets_pb2.CreateAssetResponse:
        if not request.source_uri:
            raise RequestError("source_uri is required (s3://bucket/key or http(s)://...)")
        asset_id = check_asset_id(request.asset_id) if request.asset_id else None
        options = job_options(request.options)
        name = source_name(request.source_uri)
        # Bad options or a taken id are refused before the master is fetched.
        await self.application.check(asset_id, options, source_name=name)
        tmp = self._temp_path()
        await fetch_source(request.source_uri, tmp, self.fetch_policy)
        view = await self.application.submit(asset_id, tmp, options, source_name=name)
        return assets_pb2.CreateAssetResponse(asset=asset_message(view.asset, view))

    @mapped
    async def GetAsset(self, request: assets_pb2.GetAssetRequest,
                       context: Context) -> assets_pb2.GetAssetResponse:
        view = await self.application.get(_asset_id(request.asset_id))
        held = self._answers.get(view.asset.id)
        if held is not None and held[0] is view:
            return held[1]
        answer = assets_pb2.GetAssetResponse(asset=asset_message(view.asset, view))
        if view.asset.state == JobState.READY:
            # grpc only serialises an answer, so one message serves concurrent calls.
            if len(self._answers) >= MAX_HELD_ANSWERS:
                self._answers.clear()
            self._answers[view.asset.id] = (view, answer)
        return answer

    @mapped
    async def ListAssets(self, request: assets_pb2.ListAssetsRequest,
                         context: Context) -> assets_pb2.ListAssetsResponse:
        size = request.page_size or DEFAULT_PAGE
        if not 1 <= size <= MAX_PAGE:
            raise RequestError(f"page_size must be within 1..{MAX_PAGE}, got {size}")
        after = check_asset_id(request.page_token) if request.page_token else None
        state = None
        if request.state != assets_pb2.ASSET_STATE_UNSPECIFIED:
            if request.state not in STATE_FROM_PROTO:
                raise RequestError(f"unknown state {request.state}")
            state = STATE_FROM_PROTO[request.state]
        assets = await self.application.list_assets(limit=size, after=after, state=state)
        return assets_pb2.ListAssetsResponse(
            assets=[asset_message(a) for a in assets],
            next_page_token=assets[-1].id if len(assets) == size else "")

    @mapped
    async def DeleteAsset(self, request: assets_pb2.DeleteAssetRequest,
                          context: Context) -> assets_pb2.DeleteAssetResponse:
        await self.application.delete(_asset_id(request.asset_id))
        return assets_pb2.DeleteAssetResponse()

    @mapped
    async def RetryAsset(self, request: assets_pb2.RetryAssetRequest,
                         context: Context) -> assets_pb2.RetryAssetResponse:
        asset_id = _asset_id(request.asset_id)
        await self.application.retry(asset_id)
        view = await self.application.get(asset_id)
        return assets_pb2.RetryAssetResponse(asset=asset_message(view.asset, view))

    @mapped_stream
    async def WatchAsset(self, request: assets_pb2.WatchAssetRequest,
                         context: Context) -> AsyncIterator[assets_pb2.WatchAssetResponse]:
        """Poll the application every ``watch_interval``; send the asset when its
        state, progress or error changed; end after a terminal state. A call's
        deadline ends it too (grpc cancels the handler; the loop also stops when
        no time is left)."""
        asset_id = _asset_id(request.asset_id)
        last: tuple[object, ...] | None = None
        while True:
            try:
                view = await self.application.get(asset_id)
            except NotFound:
                if last is None:
                    raise
                raise NotFound(f"asset {asset_id} was deleted") from None
            asset = view.asset
            seen = (asset.state, round(asset.progress, 4), asset.error)
            if seen != last:
                last = seen
                yield assets_pb2.WatchAssetResponse(asset=asset_message(asset, view))
            if asset.state.finished:
                return
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                # The caller's deadline passed here before grpc noticed: say so,
                # rather than end the stream as if the asset had finished.
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"deadline passed while watching {asset_id}")
            await asyncio.sleep(self.watch_interval if remaining is None
                                else min(self.watch_interval, remaining))


__all__ = ["STATE_TO_PROTO", "AssetServicer"]
