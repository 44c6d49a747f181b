"""Webhooks: subscriptions over REST, events from the job records, deliveries
signed per the Standard Webhooks spec (https://www.standardwebhooks.com/,
spec/standard-webhooks.md), at least once, retried with backoff, kept across
restarts in the webhook store (metadata/webhooks.py).

Routes (API key needed when one is configured):
``POST /v1/webhooks`` ``{url, events}`` -> 201 ``{id, url, events, secret, created_at}``;
``GET /v1/webhooks``; ``GET|DELETE /v1/webhooks/{id}``;
``GET /v1/webhooks/{id}/deliveries`` (the delivery log, each attempt with its status).

Events, body ``{type, timestamp, data: {asset, job}}``:
``asset.created`` (a new job for an asset: an upload, a retry), ``asset.ready``,
``asset.failed`` (the job's terminal states) and ``asset.deleted``.

How they are produced: a loop in the origin process polls the asset rows (each
mirrors its current job's state; ``application.list_assets``, paged), compares them
with a cursor kept in the store (the latest ``updated_at`` seen, read back with an
overlap so a write committed late is not missed), reads a changed asset's current
job (``application.get``) and writes one outbox row per event and subscription. The outbox
dedupes on (subscription, event type, job id), so an event seen again after a
restart, or by a second origin process, is delivered once per job. A delete is
reported by ``record_deleted`` (called from the delete path) and, for deletes made
elsewhere while this process runs, by an asset this loop saw vanishing.

How they are sent: a second loop claims due rows (CAS, so several processes share
the outbox), POSTs them with ``webhook-id`` (the row id, the same on every try),
``webhook-timestamp`` and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of
``id.timestamp.body`` under the subscription's secret), and on anything but a 2xx
tries again after ``retry_base * 2**(n-1)`` seconds (capped at ``retry_max``) until
``give_up`` seconds after the event, then marks the row failed.

URLs that resolve to private, loopback or link-local addresses are refused (at
subscription and again before each send, against DNS rebinding) unless
``allow_private`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs, web

from metadata.jobs import NotFound
from metadata.models import Asset, JobState
from metadata.store import asset_pages
from metadata.webhooks import (
    DELIVERED,
    EVENT_TYPES,
    FAILED,
    PENDING,
    Attempt,
    Delivery,
    Subscription,
    WebhookStore,
)
from origin.admin import asset_json, job_json, problem
from origin.application import Application

log = logging.getLogger(__name__)

CURSOR = "jobs"
# How far behind the cursor each poll reads again: a job written by another process
# with an earlier updated_at may commit after a poll that already moved past it.
OVERLAP_SECONDS = 30.0
# How long a delete's key is remembered: far past the poll that notices it and the
# other front doors' hooks reporting it again, so both still make one event; after
# it the entry goes (a long-running origin would otherwise keep every delete).
REMEMBER_DELETES_SECONDS = 600.0
USER_AGENT = "cdlc-stream-webhooks/1"

Authorise = Callable[[web.Request], bool]


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: whsec_ + base64 of 32 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (Standard Webhooks §Signature scheme):
    ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class AddressRefused(ValueError):
    pass


async def check_url(url: str, *, allow_private: bool) -> None:
    """AddressRefused (a ValueError) unless ``url`` is http(s) to a host that
    resolves, and (unless allowed) only to public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused("url must be an absolute http:// or https:// URL")
    if len(url) > 2048:
        raise AddressRefused("url longer than 2048 characters")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise AddressRefused(f"cannot resolve {parts.hostname}: {exc}") from None
    if allow_private:
        return
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not addr.is_global or addr.is_multicast:
            raise AddressRefused(
                f"{parts.hostname} resolves to {addr}, a private or loopback address; "
                "webhooks go to public addresses only (CDLC_WEBHOOKS_ALLOW_PRIVATE)")


def subscription_json(sub: Subscription, *, secret: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": sub.id, "url": sub.url, "events": list(sub.events),
                           "created_at": sub.created_at}
    if secret:
        doc["secret"] = sub.secret
    return doc


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "event_type": d.event_type, "key": d.dedupe_key, "state": d.state,
        "attempts": d.attempts, "created_at": d.created_at, "updated_at": d.updated_at,
        "next_attempt": d.next_attempt if d.state == PENDING else None,
        "last_status": d.last_status, "last_error": d.last_error,
        "payload": json.loads(d.payload),
        "log": [{"number": a.number, "at": a.at, "status": a.status, "error": a.error,
                 "duration_ms": round(a.duration_ms, 1)} for a in d.attempt_log],
    }


class WebhookDispatcher:
    """Subscriptions' REST handlers, the event producer and the sender."""

    def __init__(self, application: Application, store: WebhookStore, *,
                 authorise: Authorise, allow_private: bool = False,
                 poll_seconds: float = 1.0, retry_base_seconds: float = 5.0,
                 retry_max_seconds: float = 2 * 3600.0, give_up_seconds: float = 24 * 3600.0,
                 timeout_seconds: float = 10.0, claim_seconds: float = 60.0,
                 concurrency: int = 8,
                 remember_deletes_seconds: float = REMEMBER_DELETES_SECONDS) -> None:
        self.application, self.store = application, store
        self.authorise = authorise
        self.allow_private = allow_private
        self.poll = poll_seconds
        self.retry_base, self.retry_max = retry_base_seconds, retry_max_seconds
        self.give_up = give_up_seconds
        self.timeout = timeout_seconds
        self.claim_seconds = claim_seconds
        self._gate = asyncio.Semaphore(concurrency)
        # In this process: (job id, state) pairs already turned into events, with
        # when (saves re-reading assets in the overlap window; the store's dedupe is
        # what guarantees once); each asset's current job at the last poll (the key
        # of its asset.deleted), and each recent delete's key, with when (a poll's or a
        # hook's report: the next one of the same delete reuses it).
        self._checked: dict[tuple[str, str], float] = {}
        self._current: dict[str, str] = {}
        self._deleted: dict[str, tuple[str, str, float]] = {}  # asset: job, key, when
        self.remember_deletes = remember_deletes_seconds
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={hdrs.USER_AGENT: USER_AGENT})
        self._tasks = [asyncio.create_task(self._loop(self.produce_once, "producing")),
                       asyncio.create_task(self._loop(self.deliver_once, "delivering"))]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._sending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        await self.store.close()

    async def _loop(self, step: Callable[[], Any], what: str) -> None:
        while True:
            try:
                await step()
            except Exception:  # the store is out: try again at the next beat
                log.warning("webhooks: %s failed; retrying", what, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()

    # -- producing events ---------------------------------------------------------------
    async def produce_once(self) -> int:
        """One poll of the asset rows (each mirrors its current job's state and
        moves its updated_at with it); the number of new outbox rows.

        The asset rows, not the job list: they are paged by id, so every asset is
        seen however many jobs the store holds, and a changed row is read again
        with its current job (application.get)."""
        now = time.time()
        raw = await self.store.get_cursor(CURSOR)
        if raw is None:
            # First start over this store: events from now on, not the history.
            await self.store.set_cursor(CURSOR, repr(now))
            raw = repr(now)
        cursor = float(raw)
        since = cursor - OVERLAP_SECONDS
        subs = await self.store.list_subscriptions()
        rows: list[Delivery] = []
        high = cursor
        current: dict[str, str] = {}
        for asset in await self._all_assets():
            current[asset.id] = asset.current_job
            high = max(high, asset.updated_at)
            if asset.updated_at < since or (asset.current_job, str(asset.state)) in self._checked:
                continue
            try:
                view = await self.application.get(asset.id)
            except NotFound:
                continue
            job = view.job
            if job is None:
                continue
            events: list[tuple[str, float]] = []
            if job.created_at >= since:
                events.append(("asset.created", job.created_at))
            if job.state == JobState.READY:
                events.append(("asset.ready", job.updated_at))
            elif job.state == JobState.FAILED:
                events.append(("asset.failed", job.updated_at))
            data = {"asset": asset_json(view.asset, view.renditions, view.segments),
                    "job": job_json(job)}
            for kind, at in events:
                wanted = [s for s in subs if kind in s.events and s.created_at <= at]
                rows += self._rows(wanted, kind, job.id, at, data)
            self._checked[(job.id, str(job.state))] = now
            self._checked[(job.id, str(view.asset.state))] = now
        # Assets gone since the last poll: deleted (here without the hook, or by
        # another process: the CLI, a second origin).
        for asset_id, job_id in self._current.items():
            if asset_id not in current:
                rows += self._deleted_rows(subs, asset_id, job_id)
        self._current = current
        # Forget what the overlap window no longer reaches, and old deletes.
        self._checked = {k: t for k, t in self._checked.items()
                         if t >= now - 2 * OVERLAP_SECONDS}
        self._deleted = {k: v for k, v in self._deleted.items()
                         if v[2] >= now - self.remember_deletes}
        new = await self.store.enqueue(rows)
        if high > cursor:
            await self.store.set_cursor(CURSOR, repr(high))
        if new:
            self._wake.set()
        return new

    async def _all_assets(self) -> list[Asset]:
        return [a async for page in asset_pages(self.application) for a in page]

    def _rows(self, subs: list[Subscription], kind: str, key: str, at: float,
              data: dict[str, Any]) -> list[Delivery]:
        body = json.dumps({"type": kind, "timestamp": rfc3339(at), "data": data},
                          separators=(",", ":"))
        now = time.time()
        return [Delivery(id="msg_" + uuid.uuid4().hex, subscription_id=s.id, event_type=kind,
                         dedupe_key=key, payload=body, created_at=now, next_attempt=now,
                         updated_at=now) for s in subs]

    def _deleted_rows(self, subs: list[Subscription], asset_id: str,
                      job_id: str) -> list[Delivery]:
        """asset.deleted of ``asset_id`` for ``subs``, keyed by the asset's last job
        (or, with none known, by the asset and the second of its first report). A
        second report of the same delete within ``remember_deletes`` seconds (the
        poll, another front door's hook), which knows no job, reuses the first one's
        key, so the store dedupes it; a later job's delete has its own."""
        kind = "asset.deleted"
        at = time.time()
        earlier = self._deleted.get(asset_id)
        if not job_id and earlier is not None:
            job_id, key = earlier[0], earlier[1]
        else:
            key = job_id or f"{asset_id}@{int(at)}"
        self._deleted[asset_id] = (job_id, key, at)
        wanted = [s for s in subs if kind in s.events and s.created_at <= at]
        data = {"asset": {"id": asset_id}, "job": {"id": job_id} if job_id else None}
        return self._rows(wanted, kind, key, at, data)

    async def record_deleted(self, asset_id: str) -> None:
        """The delete path's hook: an asset.deleted event for ``asset_id`` (call it
        after the application's delete succeeded). Keyed by the asset's last job,
        like the one a poll would notice, so the two make one event."""
        rows = self._deleted_rows(await self.store.list_subscriptions(), asset_id,
                                  self._current.pop(asset_id, ""))
        if await self.store.enqueue(rows):
            self._wake.set()

    # -- sending ------------------------------------------------------------------------
    async def deliver_once(self) -> int:
        """Claim and send what is due (sends run concurrently, bounded); how many
        were claimed."""
        now = time.time()
        claimed = 0
        for d in await self.store.due(now):
            if not await self.store.claim(d, now + self.claim_seconds):
                continue  # another process took it
            claimed += 1
            await self._gate.acquire()
            task = asyncio.create_task(self._send(d))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return claimed

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._gate.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The store failed around the send (reading the subscription, recording
            # the attempt): the row stays claimed until claim_seconds, then is sent
            # again (at least once). Said here, not as asyncio's "never retrieved".
            log.warning("webhooks: a delivery's record failed (%s: %s); it is tried "
                        "again after its claim", type(exc).__name__, exc)

    async def _send(self, d: Delivery) -> None:
        sub = await self.store.get_subscription(d.subscription_id)
        if sub is None:
            return
        number = d.attempts + 1
        started = time.time()
        status, error = 0, ""
        try:
            await check_url(sub.url, allow_private=self.allow_private)
            body = d.payload.encode()
            ts = int(started)
            assert self._session is not None
            async with self._session.post(sub.url, data=body, allow_redirects=False, headers={
                "webhook-id": d.id, "webhook-timestamp": str(ts),
                "webhook-signature": sign(sub.secret, d.id, ts, body),
                hdrs.CONTENT_TYPE: "application/json",
            }) as resp:
                status = resp.status
                await resp.content.read(64 * 1024)  # the receiver's answer is not kept
        except AddressRefused as exc:
            error = str(exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        ended = time.time()
        ok = 200 <= status < 300
        if ok:
            state, next_at = DELIVERED, 0.0
        else:
            delay = min(self.retry_base * 2 ** (number - 1), self.retry_max)
            next_at = ended + delay
            state = PENDING if next_at <= d.created_at + self.give_up else FAILED
            if not error:
                error = f"HTTP {status}"
        log.info("webhook %s %s -> %s: %s", d.id, d.event_type, sub.url,
                 status or error)
        done = replace(d, state=state, attempts=number, next_attempt=next_at,
                       updated_at=ended, last_status=status, last_error=error)
        await self.store.finish_attempt(done, Attempt(d.id, number, started, status, error,
                                                      (ended - started) * 1000))

    # -- REST ---------------------------------------------------------------------------
    def _deny(self, request: web.Request) -> web.Response | None:
        if self.authorise(request):
            return None
        resp = problem(401, "missing or wrong API key")
        resp.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="cdlc"'
        return resp

    async def create(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._deny(request)) is not None:
            return denied
        try:
            doc = await request.json()
        except (ValueError, UnicodeDecodeError):
            return problem(400, "send a JSON object {url, events}")
        if not isinstance(doc, dict):
            return problem(400, "send a JSON object {url, events}")
        url, events = doc.get("url"), doc.get("events", list(EVENT_TYPES))
        if not isinstance(url, str):
            return problem(400, "url must be a string")
        if (not isinstance(events, list) or not events
                or not all(isinstance(e, str) for e in events)):
            return problem(400, "events must be a non-empty list of event types")
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if unknown:
            return problem(400, f"unknown event type {unknown[0]!r}; "
                                f"known: {', '.join(EVENT_TYPES)}")
        extra = sorted(set(doc) - {"url", "events"})
        if extra:
            return problem(400, f"unknown field {extra[0]!r}")
        try:
            await check_url(url, allow_private=self.allow_private)
        except AddressRefused as exc:
            return problem(400, str(exc))
        sub = Subscription(id="wh_" + uuid.uuid4().hex[:20], url=url,
                           events=tuple(e for e in EVENT_TYPES if e in events),
                           secret=new_secret(), created_at=time.time())
        await self.store.add_subscription(sub)
        resp = web.json_response(subscription_json(sub, secret=True), status=201)
        resp.headers[hdrs.LOCATION] = f"/v1/webhooks/{sub.id}"
        return resp

    async def list(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._deny(request)) is not None:
            return denied
        subs = await self.store.list_subscriptions()
        return web.json_response({"items": [subscription_json(s) for s in subs]})

    async def get(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._deny(request)) is not None:
            return denied
        sub = await self.store.get_subscription(request.match_info["id"])
        if sub is None:
            return problem(404, "no such webhook")
        return web.json_response(subscription_json(sub))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._deny(request)) is not None:
            return denied
        if not await self.store.delete_subscription(request.match_info["id"]):
            return problem(404, "no such webhook")
        return web.Response(status=204)

    async def deliveries(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._deny(request)) is not None:
            return denied
        sub_id = request.match_info["id"]
        if await self.store.get_subscription(sub_id) is None:
            return problem(404, "no such webhook")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return problem(400, "limit must be an integer")
        if not 1 <= limit <= 1000:
            return problem(400, "limit must be within 1..1000")
        items = await self.store.deliveries(sub_id, limit=limit)
        return web.json_response({"items": [delivery_json(d) for d in items]})


WEBHOOKS = web.AppKey("webhooks", WebhookDispatcher)


def add_webhook_routes(app: web.Application, application: Application, store: WebhookStore,
                       *, authorise: Authorise, allow_private: bool = False,
                       **knobs: Any) -> WebhookDispatcher:
    """Serve /v1/webhooks on ``app`` and run the dispatcher (producer and sender)
    while the app runs; it closes ``store`` at cleanup. ``knobs``: the
    WebhookDispatcher's timing parameters (poll_seconds, retry_base_seconds...)."""
    hooks = WebhookDispatcher(application, store, authorise=authorise,
                              allow_private=allow_private, **knobs)
    app[WEBHOOKS] = hooks
    r = app.router
    r.add_post("/v1/webhooks", hooks.create, name="webhooks_create")
    r.add_get("/v1/webhooks", hooks.list, name="webhooks_list")
    r.add_get("/v1/webhooks/{id}", hooks.get, name="webhooks_get")
    r.add_delete("/v1/webhooks/{id}", hooks.delete, name="webhooks_delete")
    r.add_get("/v1/webhooks/{id}/deliveries", hooks.deliveries, name="webhooks_deliveries")

    async def run(_: web.Application) -> AsyncIterator[None]:
        await hooks.start()
        yield
        await hooks.close()

    app.cleanup_ctx.append(run)
    return hooks
