"""Prometheus metrics of the origin: requests by route and status, bytes sent,
latency, cache hits and misses.

Each app owns a registry (several apps in one test process never collide). With
several worker processes (origin/server.py) set ``PROMETHEUS_MULTIPROC_DIR``; the
server does so itself, and /metrics then aggregates every worker's values
(prometheus_client multiprocess mode).
"""

from __future__ import annotations

import os
import time

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

# Typed per-request state: when the request began, and the route label to count it by.
T0 = web.RequestKey("cdlc_t0", float)
ROUTE = web.RequestKey("cdlc_route", str)


class RecordsOnPrepare:
    """Mixin for responses whose status is only final in prepare() (FileResponse:
    200/206/304/416): the observing middleware hands them the request's start
    time and they record themselves once prepared, instead of being recorded
    when the handler returns."""

    _cdlc_observe: tuple[Metrics, str, float] | None = None

    def record_when_prepared(self, metrics: Metrics, route: str, t0: float) -> None:
        self._cdlc_observe = (metrics, route, t0)

    def _recorded(self, request: web.BaseRequest, status: int, length: int | None) -> None:
        pending = self._cdlc_observe
        if pending is None:
            return
        self._cdlc_observe = None
        metrics, route, t0 = pending
        nbytes = length if request.method != "HEAD" else 0
        metrics.observe(route, status, nbytes or 0, time.perf_counter() - t0)

# Latency buckets around the targets: sub-millisecond hits up to slow S3 reads.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cdlc_origin_requests_total", "HTTP requests by route and status",
            ["route", "status"], registry=self.registry,
        )
        self.bytes_sent = Counter(
            "cdlc_origin_response_bytes_total", "Response body bytes (Content-Length) by route",
            ["route"], registry=self.registry,
        )
        self.latency = Histogram(
            "cdlc_origin_request_seconds", "Time to response headers, by route",
            ["route"], buckets=_BUCKETS, registry=self.registry,
        )
        self.cache = Counter(
            "cdlc_origin_cache_total", "Read-path cache lookups by kind and result",
            ["kind", "result"], registry=self.registry,
        )
        # Label children resolved once: .labels() takes a lock and hashes every call.
        self._req: dict[tuple[str, int], Counter] = {}
        self._bytes: dict[str, Counter] = {}
        self._lat: dict[str, Histogram] = {}
        self._cache: dict[tuple[str, bool], Counter] = {}

    def observe(self, route: str, status: int, nbytes: int, seconds: float) -> None:
        key = (route, status)
        counter = self._req.get(key)
        if counter is None:
            counter = self._req[key] = self.requests.labels(route, str(status))
        counter.inc()
        if nbytes > 0:
            b = self._bytes.get(route)
            if b is None:
                b = self._bytes[route] = self.bytes_sent.labels(route)
            b.inc(nbytes)
        h = self._lat.get(route)
        if h is None:
            h = self._lat[route] = self.latency.labels(route)
        h.observe(seconds)

    def finish(self, request: web.BaseRequest, route: str, t0: float,
               response: web.StreamResponse) -> web.StreamResponse:
        """Record a handler's response (started at perf_counter() ``t0``) and return
        it. One that settles its status in prepare() records itself then."""
        if isinstance(response, RecordsOnPrepare) and not response.prepared:
            response.record_when_prepared(self, route, t0)
        else:
            length = response.content_length if request.method != "HEAD" else 0
            self.observe(route, response.status, length or 0, time.perf_counter() - t0)
        return response

    def failed(self, route: str, exc: BaseException, t0: float) -> None:
        """Record a handler that raised: its HTTP status, else 500."""
        status = exc.status if isinstance(exc, web.HTTPException) else 500
        self.observe(route, status, 0, time.perf_counter() - t0)

    def cache_result(self, kind: str, hit: bool) -> None:
        key = (kind, hit)
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = self.cache.labels(kind, "hit" if hit else "miss")
        c.inc()

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
