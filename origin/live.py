"""Live asset changes for the console: ``GET /v1/live``, a server-sent events
stream (HTML Living Standard §9.2, text/event-stream).

One poller per origin process reads the asset rows (the first ``max_assets``,
10,000, by id) once a second while anyone listens (an asset row mirrors its
current job's state and progress) and sends each listener only what changed:
first an ``event: snapshot`` with every asset, then ``event: asset`` with an asset
whose state, progress, error or published version moved, and ``event: deleted``
with ``{"id": ...}`` for one that is gone. With more assets than that, one pushed
past the window by a new asset sorting before it is not reported (it is not
deleted), and a listener keeps its last row. A comment line every ``heartbeat``
seconds keeps proxies from closing an idle stream. The page reconnects by itself
(EventSource) and gets a fresh snapshot.

Auth: the API key, as the ``Authorization`` header or ``?key=`` (EventSource
cannot set headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web

from metadata.models import Asset
from metadata.store import asset_pages
from origin.admin import asset_json, problem
from origin.application import Application

log = logging.getLogger(__name__)

Authorise = Callable[[web.Request], bool]
_Message = tuple[str, Any] | None  # (event name, data); None ends the stream


def _fingerprint(a: Asset) -> tuple[Any, ...]:
    return (a.state, round(a.progress, 3), a.error, a.version, a.current_job, a.duration)


class LiveAssets:
    """The shared poller and its listeners."""

    def __init__(self, application: Application, *, authorise: Authorise,
                 poll_seconds: float = 1.0, heartbeat_seconds: float = 15.0,
                 max_assets: int = 10_000) -> None:
        self.application = application
        self.authorise = authorise
        self.poll, self.heartbeat = poll_seconds, heartbeat_seconds
        self.max_assets = max_assets
        self._listeners: set[asyncio.Queue[_Message]] = set()
        self._known: dict[str, tuple[tuple[Any, ...], Asset]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    async def _all(self) -> tuple[list[Asset], str | None]:
        """The first ``max_assets`` assets by id, and the last id of that window when
        more may follow it (None: these are all)."""
        out = [a async for page in asset_pages(self.application, most=self.max_assets)
               for a in page]
        return out, (out[-1].id if len(out) >= self.max_assets else None)

    async def _run(self) -> None:
        while self._listeners:
            try:
                await self._tick()
            except Exception:  # the store is out: listeners keep their last view
                log.warning("live: reading assets failed", exc_info=True)
            self._first.set()
            await asyncio.sleep(self.poll)
        self._task = None

    async def _tick(self) -> None:
        assets, window_end = await self._all()
        current = {a.id: (_fingerprint(a), a) for a in assets}
        changes: list[tuple[str, Any]] = []
        for asset_id, (fp, a) in current.items():
            old = self._known.get(asset_id)
            if old is None or old[0] != fp:
                changes.append(("asset", asset_json(a)))
        for asset_id in self._known.keys() - current.keys():
            # Past a full window an asset may only have been pushed out of it (a new
            # one sorts before it): that is no delete.
            if window_end is None or asset_id < window_end:
                changes.append(("deleted", {"id": asset_id}))
        self._known = current
        for queue in list(self._listeners):
            for change in changes:
                queue.put_nowait(change)

    def _snapshot(self) -> list[dict[str, Any]]:
        return [asset_json(a) for _, a in sorted(self._known.values(), key=lambda v: v[1].id)]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self.authorise(_with_query_key(request)):
            denied = problem(401, "missing or wrong API key")
            denied.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="cdlc"'
            return denied
        queue: asyncio.Queue[_Message] = asyncio.Queue()
        if self._task is None:
            self._known = {}
            self._first.clear()
            self._listeners.add(queue)
            self._task = asyncio.create_task(self._run())
            await self._first.wait()
            with contextlib.suppress(asyncio.QueueEmpty):  # the first tick's changes
                while True:                                # are the snapshot
                    queue.get_nowait()
        else:
            await self._first.wait()
            self._listeners.add(queue)
        resp = web.StreamResponse(headers={
            hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass events through at once
        })
        try:
            await resp.prepare(request)
            await resp.write(_event("snapshot", {"items": self._snapshot()}))
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), self.heartbeat)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    break
                await resp.write(_event(*message))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._listeners.discard(queue)
        return resp

    async def shutdown(self) -> None:
        """End every stream (the app is stopping; clients reconnect elsewhere)."""
        for queue in list(self._listeners):
            queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _event(name: str, data: Any) -> bytes:
    # One data line: json.dumps escapes newlines, so the event cannot be split.
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _with_query_key(request: web.Request) -> web.Request:
    """The request, with ``?key=`` moved into an Authorization header for the
    shared API-key check."""
    key = request.query.get("key")
    if key is None or hdrs.AUTHORIZATION in request.headers:
        return request
    return request.clone(headers={**request.headers, hdrs.AUTHORIZATION: f"Bearer {key}"})


LIVE = web.AppKey("live", LiveAssets)


def add_live_routes(app: web.Application, application: Application, *, authorise: Authorise,
                    poll_seconds: float = 1.0) -> LiveAssets:
    """Serve GET /v1/live on ``app``."""
    live = LiveAssets(application, authorise=authorise, poll_seconds=poll_seconds)
    app[LIVE] = live
    app.router.add_get("/v1/live", live.stream, name="live")

    async def stop(_: web.Application) -> None:
        await live.shutdown()

    app.on_shutdown.append(stop)
    return live
