"""The origin's aiohttp application: playback routes (origin/playback.py), the
admin API (origin/admin.py), watch events and stats (origin/events.py), /healthz,
/readyz and /metrics.

``create_app(deps)`` wires the backends given in ``OriginDeps``; it imports no
engine code (jobs go through ``deps.application``, origin.application). Backends are warmed up at
startup (cleanup_ctx) and closed with the app only when ``close_backends`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest

from metadata.cache import Cache
from metadata.faults import first_line
from metadata.objects import ObjectStore
from metadata.store import MetadataStore
from origin.admin import Admin, backend_fault, problem
from origin.application import Application
from origin.auth import Authenticator
from origin.events import EventIntake, add_event_routes
from origin.job_metrics import render_job_gauges
from origin.metrics import Metrics
from origin.playback import Playback

log = logging.getLogger(__name__)


@dataclass
class OriginDeps:
    store: MetadataStore
    objects: ObjectStore
    cache: Cache
    signing_key: bytes | None = None
    api_key: str | None = None
    max_upload_bytes: int = 20 * 2**30
    upload_dir: Path | None = None
    # The engine's operations (submit, get, list, retry, delete); the admin API's
    # writes answer 503 without one.
    application: Application | None = None
    # Additive knobs (defaults fit production):
    head_ttl: float = 5.0          # how long a READY asset's head is cached (republish lag)
    # Close store, objects and cache in the app's cleanup. Off by default: whoever
    # opened them closes them, after whatever else uses them (e.g. a job executor).
    close_backends: bool = False
    # Base URLs of the CDN edges (cdn/ nginx) to purge when an asset is deleted.
    edges: Sequence[str] = ()
    # Peers (the edges) whose X-Real-IP names the viewer, for client-bound tokens.
    trusted_proxies: Sequence[str] = ()
    # The local data dir: /readyz says not ready when it has less than this free.
    data_dir: Path | None = None
    min_free_bytes: int = 0
    # API key and JWT checks with scopes (origin.auth); None: the API key alone.
    authenticator: Authenticator | None = None
    # /keys routes over the key store beside the metadata store (off: a caller
    # installs origin.keys.add_key_routes with a store of its own).
    key_routes: bool = True
    # Watch events, stats and delivered bytes (origin/events.py), given the
    # application above to know which assets exist; None: those routes answer 503.
    events: EventIntake | None = None


DEPS = web.AppKey("deps", OriginDeps)
METRICS = web.AppKey("metrics", Metrics)
PLAYBACK = web.AppKey("playback", Playback)
ADMIN = web.AppKey("admin", Admin)

_READY_TIMEOUT = 2.0


def observed(
    route: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` with its requests, bytes and latency recorded under ``route``.

    Not a middleware: an aiohttp middleware wraps every request, and on the
    playback hot path (manifest hits, answered from memory) its extra dispatch
    cost a measured ~30 % of the throughput. The playback handlers record inline
    (origin/playback.py); this wrapper serves the admin API and the probes."""

    async def run(request: web.Request) -> web.StreamResponse:
        metrics = request.app[METRICS]
        t0 = time.perf_counter()
        try:
            response = await handler(request)
        except BaseException as exc:
            metrics.failed(route, exc, t0)
            raise
        return metrics.finish(request, route, t0, response)

    return run


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    names: tuple[str, ...] = ("store", "objects", "cache")
    pings: list[Callable[[], Awaitable[None]]] = [deps.store.ping, deps.objects.ping,
                                                  deps.cache.ping]
    if deps.events is not None:  # the players' beacons and the stats depend on it
        names += ("events",)
        pings.append(deps.events.log.ping)
    results = await asyncio.gather(
        *(asyncio.wait_for(ping(), _READY_TIMEOUT) for ping in pings),
        return_exceptions=True,
    )
    report = {
        name: "ok" if not isinstance(r, BaseException) else f"error: {type(r).__name__}: {r}"
        for name, r in zip(names, results, strict=True)
    }
    if deps.data_dir is not None:
        report["disk"] = disk_report(deps.data_dir, deps.min_free_bytes)
    ok = all(v == "ok" for v in report.values())
    # Circuit breakers of the backends (metadata.breaker): "open" while one is out.
    breakers = request.app[PLAYBACK].backend_states()
    return web.json_response({"ready": ok, **report, "breakers": breakers},
                             status=200 if ok else 503)


def breaker_gauges(states: dict[str, str]) -> bytes:
    """cdlc_backend_breaker{backend, state} = 1 for each backend's current state."""
    registry = CollectorRegistry()
    gauge = Gauge("cdlc_backend_breaker", "Circuit breaker state per backend (1 = current)",
                  ["backend", "state"], registry=registry)
    for backend, state in states.items():
        for each in ("closed", "open", "half_open"):
            gauge.labels(backend, each).set(1 if each == state else 0)
    return generate_latest(registry)


def disk_report(data_dir: Path, min_free: int) -> str:
    """'ok', or why the data dir cannot take another job (a master, its scratch)."""
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return f"error: {data_dir.name or data_dir}: {exc.strerror or exc}"
    if usage.free < min_free:
        return (f"error: data dir nearly full: {usage.free / 2**30:.2f} GiB free, "
                f"below {min_free / 2**30:.2f} GiB")
    return "ok"


async def metrics(request: web.Request) -> web.StreamResponse:
    m = request.app[METRICS]
    body = m.render() + breaker_gauges(request.app[PLAYBACK].backend_states())
    deps = request.app[DEPS]
    if deps.application is not None:
        # The jobs: from the store (every runner's truth), and this process's own
        # runs (engine.runner's counters in the default registry).
        try:
            body += await asyncio.wait_for(render_job_gauges(deps.store), _READY_TIMEOUT)
        except Exception:  # the store is out: /readyz says so; the rest still scrapes
            pass
        body += generate_latest(REGISTRY)
    from origin.events import EVENT_INTAKE  # the watch-event intake, where installed

    if EVENT_INTAKE in request.app:
        body += generate_latest(request.app[EVENT_INTAKE].registry)
    return web.Response(body=body, headers={"Content-Type": m.content_type})


@web.middleware
async def backend_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What escapes a handler: a full disk is 507, a backend that is out 503, anything
    else a logged 500, each as one line of problem JSON (aiohttp's own 500 is a text
    page). Playback answers its store's faults itself (origin.playback)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/v1/"):
            raise
        # The API answers problem JSON, aiohttp's own refusals too (a body past
        # client_max_size, a method a route does not take), headers kept.
        refused = problem(exc.status, exc.text if exc.text and not exc.text.startswith(
            f"{exc.status}:") else exc.reason)
        for name, value in exc.headers.items():
            if name not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH):
                refused.headers[name] = value
        return refused
    except Exception as exc:
        answer = backend_fault(exc)
        if answer is not None:
            log.warning("%s %s: %s", request.method, request.path, first_line(exc))
            return answer
        log.exception("%s %s failed", request.method, request.path)
        return problem(500, "internal error")


def create_app(deps: OriginDeps) -> web.Application:
    # client_max_size bounds bodies read whole (JSON); uploads are streamed.
    app = web.Application(client_max_size=1024**2, middlewares=[backend_faults])
    m = Metrics()
    playback = Playback(
        deps.store, deps.objects, deps.cache, m,
        signing_key=deps.signing_key, head_ttl=deps.head_ttl,
        trusted_proxies=deps.trusted_proxies,
    )
    admin = Admin(
        deps.store, deps.objects, deps.cache, api_key=deps.api_key,
        max_upload_bytes=deps.max_upload_bytes, upload_dir=deps.upload_dir,
        application=deps.application, authenticator=deps.authenticator,
    )
    app[DEPS] = deps
    app[METRICS] = m
    app[PLAYBACK] = playback
    app[ADMIN] = admin

    r = app.router
    for path, handler, name in (
        ("/vod/{asset}/master.m3u8", playback.top_manifest, "master"),
        ("/vod/{asset}/manifest.mpd", playback.top_manifest, "mpd"),
        ("/vod/{asset}/storyboard.vtt", playback.top_manifest, "storyboard"),
        ("/vod/{asset}/poster.jpg", playback.poster, "poster"),
        ("/vod/{asset}/{rendition}/{name}", playback.rendition_file, "rendition"),
    ):
        resource = r.add_resource(path, name=name)
        resource.add_route("GET", handler)
        resource.add_route("HEAD", handler)
        resource.add_route("OPTIONS", playback.preflight)  # CORS preflight
    for method, path, handler, name in (
        ("POST", "/v1/assets", admin.create, "admin_create"),
        ("GET", "/v1/assets", admin.list, "admin_list"),
        ("GET", "/v1/assets/{id}", admin.get, "admin_get"),
        ("DELETE", "/v1/assets/{id}", admin.delete, "admin_delete"),
        ("POST", "/v1/assets/{id}/retry", admin.retry, "admin_retry"),
        ("GET", "/v1/jobs", admin.jobs, "admin_jobs"),
        ("GET", "/v1/openapi.json", admin.openapi, "openapi"),
        ("GET", "/healthz", healthz, "healthz"),
        ("GET", "/readyz", readyz, "readyz"),
        ("GET", "/metrics", metrics, "metrics"),
    ):
        if method == "GET":  # and HEAD
            r.add_get(path, observed(name, handler), name=name)
        else:
            r.add_route(method, path, observed(name, handler), name=name)
    if deps.key_routes:
        _add_keys(app, deps)
    app.cleanup_ctx.append(_backends)
    # After _backends: its cleanup runs later, so the log closes before the stores.
    add_event_routes(app, deps.events, application=deps.application)
    return app


def _add_keys(app: web.Application, deps: OriginDeps) -> None:
    """/keys/{asset}/{kid} (and the ClearKey license) over the key store that sits
    beside the metadata store; a store without one (a test double) has no key routes."""
    from metadata.keys import key_store_beside
    from origin.keys import add_key_routes

    try:
        keys = key_store_beside(deps.store)
    except TypeError:
        return
    add_key_routes(app, keys, deps.signing_key, trusted_proxies=deps.trusted_proxies,
                   close_store=True)


async def _backends(app: web.Application) -> AsyncIterator[None]:
    deps = app[DEPS]
    # Warm up connections before the first request; an outage here is not fatal
    # (the origin starts, /readyz says what is down).
    await asyncio.gather(
        *(asyncio.wait_for(b.ping(), _READY_TIMEOUT)
          for b in (deps.store, deps.objects, deps.cache)),
        return_exceptions=True,
    )
    yield
    if deps.close_backends:
        for backend in (deps.store, deps.objects, deps.cache):
            try:
                await backend.close()
            except Exception:
                pass
