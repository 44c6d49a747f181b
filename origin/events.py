"""Watch events over HTTP: the players' intake, the stats, the beacon script.

Routes (``add_event_routes(app, intake)`` installs them):

- ``POST /v1/events?token=T[&asset=A]``: a JSON array of watch events
  (docs/analytics.md), as ``application/json`` or ``text/plain`` (what
  ``navigator.sendBeacon`` sends without a CORS preflight). With a signing key
  configured the playback token decides asset and viewer: it must verify for the
  asset (``asset=``, else the first event's ``asset_id``), or the whole request is
  a 403; an event naming another asset, or another viewer than a version-2
  token's, is refused on its own and listed under ``rejected`` (the rest are
  recorded); an event without asset or viewer gets the token's. Answer 200
  ``{"accepted", "duplicates", "rejected": [{"index", "reason"}]}``; a body over
  ``max_body_bytes`` 413, more than ``max_events`` events 413, not a JSON array
  400, more than ``rate`` requests per second (burst ``burst``) for one token 429
  with ``Retry-After``, the event log out 503 with ``Retry-After`` (nothing of
  the batch recorded past what the log took: a resend is deduped). CORS: any
  origin (the token, not a cookie, is the credential).
- ``GET /v1/assets/{id}/stats``: the asset's stats (metadata/stats.py) and their
  hours, with the bytes the origin and the edge delivered beside what players
  reported; needs ``assets:read`` once auth is configured. With the application
  wired (origin/app.py passes the engine's), an asset that does not exist is a
  404 (problem+json); an existing one without events is 200 with zeros.
- ``GET /v1/events/metrics``: Prometheus counters of events by type, repeats and
  refusals by reason, and startup times: aggregates only, no per-viewer labels.
- ``GET /player/cdlc-beacon.js``: origin/static/cdlc-beacon.js.

Delivered bytes: with a ``DeliveryLedger`` (metadata/event_log_delivery.py) the
intake counts the body bytes of every 200/206 answer of the playback routes
(``/vod/...``) per asset, in memory (an ``on_response_prepare`` hook: the
playback handlers are not touched, and no store write per request), adds them
to the ledger every ``flush_seconds`` and when the app stops; the edge's bytes
come from `cdlc cdn ingest-log` (cdn/access_log.py) into the same ledger. A
HEAD, a 304 or a refusal sends no body and counts nothing; the count is the
announced Content-Length (a viewer who hangs up mid-segment still counts it).

``EventIntake`` holds the logic (``record`` is shared with the gRPC
EventService); the handlers stay thin. ``add_event_routes(app, None)`` installs
the same routes answering 503 (an origin without an event log), so the routes
and the OpenAPI document (origin/openapi.py) agree either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from cdn import tokens
from metadata.event_log import (
    EVENT_TYPES,
    AppendResult,
    EventError,
    EventLog,
    WatchEvent,
    event_from_json,
)
from metadata.event_log_delivery import DeliveryCounter, DeliveryLedger
from metadata.faults import first_line
from metadata.stats import AssetStats, StatsModel
from origin.admin import auth_refusal, backend_fault, problem
from origin.application import Application
from origin.auth import (
    ASSETS_READ,
    Authenticator,
)
from origin.bodies import read_bounded
from origin.playback import ASSET_RE

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
BEACON_JS = STATIC / "cdlc-beacon.js"

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Max-Age": "86400",
}
_STARTUP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# The answers that send a body (a HEAD, a 304 or a refusal counts nothing).
_BODY_STATUSES = frozenset({200, 206})
_NO_LOG = "watch events are not served by this origin (no event log configured)"


@dataclass(frozen=True)
class IntakeLimits:
    max_body_bytes: int = 256 * 1024
    max_events: int = 500
    rate: float = 20.0            # requests per second per token
    burst: float = 40.0
    max_tokens_tracked: int = 100_000


class TokenBuckets:
    """Requests per second per key (a token bucket each, least recently used
    forgotten past ``size``)."""

    def __init__(self, rate: float, burst: float, size: int) -> None:
        self.rate, self.burst, self.size = rate, burst, size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 when a request may go now, else the seconds until one may."""
        now = time.monotonic() if now is None else now
        level, at = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - at) * self.rate)
        wait = 0.0
        if level >= 1.0:
            level -= 1.0
        else:
            wait = (1.0 - level) / self.rate
        self._buckets[key] = (level, now)
        if len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        return wait


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class UnknownAsset(LookupError):
    """Stats asked of an asset the application does not have."""


class EventIntake:
    """Records watch events and reads the stats (module docstring)."""

    def __init__(self, log: EventLog, *, signing_key: bytes | None = None,
                 authenticator: Authenticator | None = None,
                 limits: IntakeLimits | None = None,
                 stats: StatsModel | None = None,
                 application: Application | None = None,
                 delivery: DeliveryLedger | None = None,
                 flush_seconds: float = 5.0) -> None:
        self.log = log
        # The assets that exist (stats of another id: UnknownAsset); None: any id.
        self.application = application
        self.delivery = delivery
        self.counter = DeliveryCounter(delivery) if delivery is not None else None
        self.flush_seconds = flush_seconds
        self._flusher: asyncio.Task[None] | None = None
        self.signing_key = signing_key
        self.authenticator = authenticator or Authenticator()
        self.limits = limits or IntakeLimits()
        self.stats_model = stats or StatsModel()
        self.buckets = TokenBuckets(self.limits.rate, self.limits.burst,
                                    self.limits.max_tokens_tracked)
        self.registry = CollectorRegistry(auto_describe=True)
        self.m_events = Counter("cdlc_watch_events_total", "Watch events recorded by type",
                                ["type"], registry=self.registry)
        self.m_duplicates = Counter("cdlc_watch_events_duplicates_total",
                                    "Watch events resent (same event_id), not counted again",
                                    registry=self.registry)
        self.m_rejected = Counter("cdlc_watch_events_rejected_total",
                                  "Watch events or requests refused, by reason",
                                  ["reason"], registry=self.registry)
        self.m_startup = Histogram("cdlc_watch_startup_seconds",
                                   "Startup time (start to first frame) reported by players",
                                   buckets=_STARTUP_BUCKETS, registry=self.registry)
        for kind in EVENT_TYPES:
            self.m_events.labels(kind)

    # -- the operations (shared with origin/grpc_events.py) -----------------------

    async def record(self, events: Sequence[WatchEvent]) -> AppendResult:
        """Append to the log (dedupe by event_id) and count what was new."""
        result = await self.log.append(events)
        kinds: dict[str, int] = {}
        for entry in result.added:
            kinds[entry.event.type] = kinds.get(entry.event.type, 0) + 1
        for kind, n in kinds.items():
            self.m_events.labels(kind).inc(n)
        if result.duplicates:
            self.m_duplicates.inc(result.duplicates)
        return result

    async def stats(self, asset_id: str) -> AssetStats:
        """The asset's stats, after folding whatever the log gained since, with its
        delivered bytes; UnknownAsset when the application has no such asset."""
        delivered = await self._prepare_stats(asset_id)
        return self.stats_model.stats(asset_id, delivered=delivered)

    async def stats_document(self, asset_id: str) -> dict[str, Any]:
        """``stats`` as JSON, with its hours (GET /v1/assets/{id}/stats)."""
        delivered = await self._prepare_stats(asset_id)
        doc = self.stats_model.stats(asset_id, delivered=delivered).to_json()
        doc["hours"] = self.stats_model.hours(asset_id, delivered)
        return doc

    async def _prepare_stats(self, asset_id: str) -> dict[int, dict[str, int]]:
        if self.application is not None:
            try:
                await self.application.get(asset_id)
            except LookupError as exc:
                raise UnknownAsset(f"no asset {asset_id[:64]!r}") from exc
        await self.stats_model.rebuild(self.log)
        return await self.delivered(asset_id)

    async def delivered(self, asset_id: str) -> dict[int, dict[str, int]]:
        """The asset's delivered bytes, hour -> source -> bytes: the ledger's and
        what this process counted since its last flush."""
        if self.delivery is None:
            return {}
        out = await self.delivery.delivered(asset_id)
        if self.counter is not None:
            for hour, n in self.counter.unflushed(asset_id).items():
                by_source = out.setdefault(hour, {})
                by_source["origin"] = by_source.get("origin", 0) + n
        return out

    def count_delivery(self, request: web.Request, response: web.StreamResponse) -> None:
        """Count a playback answer's body bytes (called as headers go out, for
        every response of the app: the cheap tests first; a counted answer costs
        1-3 µs). Every /vod/ route is a playback route (origin/app.py)."""
        if response.status in _BODY_STATUSES and self.counter is not None \
                and request.method == hdrs.METH_GET and request.path.startswith("/vod/"):
            # Set by now (aiohttp prepares the headers before this hook); the
            # content_length property would re-derive it, at several times the cost.
            length = response.headers.get(hdrs.CONTENT_LENGTH)
            asset = request.match_info.get("asset")
            if length and asset:
                self.counter.count(asset, int(length))

    async def flush_delivery(self) -> None:
        """Add the bytes counted so far to the ledger (tests, shutdown)."""
        if self.counter is not None:
            await self.counter.flush()

    async def start(self) -> None:
        """Rebuild the read model from the log (the stats survive a restart) and
        start adding the delivered bytes to the ledger every flush_seconds. A log
        that does not answer does not stop the origin (playback needs none of it):
        its routes answer 503 until it does, and the next stats read rebuilds."""
        try:
            await self.stats_model.rebuild(self.log)
        except Exception as exc:
            if backend_fault(exc) is None:
                raise
            log.warning("watch events: the event log does not answer (%s); its "
                        "routes answer 503 until it does", first_line(exc))
        if self.counter is not None and self._flusher is None:
            self._flusher = asyncio.create_task(self.counter.run(self.flush_seconds))

    async def close(self) -> None:
        """Flush the delivered bytes, close the ledger and the log."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            if self.counter is not None:
                try:
                    await self.counter.flush()
                except Exception as exc:
                    log.warning("delivered bytes lost at shutdown: %s", exc)
            if self.delivery is not None:
                await self.delivery.close()
        finally:
            await self.log.close()

    def check_batch(self, docs: list[Any], token: str | None, asset: str | None,
                    client_ip: str | None) -> tuple[list[WatchEvent], list[dict[str, Any]]]:
        """The events of a batch that may be recorded and the refusals, per event;
        Refused(403) when the token does not verify."""
        claims: tokens.Claims | None = None
        if self.signing_key is not None:
            if not token:
                raise Refused(403, "a playback token (token=) is required")
            if not asset:
                first = docs[0] if docs and isinstance(docs[0], dict) else {}
                named = first.get("asset_id")
                asset = named if isinstance(named, str) else ""
            if not asset or not ASSET_RE.fullmatch(asset):
                raise Refused(403, "name the asset (asset=) the token is for")
            try:
                claims = tokens.verify(self.signing_key, token, asset, client_ip=client_ip)
            except tokens.TokenError as exc:
                raise Refused(403, str(exc)) from exc
        good: list[WatchEvent] = []
        rejected: list[dict[str, Any]] = []
        for i, doc in enumerate(docs):
            try:
                event = event_from_json(doc)
                if claims is not None:
                    if event.asset_id and event.asset_id != claims.asset_id:
                        raise EventError(f"the token is for asset {claims.asset_id!r}, "
                                         f"not {event.asset_id[:64]!r}")
                    if claims.viewer and event.viewer_id and event.viewer_id != claims.viewer:
                        raise EventError("the token names another viewer")
                    event = event.replace(asset_id=claims.asset_id,
                                          viewer_id=claims.viewer or event.viewer_id)
                elif not event.asset_id:
                    raise EventError("asset_id is required")
            except EventError as exc:
                reason = str(exc)
                self.m_rejected.labels("forged" if "token" in reason else "invalid").inc()
                rejected.append({"index": i, "reason": reason})
                continue
            good.append(event)
        return good, rejected

    def observe_startups(self, events: Sequence[WatchEvent]) -> None:
        starts = {e.session_id: e.time for e in events if e.type == "start"}
        for e in events:
            if e.type == "first_frame" and e.session_id in starts:
                self.m_startup.observe(max(0.0, e.time - starts[e.session_id]))

    # -- HTTP handlers -------------------------------------------------------------

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token") or None
        key = token or f"ip:{request.remote}"
        wait = self.buckets.take(key)
        if wait > 0:
            self.m_rejected.labels("rate").inc()
            resp = problem(429, "too many event requests for this token")
            resp.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(wait)))
            return _cors(resp)
        limit = self.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            self.m_rejected.labels("size").inc()
            return _cors(problem(413, f"the body is over {limit} bytes"))
        body = await read_bounded(request.content, limit)
        if len(body) > limit:
            self.m_rejected.labels("size").inc()
            return _cors(problem(413, f"the body is over {limit} bytes"))
        try:
            docs = json.loads(body)
        except (ValueError, RecursionError):  # nested past the parser's depth: a 400 too
            docs = None
        if not isinstance(docs, list):
            self.m_rejected.labels("invalid").inc()
            return _cors(problem(400, "the body must be a JSON array of watch events"))
        if len(docs) > self.limits.max_events:
            self.m_rejected.labels("size").inc()
            return _cors(problem(413, f"more than {self.limits.max_events} events"))
        try:
            good, rejected = self.check_batch(docs, token, request.query.get("asset"),
                                              request.remote)
        except Refused as exc:
            self.m_rejected.labels("forged").inc()
            return _cors(problem(exc.status, exc.detail))
        try:
            result = await self.record(good)
        except Exception as exc:
            # The log is out: a 503 the page can read (CORS, like every answer here)
            # so the beacon keeps the batch for its next flush.
            answer = backend_fault(exc)
            if answer is None:
                raise
            log.warning("POST /v1/events: the event log is out: %s", type(exc).__name__)
            self.m_rejected.labels("unavailable").inc()
            return _cors(answer)
        self.observe_startups([e.event for e in result.added])
        return _cors(web.json_response({"accepted": result.accepted,
                                        "duplicates": result.duplicates,
                                        "rejected": rejected}))

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        return _cors(web.Response(status=204))

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        asset_id = request.match_info["id"]
        if self.authenticator.enabled and (
                refused := await auth_refusal(self.authenticator, request, ASSETS_READ)
        ) is not None:
            return refused
        if self.application is not None and not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        try:
            doc = await self.stats_document(asset_id)
        except UnknownAsset as exc:
            return problem(404, str(exc))
        return web.json_response(doc)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def _cors(resp: web.StreamResponse) -> web.StreamResponse:
    resp.headers.update(_CORS)
    return resp


EVENT_INTAKE = web.AppKey("event_intake", EventIntake)


async def _no_log(request: web.Request) -> web.StreamResponse:
    return _cors(problem(503, _NO_LOG))


async def _no_log_preflight(request: web.Request) -> web.StreamResponse:
    return _cors(web.Response(status=204))


async def _beacon_js(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(BEACON_JS, headers={
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": "public, max-age=300",
        "Access-Control-Allow-Origin": "*"})


def add_event_routes(app: web.Application, intake: EventIntake | None, *,
                     application: Application | None = None) -> None:
    """Install the routes of the module docstring, and rebuild the stats from the
    log when the app starts (the log, the ledger, are closed with the app).
    ``application``: the assets that exist, where the intake was built without.
    ``intake`` None: the same routes, answering 503 (the beacon is still served)."""
    r = app.router
    events = r.add_resource("/v1/events", name="events")
    r.add_get("/player/cdlc-beacon.js", _beacon_js, name="beacon_js")
    if intake is None:
        events.add_route("POST", _no_log)
        events.add_route("OPTIONS", _no_log_preflight)
        r.add_get("/v1/assets/{id}/stats", _no_log, name="asset_stats")
        r.add_get("/v1/events/metrics", _no_log, name="event_metrics")
        return
    app[EVENT_INTAKE] = intake
    if application is not None and intake.application is None:
        intake.application = application
    events.add_route("POST", intake.post_events)
    events.add_route("OPTIONS", intake.preflight)
    r.add_get("/v1/assets/{id}/stats", intake.get_stats, name="asset_stats")
    r.add_get("/v1/events/metrics", intake.metrics, name="event_metrics")
    if intake.counter is not None:
        async def count(request: web.Request, response: web.StreamResponse) -> None:
            intake.count_delivery(request, response)

        app.on_response_prepare.append(count)

    async def ctx(app: web.Application) -> Any:
        await intake.start()
        yield
        await intake.close()

    app.cleanup_ctx.append(ctx)
