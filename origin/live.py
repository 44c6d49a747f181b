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

Faults: while the asset rows cannot be read (the store is out) a listener gets
``event: unavailable`` with ``{"detail": ...}`` once, never an empty snapshot
passed off as the catalogue; the first good poll after it sends every listener a
fresh ``snapshot``. A listener that does not read (a stalled or vanished client)
is dropped once ``max_pending`` changes wait for it, or once one write has waited
``write_timeout`` seconds: its connection is closed, and what it holds is freed.

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


class _Listener:
    """One stream's queue of changes and its connection; ``dropped`` once it fell
    too far behind."""

    __slots__ = ("dropped", "queue", "transport")

    def __init__(self, most: int, transport: asyncio.Transport | None) -> None:
        self.queue: asyncio.Queue[_Message] = asyncio.Queue(most)
        self.transport = transport
        self.dropped = False

    def drop(self) -> None:
        """Cut it off now: a handler waiting on its full socket is woken by the
        abort, not only by the write timeout."""
        self.dropped = True
        if self.transport is not None:
            self.transport.abort()


def _fingerprint(a: Asset) -> tuple[Any, ...]:
    return (a.state, round(a.progress, 3), a.error, a.version, a.current_job, a.duration)


class LiveAssets:
    """The shared poller and its listeners."""

    def __init__(self, application: Application, *, authorise: Authorise,
                 poll_seconds: float = 1.0, heartbeat_seconds: float = 15.0,
                 max_assets: int = 10_000, max_pending: int = 1000,
                 write_timeout: float = 30.0) -> None:
        self.application = application
        self.authorise = authorise
        self.poll, self.heartbeat = poll_seconds, heartbeat_seconds
        self.max_assets = max_assets
        self.max_pending, self.write_timeout = max_pending, write_timeout
        self._listeners: set[_Listener] = set()
        self._known: dict[str, tuple[tuple[Any, ...], Asset]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        # The last poll's outcome: None before the first, else whether it read.
        self._ok: bool | None = None
        self._why = ""

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
            except Exception as exc:  # the store is out: listeners keep their last view
                if self._ok is not False:
                    log.warning("live: reading assets failed", exc_info=True)
                    self._why = f"the asset list cannot be read now ({type(exc).__name__}); " \
                                "retrying"
                    self._send(("unavailable", {"detail": self._why}))
                self._ok = False
            self._first.set()
            await asyncio.sleep(self.poll)
        self._task = None

    def _send(self, *messages: tuple[str, Any]) -> None:
        """Queue ``messages`` for every listener; one whose queue is full is dropped
        (its stream ends; EventSource reconnects and gets a snapshot)."""
        for listener in list(self._listeners):
            for message in messages:
                try:
                    listener.queue.put_nowait(message)
                except asyncio.QueueFull:
                    log.info("live: dropping a listener %d changes behind", self.max_pending)
                    self._listeners.discard(listener)
                    listener.drop()
                    break

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
        if self._ok is False:  # back after an outage: everyone starts afresh
            changes = [("snapshot", {"items": self._snapshot()})]
        self._ok = True
        self._send(*changes)

    def _snapshot(self) -> list[dict[str, Any]]:
        return [asset_json(a) for _, a in sorted(self._known.values(), key=lambda v: v[1].id)]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self.authorise(_with_query_key(request)):
            denied = problem(401, "missing or wrong API key")
            denied.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="cdlc"'
            return denied
        listener = _Listener(self.max_pending, request.transport)
        queue = listener.queue
        if self._task is None:
            self._known = {}
            self._ok = None
            self._first.clear()
            self._listeners.add(listener)
            self._task = asyncio.create_task(self._run())
            await self._first.wait()
            with contextlib.suppress(asyncio.QueueEmpty):  # the first tick's changes
                while True:                                # are the snapshot
                    queue.get_nowait()
        else:
            await self._first.wait()
            self._listeners.add(listener)
        resp = web.StreamResponse(headers={
            hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass events through at once
        })
        try:
            await resp.prepare(request)
            first = ("snapshot", {"items": self._snapshot()}) if self._ok \
                else ("unavailable", {"detail": self._why})
            await self._write(resp, _event(*first))
            while not listener.dropped:
                try:
                    message = await asyncio.wait_for(queue.get(), self.heartbeat)
                except TimeoutError:
                    await self._write(resp, b": keep-alive\n\n")
                    continue
                if message is None or listener.dropped:
                    break
                await self._write(resp, _event(*message))
        except TimeoutError:  # the client stopped reading: let its connection go
            log.info("live: a listener read nothing for %.0f s; closing it", self.write_timeout)
            listener.drop()  # not a clean end: write_eof would wait on the same socket
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._listeners.discard(listener)
        return resp

    async def _write(self, resp: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(self.write_timeout):
            await resp.write(data)

    async def shutdown(self) -> None:
        """End every stream (the app is stopping; clients reconnect elsewhere)."""
        for listener in list(self._listeners):
            try:
                listener.queue.put_nowait(None)
            except asyncio.QueueFull:  # too far behind to be told: cut off
                listener.drop()
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
