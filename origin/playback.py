"""Playback routes: manifests built per request from metadata, media streamed from
the object store.

Read path per request, hot and cold:

1. path parts validated by regex (no traversal: ``..``, ``%2e%2e`` and encoded
   slashes never match), then the playback token when a signing key is set. The
   token is checked and then forgotten: nothing cached is keyed by it (item 3);
2. the asset's *head* (state READY, revision, rendition ids and kinds) from the
   cache (``metadata.cache.asset_key``); on a miss from the store (the asset row
   and its rendition rows, not the segment index), coalesced so one process sends
   one query per key however many requests wait. Anything not READY is a 404:
   publishing is atomic, so is visibility;
3. manifests: the built body from the cache under a key holding the asset
   revision, the kind and the rendition (gzip variant cached beside it); with
   tokens on, the body is built once with a placeholder where the token goes
   (``cdn.tokens.TOKEN_PLACEHOLDER``) and each viewer's token is put in on the way
   out. An edge that asks for the template (header ``cdn.tokens.TEMPLATE_HEADER``)
   gets it as is, caches it for every viewer and substitutes the token itself
   (cdn/nginx.py). On a miss the segment index (cached per revision) goes through
   the packager;
3a. a token with a height limit (cdn/tokens.py version 2, MAXH) plays only the
   renditions it allows (video labels <= MAXH, audio and subtitles always): the
   master playlist and the MPD list only those, built from the filtered
   renditions list and cached under the *class* of the limit (the set of
   renditions it leaves of this publication, named by the lowest label it
   excludes, ``:lt720``), never under the token or the limit's exact value: a
   limit that excludes nothing shares the unlimited manifest. A limit that
   leaves no video rendition is a 403, and so is any file of a rendition above
   it (media and I-frame playlists, init, segments), decided from the
   rendition id alone, before any cache or store, exactly as the edge decides;
4. init and media segments: a segment number is checked against the count of its
   own rendition's segments (one ``get_segments(asset, rendition)`` per revision
   and rendition, remembered in-process); then ``sendfile`` from a local store or
   a ranged, streamed GET from S3, both through one evaluator of conditional and
   range requests (origin/http_conditional.py, RFC 9110 §13, §14).

Under faults (docs/durability.md has what each backend promises):

- every backend call on the read path is bounded in time (S3 and Redis by their
  client timeouts and ``backend_deadline``, the metadata store by
  ``store_timeout``) and goes through a circuit breaker (metadata/breaker.py;
  ``backend_states()`` reports them): once a backend is known to be out,
  requests do not wait for it;
- stale-if-error: while the metadata store is out, heads and manifests are
  answered from the last good copy this process holds (RFC 5861 §4 in spirit,
  in-process); with nothing good left, 503 with Retry-After;
- a media body is never announced before its first bytes are in hand: the first
  chunk is read from the store before the status line goes out, so a dead store
  is a 503 (uncacheable), never a 200 with a short body; a store that fails after
  that aborts the connection (no clean end of the body), so no cache keeps a
  short object as complete.

Segments are immutable (``Cache-Control: public, max-age=31536000, immutable``);
manifests get a short TTL. Every playback response carries CORS headers so browser
players (MSE) can read bodies, ranges and lengths.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import os
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import istr

from cdn.tokens import (
    TEMPLATE_HEADER,
    TOKEN_PLACEHOLDER,
    TokenError,
    allows,
    rendition_label,
    verify,
)
from metadata.breaker import BreakerOpen, CircuitBreaker
from metadata.cache import Cache, LRUCache, asset_key
from metadata.models import ASSET_ID_RE, Asset, JobState, Rendition, Segment, media_key
from metadata.objects import ObjectStat, ObjectStore
from metadata.store import MetadataStore
from origin.http_conditional import CONDITIONAL_FIELDS, Plan, Validators, evaluate
from origin.metrics import ROUTE, Metrics, RecordsOnPrepare
from packager.storyboard import STORYBOARD_ID

log = logging.getLogger(__name__)

# Same rule as engine.pipeline.ASSET_ID: what the engine accepts, we serve.
ASSET_RE = ASSET_ID_RE
RENDITION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SEGMENT_RE = re.compile(r"([1-9][0-9]{0,8})\.m4s")
# A text (WebVTT) rendition's files: one cue file per segment, and the whole track
# (DASH's sidecar text/vtt AdaptationSet points at it).
VTT_RE = re.compile(r"([1-9][0-9]{0,8})\.vtt")
WHOLE_VTT = "subtitles.vtt"
# The storyboard's files: sprite sheets, and the poster beside them (also served
# as /vod/{asset}/poster.jpg).
JPG_RE = re.compile(r"([1-9][0-9]{0,8})\.jpg")
POSTER = "poster.jpg"

SEGMENT_CACHE_CONTROL = "public, max-age=31536000, immutable"
MANIFEST_CACHE_CONTROL = "public, max-age=2"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag, Date",
    "Timing-Allow-Origin": "*",
}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Modified-Since, If-Range, "
    "If-Match, If-Unmodified-Since, Accept, Accept-Encoding, Origin",
    "Access-Control-Max-Age": "86400",
}
_MEDIA_TYPES = {"video": "video/mp4", "audio": "audio/mp4", "text": "text/vtt; charset=utf-8",
                "image": "image/jpeg"}
_SEGMENT_HEADERS = {
    kind: {**CORS, hdrs.CACHE_CONTROL: SEGMENT_CACHE_CONTROL, hdrs.CONTENT_TYPE: ctype}
    for kind, ctype in _MEDIA_TYPES.items()
}
_MANIFEST_TYPES = {
    "master": "application/vnd.apple.mpegurl",
    "media": "application/vnd.apple.mpegurl",
    "iframes": "application/vnd.apple.mpegurl",
    "mpd": "application/dash+xml",
    "storyboard": "text/vtt; charset=utf-8",
}
_ERROR_HEADERS = {**CORS, hdrs.CACHE_CONTROL: "no-store"}
_MISSING = b"-"
_MEMO_MAX = 10_000  # decoded heads / manifest headers kept per process (cleared when full)
_PLACEHOLDER = TOKEN_PLACEHOLDER.encode()
_TEMPLATE_QUERY = f"token={TOKEN_PLACEHOLDER}"
_TEMPLATE_HEADER = istr(TEMPLATE_HEADER)  # istr: the case-folded lookup is precomputed


_OPEN = ("", 0)  # tokens off: no token, no height limit
_ABOVE_LIMIT = "rendition above this token's max_height"


def height_class(renditions: dict[str, str], max_height: int) -> str | None:
    """The cache-key suffix of a height limit's manifests for a publication with
    these renditions (id -> kind): "" when the limit excludes none of them (the
    unlimited manifest serves), ``":lt<label>"`` naming the lowest label it
    excludes (every limit from the label below up to that one leaves the same
    set), None when it leaves no video rendition (403)."""
    lowest: int | None = None
    videos_left = False
    for rid, kind in renditions.items():
        label = rendition_label(rid)
        if label is not None and label > max_height:
            lowest = label if lowest is None else min(lowest, label)
        elif kind == "video":
            videos_left = True
    if lowest is None:
        return ""
    return f":lt{lowest}" if videos_left else None


def revision(asset: Asset) -> str:
    """Names one publication of an asset in cache keys. The version alone does not:
    an asset deleted and ingested again under the same id starts over at version 1,
    and must not be answered from its first life's cached index and manifests. The
    asset row's creation time tells the two lives apart."""
    return f"{asset.version:x}.{round(asset.created_at * 1e6):x}"


class Unavailable(Exception):
    """A backend the request needs is out and nothing good is left: 503."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("backend unavailable")
        self.retry_after = retry_after


class Head:
    """What the read path needs of a READY asset, small enough to decode per request."""

    __slots__ = ("renditions", "revision", "version")

    def __init__(self, version: int, rev: str, renditions: dict[str, str]) -> None:
        self.version = version
        self.revision = rev
        self.renditions = renditions  # id -> kind ("video" | "audio")

    def encode(self) -> bytes:
        return json.dumps([self.version, self.revision, self.renditions],
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        version, rev, rends = json.loads(raw)
        # Heads written before segment counts moved out held [kind, count].
        return cls(version, rev, {k: v[0] if isinstance(v, list) else v
                                  for k, v in rends.items()})


def error(status: int, text: str = "") -> web.Response:
    """A small, uncacheable error response (CORS so players can read the status)."""
    return web.Response(
        status=status, text=text or f"{status}", headers=_ERROR_HEADERS
    )


def unavailable(retry_after: float) -> web.Response:
    """503 with Retry-After (RFC 9110 §10.2.3, §15.6.4), never cached."""
    return web.Response(
        status=503, text="backend unavailable, retry later",
        headers={**_ERROR_HEADERS, hdrs.RETRY_AFTER: str(max(1, math.ceil(retry_after)))},
    )


def _answer_headers(plan: Plan, base: dict[str, str], v: Validators) -> dict[str, str]:
    """Headers of a GET/HEAD answer to ``plan`` (shared by both stores)."""
    headers = {**base, hdrs.ETAG: v.etag, hdrs.LAST_MODIFIED: v.last_modified,
               hdrs.ACCEPT_RANGES: "bytes"}
    if plan.status == 304:  # §15.4.5: the validators and caching fields, no body
        headers.pop(hdrs.CONTENT_TYPE, None)
    elif plan.status >= 400:  # 412, 416: never kept as the segment
        headers[hdrs.CACHE_CONTROL] = "no-store"
    if plan.content_range is not None:
        headers[hdrs.CONTENT_RANGE] = plan.content_range
    return headers


def _open_regular(path: Path) -> tuple[IO[bytes], os.stat_result]:
    f = open(path, "rb")  # closed by the caller
    try:
        st = os.fstat(f.fileno())
    except BaseException:
        f.close()
        raise
    if not (st.st_mode & 0o170000) == 0o100000:  # not a regular file
        f.close()
        raise FileNotFoundError(str(path))
    return f, st


class _LocalSegment(RecordsOnPrepare, web.FileResponse):
    """A file of the local store sent with sendfile(2), answered by the same
    evaluator as S3 (origin/http_conditional.py) rather than aiohttp's own, which
    refuses what RFC 9110 says to ignore (an invalid Range is a 416 there).
    One executor hop per request: open and fstat together. Reports its final
    status to the metrics once prepared."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        loop = asyncio.get_running_loop()
        try:
            fobj, st = await loop.run_in_executor(None, _open_regular, self._path)
        except OSError:  # vanished, or never published under this name
            self.set_status(404)
            self._headers.update(_ERROR_HEADERS)
            self._headers.pop(hdrs.CONTENT_TYPE, None)
            self.content_length = 0
            writer = await web.StreamResponse.prepare(self, request)
            self._recorded(request, 404, 0)
            return writer
        try:
            v = Validators(f'"{st.st_mtime_ns:x}-{st.st_size:x}"', st.st_mtime, st.st_size)
            plan = evaluate(request.method, request.headers, v)
            self.set_status(plan.status)
            headers = _answer_headers(plan, dict(self._headers), v)
            self._headers.clear()
            self._headers.update(headers)
            if plan.status != 304:
                self.content_length = plan.length
            self._recorded(request, plan.status, plan.length)
            if plan.status in (200, 206) and request.method != hdrs.METH_HEAD \
                    and plan.length > 0:
                return await self._sendfile(request, fobj, plan.start, plan.length)
            return await web.StreamResponse.prepare(self, request)
        finally:
            fobj.close()  # a regular file: close(2) does not block


class Playback:
    """Handlers and read-path caching for /vod/... (see the module docstring)."""

    def __init__(
        self,
        store: MetadataStore,
        objects: ObjectStore,
        cache: Cache,
        metrics: Metrics,
        *,
        signing_key: bytes | None = None,
        head_ttl: float = 5.0,
        missing_ttl: float = 1.0,
        manifest_ttl: float = 300.0,
        trusted_proxies: Collection[str] = (),
        store_timeout: float = 2.0,
        backend_deadline: float = 2.5,
    ) -> None:
        self.trusted_proxies = frozenset(trusted_proxies)
        self.store = store
        self.objects = objects
        self.cache = cache
        self.metrics = metrics
        self.signing_key = signing_key
        self.head_ttl = head_ttl
        self.missing_ttl = missing_ttl
        self.manifest_ttl = manifest_ttl
        self.store_timeout = store_timeout
        # Time a media request may spend on the object store before its first
        # byte (stat + first chunk), whatever the store's own timeouts and retries.
        self.backend_deadline = backend_deadline
        self.store_breaker = CircuitBreaker("metadata", failures=3, cooldown=2.0)
        self._lru = cache if isinstance(cache, LRUCache) else None
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        # Decoded heads by asset id: the per-request decode memo, and the last good
        # copy served while the metadata store is out (stale-if-error).
        self._heads: dict[str, tuple[bytes, Head]] = {}
        # Built manifests and their headers: the last good copy too.
        self._responses: dict[str, tuple[bytes, dict[str, str]]] = {}
        # Segment counts by (asset, revision, rendition): facts of one publication.
        self._counts: dict[str, int] = {}

    def backend_states(self) -> dict[str, str]:
        """Circuit state of each backend breaker on the read path ("closed",
        "open", "half_open"), for /readyz and /metrics. A backend without a
        breaker (the in-process LRU, the local directory) is always "closed"."""
        states: dict[str, str] = {"store": self.store_breaker.state}
        for name, backend in (("objects", self.objects), ("cache", self.cache)):
            breaker = getattr(backend, "breaker", None)
            states[name] = breaker.state if isinstance(breaker, CircuitBreaker) else "closed"
        return states

    # -- caching helpers ------------------------------------------------------------
    async def _cache_get(self, key: str, kind: str) -> bytes | None:
        if self._lru is not None:  # in-process: answered without another await
            value = self._lru.get_now(key)
        else:
            try:
                value = await self.cache.get(key)
            except Exception:  # a cache outage degrades to the store; /readyz reports it
                value = None
        self.metrics.cache_result(kind, value is not None)
        return value

    async def _cache_set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self.cache.set(key, value, ttl)
        except Exception:
            pass

    async def _coalesce(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        """Single flight: concurrent misses on one key share one load."""
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await load()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            fut.set_result(value)
            return value
        finally:
            del self._inflight[key]

    async def _read(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """One metadata store read, bounded by ``store_timeout`` and through the
        store's breaker. Unavailable when the store is out."""
        if not self.store_breaker.allow():
            raise Unavailable(self.store_breaker.retry_after())
        try:
            async with asyncio.timeout(self.store_timeout):
                value = await call()
        except (web.HTTPException, asyncio.CancelledError):
            self.store_breaker.release()
            raise
        except Exception as exc:
            self.store_breaker.failure()
            log.warning("metadata store read failed: %r", exc)
            raise Unavailable(self.store_breaker.retry_after() or 1.0) from exc
        self.store_breaker.success()
        return value

    async def head(self, asset_id: str) -> Head | None:
        """The READY asset's head, or None (unknown or not READY). Unavailable
        when the store is out and this process holds no earlier copy."""
        key = asset_key(asset_id)
        raw = await self._cache_get(key, "asset")
        if raw is None:
            raw = await self._coalesce(key, lambda: self._load_head(asset_id, key))
        assert isinstance(raw, bytes)
        if raw == _MISSING:
            return None
        # Decode once per cached value, not per request (the LRU hands back the same
        # object; Redis an equal one).
        memo = self._heads.get(asset_id)
        if memo is not None and (memo[0] is raw or memo[0] == raw):
            return memo[1]
        head = Head.decode(raw)
        if len(self._heads) >= _MEMO_MAX:
            self._heads.clear()
        self._heads[asset_id] = (raw, head)
        return head

    async def _load_head(self, asset_id: str, key: str) -> bytes:
        try:
            asset = await self._read(lambda: self.store.get_asset(asset_id))
            if asset is None or asset.state != JobState.READY:
                await self._cache_set(key, _MISSING, self.missing_ttl)
                return _MISSING
            rends = await self._read(lambda: self.store.get_renditions(asset_id))
        except Unavailable:
            memo = self._heads.get(asset_id)
            if memo is None:
                raise
            # Stale-if-error: the last good head, kept briefly so that the store
            # is asked again about once a second, not on every request.
            await self._cache_set(key, memo[0], self.missing_ttl)
            return memo[0]
        raw = Head(asset.version, revision(asset), {r.id: r.kind for r in rends}).encode()
        await self._cache_set(key, raw, self.head_ttl)
        return raw

    async def segment_count(self, asset_id: str, rev: str, rendition_id: str) -> int:
        """How many segments the publication ``rev`` has in ``rendition_id``: from
        memory, else the cache, else that one rendition's index (the narrowest read
        the store offers). A revision never changes, so neither does its answer."""
        mkey = f"{asset_id}:{rev}:{rendition_id}"
        count = self._counts.get(mkey)
        if count is not None:
            return count
        key = f"cdlc:n:{mkey}"
        raw = await self._cache_get(key, "count")
        if raw is None:
            raw = await self._coalesce(key, lambda: self._load_count(asset_id, rendition_id,
                                                                     key))
        count = int(raw)
        if len(self._counts) >= _MEMO_MAX:
            self._counts.clear()
        self._counts[mkey] = count
        return count

    async def _load_count(self, asset_id: str, rendition_id: str, key: str) -> bytes:
        segs = await self._read(lambda: self.store.get_segments(asset_id, rendition_id))
        raw = str(len(segs)).encode()
        await self._cache_set(key, raw, self.manifest_ttl)
        return raw

    async def index(
        self, asset_id: str, rev: str
    ) -> tuple[Asset, list[Rendition], dict[str, list[Segment]]]:
        """The published segment index (cached per revision)."""
        key = f"cdlc:i:{asset_id}:{rev}"
        raw = await self._cache_get(key, "index")
        if raw is None:
            raw = await self._coalesce(key, lambda: self._load_index(asset_id, rev, key))
        doc = json.loads(raw)
        a = doc["asset"]
        a["state"] = JobState(a["state"])
        rends = [Rendition(**r) for r in doc["renditions"]]
        segs = {
            rid: [Segment(asset_id, rid, *row) for row in rows]
            for rid, rows in doc["segments"].items()
        }
        return Asset(**a), rends, segs

    async def _load_index(self, asset_id: str, rev: str, key: str) -> bytes:
        asset = await self._read(lambda: self.store.get_asset(asset_id))
        if asset is None:
            raise web.HTTPNotFound(headers=_ERROR_HEADERS)
        current = revision(asset) == rev  # else republished meanwhile: serve, don't cache
        rends = await self._read(lambda: self.store.get_renditions(asset_id))
        seglists = await self._read(lambda: asyncio.gather(
            *(self.store.get_segments(asset_id, r.id) for r in rends)
        ))
        doc = {
            "asset": asdict(asset),
            "renditions": [asdict(r) for r in rends],
            "segments": {
                r.id: [[s.number, s.start, s.duration, s.size, s.iframe_size] for s in segs]
                for r, segs in zip(rends, seglists, strict=True)
            },
        }
        raw = json.dumps(doc, separators=(",", ":")).encode()
        if current:
            await self._cache_set(key, raw, self.manifest_ttl)
        return raw

    # -- request helpers ------------------------------------------------------------
    def _client_ip(self, request: web.Request) -> str | None:
        """The viewer's address: the TCP peer, or the X-Real-IP that a trusted edge
        (cdn/ sets it from its own $remote_addr) reports for the viewer behind it."""
        peer = request.remote
        if peer in self.trusted_proxies:
            return request.headers.get("X-Real-IP", peer)
        return peer

    def _grant(self, request: web.Request, asset_id: str) -> tuple[str, int] | None:
        """The viewer's checked token and its height limit (0 = none); ``("", 0)``
        with tokens off; None = refuse."""
        if self.signing_key is None:
            return _OPEN
        token = request.query.get("token")
        if not token:
            return None
        try:
            claims = verify(self.signing_key, token, asset_id,
                            client_ip=self._client_ip(request))
        except TokenError:
            return None
        return token, claims.max_height  # checked: only URL-safe characters

    # -- manifests ------------------------------------------------------------------
    # The public handlers record their own metrics (see origin.app.observed for why
    # there is no middleware); the work is in the underscored methods.
    async def top_manifest(self, request: web.Request) -> web.StreamResponse:
        """master.m3u8, manifest.mpd and storyboard.vtt: the route's name
        ("master", "mpd" or "storyboard", set in origin.app) is the manifest kind
        and the metrics label."""
        kind = request.match_info.route.name or "master"
        return await self._measured(request, kind, self._manifest(
            request, request.match_info["asset"], kind, ""))

    async def rendition_file(self, request: web.Request) -> web.StreamResponse:
        mi = request.match_info
        return await self._measured(request, "rendition", self._file(
            request, mi["asset"], mi["rendition"], mi["name"]))

    async def poster(self, request: web.Request) -> web.StreamResponse:
        """/vod/{asset}/poster.jpg: the storyboard's poster."""
        request[ROUTE] = "poster"
        return await self._measured(request, "poster", self._file(
            request, request.match_info["asset"], STORYBOARD_ID, POSTER))

    async def _measured(self, request: web.Request, route: str,
                        work: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        """One playback answer, counted under the route label the handler set
        (``route`` when it set none); a backend out is a 503 with Retry-After."""
        t0 = time.perf_counter()
        try:
            response = await work
        except Unavailable as exc:
            response = unavailable(exc.retry_after)
        except BaseException as exc:
            self.metrics.failed(request.get(ROUTE, route), exc, t0)
            raise
        return self.metrics.finish(request, request.get(ROUTE, route), t0, response)

    async def _manifest(
        self, request: web.Request, asset_id: str, kind: str, rendition_id: str
    ) -> web.StreamResponse:
        request[ROUTE] = kind
        if not ASSET_RE.fullmatch(asset_id):
            return error(400, "invalid asset id")
        grant = self._grant(request, asset_id)
        if grant is None:
            return error(403, "invalid or missing playback token")
        token, max_height = grant
        if max_height and rendition_id and not allows(max_height, rendition_id):
            return error(403, _ABOVE_LIMIT)
        head = await self.head(asset_id)
        if head is None or (rendition_id and head.renditions.get(rendition_id, "image")
                            == "image"):
            return error(404)  # no such rendition, or the storyboard (it has no playlist)
        cls: str | None = ""
        if max_height and not rendition_id:
            cls = height_class(head.renditions, max_height)
            if cls is None:
                return error(403, "no video rendition within this token's max_height")
        # With tokens on, one template per manifest (the token's place marked),
        # whoever asks: cache entries never multiply with viewers, only with the
        # height classes of this publication (module docstring, 3a).
        query = _TEMPLATE_QUERY if token else ""
        per_viewer = bool(token) and request.headers.get(_TEMPLATE_HEADER) != "1"
        key = (f"cdlc:m:{asset_id}:{head.revision}:{kind}:{rendition_id}:"
               f"{'t' if token else ''}{cls}")
        # A Range is answered from the identity body: a range of the gzip stream is
        # valid HTTP (RFC 9110 §14.1.2) but no client can decode it alone.
        zipped = ("gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "")
                  and hdrs.RANGE not in request.headers)
        # A per-viewer body is compressed after the token goes in.
        mkey = key + ":gz" if zipped and not per_viewer else key
        memo = self._responses.get(mkey)
        if memo is not None:
            # One publication's manifests never change: the memo answers.
            self.metrics.cache_result("manifest", True)
            body, headers = memo
        else:
            cached = await self._cache_get(mkey, "manifest")
            if cached is None:
                cached = await self._coalesce(
                    mkey,
                    lambda: self._build(key, asset_id, head.revision, kind, rendition_id,
                                        query, mkey != key, max_height if cls else 0),
                )
            assert isinstance(cached, bytes)
            body = cached
            gz = mkey != key
            etag = f'"{head.version:x}-{zlib.crc32(body):08x}{"-gz" if gz else ""}"'
            headers = {
                **CORS,
                hdrs.CONTENT_TYPE: _MANIFEST_TYPES[kind],
                hdrs.CACHE_CONTROL: MANIFEST_CACHE_CONTROL,
                hdrs.ETAG: etag,
                hdrs.VARY: "Accept-Encoding",
            }
            if gz:
                headers[hdrs.CONTENT_ENCODING] = "gzip"
            if len(self._responses) >= _MEMO_MAX:
                self._responses.clear()
            self._responses[mkey] = (body, headers)
        rh = request.headers
        conditional = any(f in rh for f in CONDITIONAL_FIELDS)
        if per_viewer:
            body, etag = _for_viewer(body, headers[hdrs.ETAG], token, zipped)
            if conditional:
                headers = {**headers, hdrs.ETAG: etag}
                if zipped:
                    headers[hdrs.CONTENT_ENCODING] = "gzip"
            else:
                # Set on the response's own header map: no copy of the memo's.
                resp = web.Response(body=body, headers=headers)
                resp.headers[hdrs.ETAG] = etag
                if zipped:
                    resp.headers[hdrs.CONTENT_ENCODING] = "gzip"
                return resp
        if conditional:
            return _conditional_manifest(request, body, headers)
        return web.Response(body=body, headers=headers)

    async def _build(
        self, key: str, asset_id: str, rev: str, kind: str, rendition_id: str,
        query: str, zipped: bool, max_height: int,
    ) -> bytes:
        plain = await self._cache_get(key, "manifest") if zipped else None
        if plain is None:
            plain = await self._render(asset_id, rev, kind, rendition_id, query, max_height)
            await self._cache_set(key, plain, self.manifest_ttl)
        if not zipped:
            return plain
        # mtime=0: the same bytes (and ETag) from every worker and every rebuild.
        body = gzip.compress(plain, compresslevel=6, mtime=0)
        await self._cache_set(key + ":gz", body, self.manifest_ttl)
        return body

    async def _render(
        self, asset_id: str, rev: str, kind: str, rendition_id: str, query: str,
        max_height: int = 0,
    ) -> bytes:
        """One manifest's body; with ``max_height``, built from only the
        renditions that limit allows (the packager never hears of the others)."""
        from packager import dash, hls, storyboard

        asset, rends, segs = await self.index(asset_id, rev)
        if max_height:
            rends = [r for r in rends if allows(max_height, r.id)]
            segs = {rid: s for rid, s in segs.items() if allows(max_height, rid)}
        out: str | bytes
        if kind == "master":
            out = hls.build_master(rends, segs, query)
        elif kind == "mpd":
            if any(r.encryption == hls.AES_128 for r in rends):
                # DASH has no signalling for whole-segment AES-128 (only CENC's
                # ContentProtection): an MPD would promise media no player decrypts.
                raise web.HTTPNotFound(
                    text=f"asset {asset_id} is encrypted with HLS AES-128, which DASH "
                         f"cannot signal: play /vod/{asset_id}/master.m3u8",
                    headers=_ERROR_HEADERS)
            clearkey = (key_url(asset_id, "clearkey", query)
                        if any(r.encryption for r in rends) else None)
            out = dash.build_mpd(asset, rends, segs, query, clearkey_url=clearkey)
        elif kind == "storyboard":
            board = next((r for r in rends if r.kind == "image"), None)
            if board is None:
                raise web.HTTPNotFound(headers=_ERROR_HEADERS)
            out = storyboard.build_vtt(board, segs.get(board.id, []), query)
        else:
            rend = next((r for r in rends if r.id == rendition_id), None)
            if rend is None:
                raise web.HTTPNotFound(headers=_ERROR_HEADERS)
            key_uri = key_url(asset_id, rend.key_id, query) if rend.encryption else None
            if kind == "media":
                out = hls.build_media(rend, segs.get(rendition_id, []), query, key_uri=key_uri)
            else:
                try:
                    out = hls.build_iframes(rend, segs.get(rendition_id, []), query,
                                            key_uri=key_uri)
                except ValueError:  # audio, or no I-frame ranges: there is no such playlist
                    raise web.HTTPNotFound(headers=_ERROR_HEADERS) from None
        return out.encode() if isinstance(out, str) else bytes(out)

    # -- media ----------------------------------------------------------------------
    async def _file(self, request: web.Request, asset_id: str, rendition_id: str,
                    name: str) -> web.StreamResponse:
        if not ASSET_RE.fullmatch(asset_id) or not RENDITION_RE.fullmatch(rendition_id):
            request[ROUTE] = "invalid"
            return error(400, "invalid asset or rendition id")
        if name == "media.m3u8":
            return await self._manifest(request, asset_id, "media", rendition_id)
        if name == "iframes.m3u8":
            return await self._manifest(request, asset_id, "iframes", rendition_id)
        # Which kind of rendition may have a file of this name: WebVTT files are
        # text renditions', JPEGs the storyboard's, fMP4 the others'.
        wants = "text" if name.endswith(".vtt") else "image" if name.endswith(".jpg") else ""
        if name in ("init.mp4", WHOLE_VTT, POSTER):
            number = 0
            request.setdefault(ROUTE, {"": "init", "text": "subtitles"}.get(wants, "poster"))
        else:
            pattern = {"text": VTT_RE, "image": JPG_RE}.get(wants, SEGMENT_RE)
            m = pattern.fullmatch(name)
            request[ROUTE] = "segment"
            if m is None:
                return error(404)
            number = int(m.group(1))
        grant = self._grant(request, asset_id)
        if grant is None:
            return error(403, "invalid or missing playback token")
        if grant[1] and not allows(grant[1], rendition_id):
            return error(403, _ABOVE_LIMIT)
        head = await self.head(asset_id)
        kind = head.renditions.get(rendition_id) if head is not None else None
        if head is None or kind is None or (wants or kind) != kind or (
                not wants and kind in ("text", "image")):
            return error(404)  # .vtt only of text renditions, .jpg of the storyboard
        if number and number > await self.segment_count(asset_id, head.revision,
                                                         rendition_id):
            return error(404)  # not published (a dead job's leftover is never served)
        key = media_key(asset_id, rendition_id, name)
        headers = _SEGMENT_HEADERS.get(kind) or _SEGMENT_HEADERS["video"]
        path = self.objects.local_path(key)
        if path is not None:
            return _LocalSegment(path, chunk_size=256 * 1024, headers=headers)
        return await self._stream(request, key, head.revision, headers)

    async def _stat(self, key: str, rev: str) -> ObjectStat | None:
        ckey = f"cdlc:st:{rev}:{key}"
        raw = await self._cache_get(ckey, "stat")
        if raw is not None:
            size, etag, mtime = json.loads(raw)
            return ObjectStat(size=size, etag=etag, mtime=mtime)
        st = await self.objects.stat(key)
        if st is not None:
            await self._cache_set(
                ckey, json.dumps([st.size, st.etag, st.mtime]).encode(), self.manifest_ttl
            )
        return st

    def _objects_failed(self) -> float:
        """Count a deadline overrun against the object store's breaker (the call
        was cancelled, so the store could not count it); the Retry-After."""
        breaker = getattr(self.objects, "breaker", None)
        if isinstance(breaker, CircuitBreaker):
            breaker.failure()
            return breaker.retry_after() or 1.0
        return 1.0

    async def _stream(
        self, request: web.Request, key: str, rev: str, base: dict[str, str]
    ) -> web.StreamResponse:
        """GET and HEAD over a remote store, with the evaluator the local store
        uses. Nothing is sent before the first chunk is in hand."""
        body: AsyncIterator[bytes] | None = None
        first = b""
        try:
            async with asyncio.timeout(self.backend_deadline):
                st = await self._stat(key, rev)
                if st is None:
                    return error(404)
                v = Validators(st.etag, st.mtime, st.size)
                plan = evaluate(request.method, request.headers, v)
                wants_body = (plan.status in (200, 206) and request.method == hdrs.METH_GET
                              and plan.length > 0)
                if wants_body:
                    body = self.objects.iter_range(key, plan.start, plan.end)
                    first = await anext(body, b"")
        except KeyError:  # gone since its stat was cached
            await _close(body)
            return error(404)
        except BreakerOpen as exc:
            await _close(body)
            return unavailable(exc.retry_after)
        except TimeoutError:
            await _close(body)
            return unavailable(self._objects_failed())
        except Exception as exc:
            await _close(body)
            log.warning("object store read of %s failed: %r", key, exc)
            return unavailable(1.0)
        if wants_body and not first:
            # The stat promised bytes the store no longer has: stale, not servable.
            await self._forget_stat(key, rev)
            return unavailable(1.0)
        headers = _answer_headers(plan, base, v)
        if plan.status not in (200, 206):
            return web.Response(status=plan.status, headers=headers)
        resp = web.StreamResponse(status=plan.status, headers=headers)
        resp.content_length = plan.length
        await resp.prepare(request)
        if body is not None:
            sent = len(first)
            try:
                await resp.write(first)
                async for chunk in body:
                    await resp.write(chunk)
                    sent += len(chunk)
            except Exception as exc:
                log.warning("object store stream of %s broke after %d bytes: %r",
                            key, sent, exc)
            finally:
                await _close(body)
            if sent != plan.length:
                _abort(request)  # a short body must not end cleanly
                raise StreamBroken(key, sent, plan.length)
        await resp.write_eof()
        return resp

    async def _forget_stat(self, key: str, rev: str) -> None:
        with contextlib.suppress(Exception):
            await self.cache.delete(f"cdlc:st:{rev}:{key}")

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        return self.metrics.finish(request, "preflight", t0,
                                   web.Response(status=204, headers=PREFLIGHT))


def key_url(asset_id: str, name: str, query: str) -> str:
    """Where a player gets an encrypted asset's key (origin/keys.py): the raw key
    of KID ``name`` (HLS EXT-X-KEY URI) or the ClearKey license (``name``
    "clearkey", the DASH dashif:Laurl), with the manifest's token query. A path
    from the root, so it works on the origin and on an edge alike: RFC 3986 §5.2
    resolves it against the manifest's own URL."""
    return f"/keys/{asset_id}/{name}" + (f"?{query}" if query else "")


class StreamBroken(ConnectionResetError):
    """A body that broke after its headers were sent (the connection is aborted)."""

    def __init__(self, key: str, sent: int, length: int) -> None:
        super().__init__(f"{key}: {sent} of {length} bytes sent, connection aborted")


def _abort(request: web.Request) -> None:
    """Drop the connection without the end of the body: the client (and any
    cache between) sees a truncated response, not a complete short one."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _close(body: AsyncIterator[bytes] | None) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _conditional_manifest(
    request: web.Request, body: bytes, headers: dict[str, str]
) -> web.Response:
    """A manifest under the same evaluator as media (no Last-Modified: date
    preconditions do not apply)."""
    plan = evaluate(request.method, request.headers,
                    Validators(headers[hdrs.ETAG], None, len(body)))
    if plan.status == 200:
        return web.Response(body=body, headers=headers)
    if plan.status == 206:
        assert plan.content_range is not None
        return web.Response(status=206, body=body[plan.start:plan.end],
                            headers={**headers, hdrs.CONTENT_RANGE: plan.content_range})
    if plan.status == 304:
        short = {k: v for k, v in headers.items()
                 if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_ENCODING)}
        return web.Response(status=304, headers=short)
    extra: dict[str, str] = {}
    if plan.content_range is not None:
        extra[hdrs.CONTENT_RANGE] = plan.content_range
    return web.Response(status=plan.status, headers={**_ERROR_HEADERS, **extra})


def _for_viewer(template: bytes, etag: str, token: str, zipped: bool) -> tuple[bytes, str]:
    """A manifest template with the viewer's token in place (compressed after,
    when asked), and its own ETag: one validator per body, the template's
    extended by the token's CRC."""
    raw = token.encode()
    body = template.replace(_PLACEHOLDER, raw)
    if zipped:
        body = gzip.compress(body, compresslevel=6, mtime=0)
    return body, f'{etag[:-1]}-{zlib.crc32(raw):08x}{"-gz" if zipped else ""}"'
