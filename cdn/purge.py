"""Purge client: makes nginx edges (cdn/nginx.py) drop an asset's cached objects,
for takedown. The origin/engine calls purge_asset() after deleting the asset (the
metadata first, so any new fetch from an edge is already a 404).

The Debian edge has exact-key purges only (ngx_cache_purge 2.3, no wildcards), so
the client names every object: manifests, init segments and each media segment,
from the asset's renditions and segment counts, which the caller reads from the
metadata before deleting it. A fetch that was already in flight when the asset was
deleted can put an object back after the first pass; a second pass `repeat_after`
seconds later drops it again (the usual "double purge" of CDNs).

Each edge takes ``POST /_edge/purge`` with one path a line and answers
``{"purged": N, "not_cached": M}`` (cdn/templates/edge.js); single objects also go
with ``PURGE /_edge/purge/<path>`` (200 dropped, 404 not cached).

This module imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

PURGE_PREFIX = "/_edge/purge"  # keep in step with cdn/nginx.py
STORYBOARD = "storyboard"  # the storyboard's rendition id (packager/storyboard.py)

log = logging.getLogger(__name__)


def asset_paths(asset_id: str, renditions: Mapping[str, int],
                text: Iterable[str] = ()) -> list[str]:
    """Every playback path of an asset: the master
    playlist and MPD, and per rendition its media playlist, init segment and
    segments 1..count; for the rendition ids in ``text`` (WebVTT subtitles) the
    cue files 1..count and the whole track instead; for the storyboard (the
    rendition id ``storyboard``, engine/storyboard.py) its sprite sheets 1..count,
    the poster and the thumbnails track. `renditions` maps rendition id -> segment
    count.

    The paths are the edge's cache keys (``$uri``: decoded), so they are not
    percent-encoded; ids holding "/", "?", "%" or control characters are refused."""
    for part in (asset_id, *renditions):
        if not part or any(c in part for c in "/?%#") or not part.isprintable():
            raise ValueError(f"not a playback path segment: {part!r}")
    paths = [f"/vod/{asset_id}/master.m3u8", f"/vod/{asset_id}/manifest.mpd"]
    texts = set(text)
    for rendition, count in renditions.items():
        base = f"/vod/{asset_id}/{rendition}"
        if rendition in texts:
            paths += [f"{base}/media.m3u8", f"{base}/subtitles.vtt"]
            paths += [f"{base}/{n}.vtt" for n in range(1, count + 1)]
            continue
        if rendition == STORYBOARD:
            paths += [f"/vod/{asset_id}/poster.jpg", f"/vod/{asset_id}/storyboard.vtt",
                      f"{base}/poster.jpg"]
            paths += [f"{base}/{n}.jpg" for n in range(1, count + 1)]
            continue
        paths += [f"{base}/media.m3u8", f"{base}/init.mp4"]
        paths += [f"{base}/{n}.m4s" for n in range(1, count + 1)]
    return paths


@dataclass
class PurgeResult:
    purged: int = 0        # objects an edge dropped (200)
    not_cached: int = 0    # objects an edge did not hold (404)
    failed: list[str] = field(default_factory=list)  # "edge first-path (+more): reason"

    @property
    def ok(self) -> bool:
        """True when every edge answered for every path."""
        return not self.failed

    def add(self, other: PurgeResult) -> None:
        self.purged += other.purged
        self.not_cached += other.not_cached
        self.failed += other.failed


class PurgeClient:
    """Purges paths on a set of edges over kept-alive connections.

    edges: base URLs, ``http://127.0.0.1:8081``. concurrency: purge requests in
    flight in all. batch: paths per request. timeout: seconds for one request.
    """

    def __init__(
        self,
        edges: Sequence[str],
        *,
        concurrency: int = 8,
        batch: int = 2000,
        timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if concurrency < 1 or batch < 1:
            raise ValueError("concurrency and batch must be >= 1")
        self.batch = batch
        self.edges = [e.rstrip("/") for e in edges]
        self.concurrency = concurrency
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> PurgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def purge_paths(self, paths: Iterable[str]) -> PurgeResult:
        """One pass: drop every path on every edge, in POSTed batches of
        `batch` paths. Never raises for an edge that fails; what it could not
        confirm is listed in the result's `failed`."""
        todo = list(paths)
        for p in todo:
            if not p.startswith("/") or "\n" in p:
                raise ValueError(f"purge path must start with '/' and be one line: {p!r}")
        session = await self._get_session()
        gate = asyncio.Semaphore(self.concurrency)
        batches = [todo[i:i + self.batch] for i in range(0, len(todo), self.batch)]
        results = await asyncio.gather(*(
            self._purge_batch(session, gate, edge, b) for edge in self.edges for b in batches))
        total = PurgeResult()
        for r in results:
            total.add(r)
        return total

    async def _purge_batch(
        self,
        session: aiohttp.ClientSession,
        gate: asyncio.Semaphore,
        edge: str,
        paths: list[str],
    ) -> PurgeResult:
        result = PurgeResult()
        where = f"{edge} {paths[0]} (+{len(paths) - 1})"
        async with gate:
            try:
                async with session.post(
                    edge + PURGE_PREFIX, data="\n".join(paths).encode(), timeout=self.timeout,
                    headers={"Content-Type": "text/plain"},
                ) as resp:
                    if resp.status != 200:
                        text = (await resp.text()).strip()[:200]
                        result.failed.append(f"{where}: HTTP {resp.status} {text}")
                        return result
                    body = await resp.json(content_type=None)
                    result.purged += int(body["purged"])
                    result.not_cached += int(body["not_cached"])
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                result.failed.append(f"{where}: {exc.__class__.__name__} {exc}")
        return result

    async def purge_asset(
        self,
        asset_id: str,
        renditions: Mapping[str, int],
        *,
        repeat_after: float = 1.0,
        text: Iterable[str] = (),
    ) -> PurgeResult:
        """Drop every object of the asset from every edge; a second pass after
        `repeat_after` seconds (0 = none) catches fetches that were in flight."""
        paths = asset_paths(asset_id, renditions, text)
        result = await self.purge_paths(paths)
        if repeat_after > 0:
            await asyncio.sleep(repeat_after)
            result.add(await self.purge_paths(paths))
        if not result.ok:
            log.warning("purge of asset %s incomplete: %d failures, first: %s",
                        asset_id, len(result.failed), result.failed[0])
        return result


async def purge_asset(
    edges: Sequence[str],
    asset_id: str,
    renditions: Mapping[str, int],
    *,
    repeat_after: float = 1.0,
    text: Iterable[str] = (),
) -> PurgeResult:
    """One-shot form of PurgeClient.purge_asset (its own connections)."""
    async with PurgeClient(edges) as client:
        return await client.purge_asset(asset_id, renditions, repeat_after=repeat_after,
                                        text=text)
