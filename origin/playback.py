"""Playback routes: manifests built per request from metadata, media streamed from
the object store.

Read path per request, hot and cold:

1. path parts validated by regex (no traversal: ``..``, ``%2e%2e`` and encoded
   slashes never match), then the playback token when a signing key is set;
2. the asset's *head* (state READY, revision, rendition ids, kinds and segment
   counts) from the cache (``metadata.cache.asset_key``); on a miss from the store,
   coalesced so one process sends one query per key however many requests wait.
   Anything not READY is a 404: publishing is atomic, so is visibility;
3. manifests: the built body from the cache under a key holding the asset revision,
   the kind, the rendition and the viewer's query (gzip variant cached beside it);
   on a miss the segment index (cached per revision) goes through the packager;
4. init and media segments: ``sendfile`` from a local store (aiohttp FileResponse:
   ETag, Range, conditional requests), or a ranged, streamed GET from S3 with the
   same semantics implemented here (RFC 9110 §13, §14).

Segments are immutable (``Cache-Control: public, max-age=31536000, immutable``);
manifests get a short TTL. Every playback response carries CORS headers so browser
players (MSE) can read bodies, ranges and lengths.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from cdn.tokens import TokenError, check
from metadata.cache import Cache, LRUCache, asset_key
from metadata.models import ASSET_ID_RE, Asset, JobState, Rendition, Segment, media_key
from metadata.objects import ObjectStat, ObjectStore
from metadata.store import MetadataStore
from origin.metrics import ROUTE, Metrics, RecordsOnPrepare

# Same rule as engine.pipeline.ASSET_ID: what the engine accepts, we serve.
ASSET_RE = ASSET_ID_RE
RENDITION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SEGMENT_RE = re.compile(r"([1-9][0-9]{0,8})\.m4s")

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
    "Accept, Accept-Encoding, Origin",
    "Access-Control-Max-Age": "86400",
}
_MEDIA_TYPES = {"video": "video/mp4", "audio": "audio/mp4"}
_SEGMENT_HEADERS = {
    kind: {**CORS, hdrs.CACHE_CONTROL: SEGMENT_CACHE_CONTROL, hdrs.CONTENT_TYPE: ctype}
    for kind, ctype in _MEDIA_TYPES.items()
}
_MANIFEST_TYPES = {
    "master": "application/vnd.apple.mpegurl",
    "media": "application/vnd.apple.mpegurl",
    "iframes": "application/vnd.apple.mpegurl",
    "mpd": "application/dash+xml",
}
_ERROR_HEADERS = {**CORS, hdrs.CACHE_CONTROL: "no-store"}
_MISSING = b"-"
_MEMO_MAX = 10_000  # decoded heads / manifest headers kept per process (cleared when full)


def revision(asset: Asset) -> str:
    """Names one publication of an asset in cache keys. The version alone does not:
    an asset deleted and ingested again under the same id starts over at version 1,
    and must not be answered from its first life's cached index and manifests. The
    asset row's creation time tells the two lives apart."""
    return f"{asset.version:x}.{round(asset.created_at * 1e6):x}"


class Head:
    """What the read path needs of a READY asset, small enough to decode per request."""

    __slots__ = ("renditions", "revision", "version")

    def __init__(self, version: int, rev: str, renditions: dict[str, tuple[str, int]]) -> None:
        self.version = version
        self.revision = rev
        self.renditions = renditions  # id -> (kind, number of segments)

    def encode(self) -> bytes:
        return json.dumps([self.version, self.revision, self.renditions],
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        version, rev, rends = json.loads(raw)
        return cls(version, rev, {k: (v[0], v[1]) for k, v in rends.items()})


def error(status: int, text: str = "") -> web.Response:
    """A small, uncacheable error response (CORS so players can read the status)."""
    return web.Response(
        status=status, text=text or f"{status}", headers=_ERROR_HEADERS
    )


class _SegmentFile(RecordsOnPrepare, web.FileResponse):
    """FileResponse whose error statuses (404 of a vanished file, 416) are not sent
    with the segments' one-year immutable Cache-Control, and which reports its
    final status (200/206/304/416) to the metrics once prepared."""

    def set_status(self, status: int, reason: str | None = None) -> None:
        super().set_status(status, reason)
        if status >= 400:
            self._headers[hdrs.CACHE_CONTROL] = "no-store"

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)
        self._recorded(request, self.status, self.content_length)
        return writer


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
        self._lru = cache if isinstance(cache, LRUCache) else None
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._heads: dict[str, tuple[bytes, Head]] = {}
        self._responses: dict[str, tuple[bytes, dict[str, str]]] = {}

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

    async def head(self, asset_id: str) -> Head | None:
        """The READY asset's head, or None (unknown or not READY)."""
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
        asset = await self.store.get_asset(asset_id)
        if asset is None or asset.state != JobState.READY:
            await self._cache_set(key, _MISSING, self.missing_ttl)
            return _MISSING
        rends = await self.store.get_renditions(asset_id)
        counts = await asyncio.gather(
            *(self.store.get_segments(asset_id, r.id) for r in rends)
        )
        raw = Head(asset.version, revision(asset), {
            r.id: (r.kind, len(segs)) for r, segs in zip(rends, counts, strict=True)
        }).encode()
        await self._cache_set(key, raw, self.head_ttl)
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
        asset = await self.store.get_asset(asset_id)
        if asset is None:
            raise web.HTTPNotFound(headers=_ERROR_HEADERS)
        current = revision(asset) == rev  # else republished meanwhile: serve, don't cache
        rends = await self.store.get_renditions(asset_id)
        seglists = await asyncio.gather(
            *(self.store.get_segments(asset_id, r.id) for r in rends)
        )
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

    def _token_query(self, request: web.Request, asset_id: str) -> str | None:
        """The query to carry into child URLs ('' without tokens); None = refuse."""
        if self.signing_key is None:
            return ""
        token = request.query.get("token")
        if not token:
            return None
        try:
            check(self.signing_key, token, asset_id, client_ip=self._client_ip(request))
        except TokenError:
            return None
        return f"token={token}"  # checked: only URL-safe characters

    # -- manifests ------------------------------------------------------------------
    # The public handlers record their own metrics (see origin.app.observed for why
    # there is no middleware); the work is in the underscored methods.
    async def top_manifest(self, request: web.Request) -> web.StreamResponse:
        """master.m3u8 and manifest.mpd: the route's name ("master" or "mpd", set
        in origin.app) is the manifest kind and the metrics label."""
        t0 = time.perf_counter()
        kind = request.match_info.route.name or "master"
        try:
            response = await self._manifest(request, request.match_info["asset"], kind, "")
        except BaseException as exc:
            self.metrics.failed(kind, exc, t0)
            raise
        return self.metrics.finish(request, kind, t0, response)

    async def rendition_file(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        try:
            response = await self._rendition_file(request)
        except BaseException as exc:
            self.metrics.failed(request.get(ROUTE, "rendition"), exc, t0)
            raise
        return self.metrics.finish(request, request.get(ROUTE, "rendition"), t0, response)

    async def _manifest(
        self, request: web.Request, asset_id: str, kind: str, rendition_id: str
    ) -> web.StreamResponse:
        request[ROUTE] = kind
        if not ASSET_RE.fullmatch(asset_id):
            return error(400, "invalid asset id")
        query = self._token_query(request, asset_id)
        if query is None:
            return error(403, "invalid or missing playback token")
        head = await self.head(asset_id)
        if head is None or (rendition_id and rendition_id not in head.renditions):
            return error(404)
        key = f"cdlc:m:{asset_id}:{head.revision}:{kind}:{rendition_id}:{query}"
        zipped = "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "")
        mkey = key + ":gz" if zipped else key
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
                                        query, zipped),
                )
            assert isinstance(cached, bytes)
            body = cached
            etag = f'"{head.version:x}-{zlib.crc32(body):08x}{"-gz" if zipped else ""}"'
            headers = {
                **CORS,
                hdrs.CONTENT_TYPE: _MANIFEST_TYPES[kind],
                hdrs.CACHE_CONTROL: MANIFEST_CACHE_CONTROL,
                hdrs.ETAG: etag,
                hdrs.VARY: "Accept-Encoding",
            }
            if zipped:
                headers[hdrs.CONTENT_ENCODING] = "gzip"
            if len(self._responses) >= _MEMO_MAX:
                self._responses.clear()
            self._responses[mkey] = (body, headers)
        inm = request.headers.get(hdrs.IF_NONE_MATCH)
        if inm is not None and _etag_in(headers[hdrs.ETAG], inm):
            short = {k: v for k, v in headers.items()
                     if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_ENCODING)}
            return web.Response(status=304, headers=short)
        return web.Response(body=body, headers=headers)

    async def _build(
        self, key: str, asset_id: str, rev: str, kind: str, rendition_id: str,
        query: str, zipped: bool,
    ) -> bytes:
        plain = await self._cache_get(key, "manifest") if zipped else None
        if plain is None:
            plain = await self._render(asset_id, rev, kind, rendition_id, query)
            await self._cache_set(key, plain, self.manifest_ttl)
        if not zipped:
            return plain
        # mtime=0: the same bytes (and ETag) from every worker and every rebuild.
        body = gzip.compress(plain, compresslevel=6, mtime=0)
        await self._cache_set(key + ":gz", body, self.manifest_ttl)
        return body

    async def _render(
        self, asset_id: str, rev: str, kind: str, rendition_id: str, query: str
    ) -> bytes:
        from packager import dash, hls

        asset, rends, segs = await self.index(asset_id, rev)
        out: str | bytes
        if kind == "master":
            out = hls.build_master(rends, segs, query)
        elif kind == "mpd":
            out = dash.build_mpd(asset, rends, segs, query)
        else:
            rend = next((r for r in rends if r.id == rendition_id), None)
            if rend is None:
                raise web.HTTPNotFound(headers=_ERROR_HEADERS)
            if kind == "media":
                out = hls.build_media(rend, segs.get(rendition_id, []), query)
            else:
                try:
                    out = hls.build_iframes(rend, segs.get(rendition_id, []), query)
                except ValueError:  # audio, or no I-frame ranges: there is no such playlist
                    raise web.HTTPNotFound(headers=_ERROR_HEADERS) from None
        return out.encode() if isinstance(out, str) else bytes(out)

    # -- media ----------------------------------------------------------------------
    async def _rendition_file(self, request: web.Request) -> web.StreamResponse:
        mi = request.match_info
        asset_id, rendition_id, name = mi["asset"], mi["rendition"], mi["name"]
        if not ASSET_RE.fullmatch(asset_id) or not RENDITION_RE.fullmatch(rendition_id):
            request[ROUTE] = "invalid"
            return error(400, "invalid asset or rendition id")
        if name == "media.m3u8":
            return await self._manifest(request, asset_id, "media", rendition_id)
        if name == "iframes.m3u8":
            return await self._manifest(request, asset_id, "iframes", rendition_id)
        if name == "init.mp4":
            number = 0
            request[ROUTE] = "init"
        else:
            m = SEGMENT_RE.fullmatch(name)
            request[ROUTE] = "segment"
            if m is None:
                return error(404)
            number = int(m.group(1))
        if self._token_query(request, asset_id) is None:
            return error(403, "invalid or missing playback token")
        head = await self.head(asset_id)
        info = head.renditions.get(rendition_id) if head is not None else None
        if head is None or info is None or number > info[1]:
            return error(404)
        key = media_key(asset_id, rendition_id, name)
        headers = _SEGMENT_HEADERS.get(info[0]) or _SEGMENT_HEADERS["video"]
        path = self.objects.local_path(key)
        if path is not None:
            return _SegmentFile(path, chunk_size=256 * 1024, headers=headers)
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

    async def _stream(
        self, request: web.Request, key: str, rev: str, base: dict[str, str]
    ) -> web.StreamResponse:
        """Range/conditional GET and HEAD over a remote store (RFC 9110 §13.1, §14)."""
        st = await self._stat(key, rev)
        if st is None:
            return error(404)
        headers = {
            **base,
            hdrs.ETAG: st.etag,
            hdrs.LAST_MODIFIED: formatdate(st.mtime, usegmt=True),
            hdrs.ACCEPT_RANGES: "bytes",
        }
        inm = request.headers.get(hdrs.IF_NONE_MATCH)
        if inm is not None and _etag_in(st.etag, inm):
            del headers[hdrs.CONTENT_TYPE]
            return web.Response(status=304, headers=headers)
        size = st.size
        start, count, status = 0, size, 200
        if hdrs.RANGE in request.headers and _if_range_ok(request, st):
            try:
                rng = request.http_range
            except ValueError:
                rng = None
            if rng is None or (rng.start is not None and rng.start >= 0 and rng.start >= size):
                headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
                headers[hdrs.CACHE_CONTROL] = "no-store"
                return web.Response(status=416, headers=headers)
            if rng.start is not None:
                if rng.start < 0 and rng.stop is None:  # suffix range: the last N bytes
                    start = max(0, size + rng.start)
                    count = size - start
                else:
                    start = rng.start
                    count = min(rng.stop if rng.stop is not None else size, size) - start
                status = 206
                headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + count - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = count
        await resp.prepare(request)
        if request.method != hdrs.METH_HEAD and count > 0:
            async for chunk in self.objects.iter_range(key, start, start + count):
                await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        return self.metrics.finish(request, "preflight", t0,
                                   web.Response(status=204, headers=PREFLIGHT))


def _etag_in(etag: str, header: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 §13.1.2)."""
    if header.strip() == "*":
        return True
    bare = etag[2:] if etag.startswith("W/") else etag
    for item in header.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        if item == bare:
            return True
    return False


def _if_range_ok(request: web.Request, st: ObjectStat) -> bool:
    """If-Range (RFC 9110 §13.1.5): honour the Range only when the validator still
    matches (strong comparison for ETags, exact date for Last-Modified)."""
    value = request.headers.get(hdrs.IF_RANGE)
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == st.etag
    try:
        return int(parsedate_to_datetime(value).timestamp()) >= int(st.mtime)
    except (TypeError, ValueError):
        return False
