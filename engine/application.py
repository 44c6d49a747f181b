"""The engine's implementation of the application interface (origin.application):
the typed operations that the REST API, gRPC, the console and the CLI all call.

Rules live here once: a request is checked before anything is stored; one id has
one job at a time (the store decides races); a failed asset may be submitted again
or retried; a delete stops the running job (its next lease write fails), removes
metadata, media and master, and purges the edges.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from cdn.purge import purge_asset
from engine.config import Settings
from engine.job_spec import check_asset_id
from engine.leases import Lease, holder_id
from engine.pipeline import Services
from engine.runner import new_job
from metadata.cache import invalidate_asset
from metadata.faults import first_line, is_no_space
from metadata.jobs import AlreadyExists, FailedPrecondition, Job, JobRequest, NotFound
from metadata.keys import key_store_beside
from metadata.local_objects import LocalObjects
from metadata.models import Asset, JobState, master_key, media_prefix
from metadata.store import asset_pages
from origin.application import AssetView, NotQueued, StorageFull

log = logging.getLogger(__name__)


class Scheduler(Protocol):
    """Where jobs run: in this process (engine.executor) or on Celery workers."""

    async def route(self, request: JobRequest) -> str:
        """The queue (worker class) for a request; RequestError when none can run it."""

    async def enqueue(self, job: Job) -> None:
        """Start (or queue) a job already recorded QUEUED."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def request_defaults(settings: Settings) -> JobRequest:
    """What a request takes from the deployment where the caller says nothing (the
    ladder where it applies: JobRequest.parse)."""
    return JobRequest(preset=settings.preset, segment_seconds=settings.segment_seconds,
                      gop_seconds=settings.gop_seconds, encoder=settings.encoder,
                      ladder=settings.ladder)


class Engine:
    """origin.application.Application over the configured backends."""

    def __init__(self, settings: Settings, services: Services, scheduler: Scheduler,
                 edges: Sequence[str] = (), *, ready_ttl: float = 1.0) -> None:
        self.settings, self.services, self.scheduler = settings, services, scheduler
        self.edges = tuple(edges)
        self.defaults = request_defaults(settings)
        self._background: set[asyncio.Task[None]] = set()
        self._views: dict[tuple[str, int, str], AssetView] = {}
        # READY views answered without a store read until their deadline (get()).
        self.ready_ttl = ready_ttl
        self._ready: dict[str, tuple[float, AssetView]] = {}
        self._epoch = 0  # bumped by every invalidation: a read begun before it is not kept

    # -- submit -----------------------------------------------------------------------
    async def submit(self, asset_id: str | None, master: Path, options: Mapping[str, object],
                     *, source_name: str) -> AssetView:
        store = self.services.store
        try:
            asset_id = check_asset_id(asset_id or uuid.uuid4().hex[:16])
            request, queue = await self._planned(options, source_name)
            # Recorded under this process's lease, held while the master is kept: an
            # executor polling for QUEUED jobs must not claim one whose master is not
            # stored yet (a slow S3 let a job fail all its attempts on a missing
            # master while the upload went on). A submitter that dies loses the lease
            # and the sweep takes the job as any dead holder's.
            ttl = self.services.lease_seconds
            job = replace(new_job(asset_id, request, master_key(asset_id),
                                  max_attempts=self.settings.max_attempts, queue=queue),
                          lease_holder=holder_id(), lease_expires=time.time() + ttl)
            asset = Asset(id=asset_id, source_name=source_name)
            await store.create_job(asset, job)
        except BaseException:
            master.unlink(missing_ok=True)
            raise
        try:
            async with Lease(store, job, ttl) as lease:
                await self._keep_master(job.master, master)
                await lease.write(lease_holder=None, lease_expires=0.0)  # claimable now
            job = lease.job
        except BaseException as exc:
            # Refused after all: nothing of this submit stays. The object store may
            # be what failed: its clean-up is bounded, so the caller hears now.
            master.unlink(missing_ok=True)
            await store.delete_asset(asset_id)
            try:
                await asyncio.wait_for(
                    self.services.objects.delete_prefix(f"masters/{asset_id}/"), 10.0)
            except Exception:
                log.warning("removing what was kept of the master of %s failed", asset_id,
                            exc_info=True)
            if is_no_space(exc):
                raise StorageFull(f"no space left to keep the master of {asset_id}") from exc
            raise
        await self._invalidate(asset_id)
        await self._enqueue(job)
        return AssetView(asset=asset, job=job)

    async def _enqueue(self, job: Job) -> None:
        """Send a recorded job; when the queue refuses, the job is FAILED with the
        reason (a QUEUED record always has its message, or is the reaper's to send
        after a crash) and NotQueued raised: the master stays for a retry."""
        try:
            await self.scheduler.enqueue(job)
        except Exception as exc:
            log.warning("queueing job %s failed: %s", job.id, first_line(exc))
            failed = replace(job, state=JobState.FAILED, error=f"could not queue the job: {exc}")
            await self.services.store.write_job(failed)
            await self._invalidate(job.asset_id)
            raise NotQueued(job.asset_id, type(exc).__name__) from exc

    async def _planned(self, options: Mapping[str, object],
                       source_name: str) -> tuple[JobRequest, str]:
        """The typed request and its queue; RequestError."""
        request = JobRequest.parse({**options, "source_name": source_name}, self.defaults)
        return request, await self.scheduler.route(request)

    async def check(self, asset_id: str | None, options: Mapping[str, object], *,
                    source_name: str) -> None:
        if asset_id is not None:
            check_asset_id(asset_id)
        await self._planned(options, source_name)
        if asset_id is not None:
            # The rule of store.create_job (a FAILED asset may be submitted again),
            # read ahead of it.
            existing = await self.services.store.get_asset(asset_id)
            if existing is not None and existing.state != JobState.FAILED:
                raise AlreadyExists(f"asset {asset_id} exists ({existing.state})")

    async def _keep_master(self, key: str, master: Path) -> None:
        objects = self.services.objects
        if isinstance(objects, LocalObjects):
            await objects.adopt_file(key, master)  # a rename: no second copy of the master
        else:
            try:
                await objects.put_file(key, master)
            finally:
                master.unlink(missing_ok=True)

    # -- reads --------------------------------------------------------------------------
    async def get(self, asset_id: str) -> AssetView:
        # A READY asset changes only by its deletion (a submit or retry of it is
        # refused), so its view is answered from memory for ``ready_ttl`` seconds
        # without a store read: the hot calls of the platform API (GetAsset,
        # IssuePlayback) then cost no hop to the store's thread. A delete through
        # this engine drops it at once (_invalidate); one made by another process
        # shows within ``ready_ttl``, as the playback read path's head TTL does.
        held = self._ready.get(asset_id)
        if held is not None and time.monotonic() < held[0]:
            return held[1]
        epoch = self._epoch
        store = self.services.store
        asset = await store.get_asset(asset_id)
        if asset is None:
            raise NotFound(f"no asset {asset_id}")
        # A publication never changes: a READY asset's renditions, segment counts
        # and finished job are read once per version (the hot read of the platform
        # API: GetAsset, IssuePlayback), then only its row.
        key = (asset_id, asset.version, asset.current_job)
        if asset.state == JobState.READY and (cached := self._views.get(key)) is not None:
            return self._keep_ready(epoch, replace(cached, asset=asset))
        renditions = await store.get_renditions(asset_id)
        job = await store.get_job(asset.current_job) if asset.current_job else None
        segments = {r.id: len(await store.get_segments(asset_id, r.id)) for r in renditions}
        view = AssetView(asset=asset, renditions=renditions, job=job, segments=segments)
        # A READY asset published without a job (an imported catalogue, the bench's
        # asset) is as final as one whose job finished.
        if asset.state == JobState.READY and (job is None or job.finished):
            if len(self._views) >= 4096:
                self._views.clear()
            self._views[key] = view
            return self._keep_ready(epoch, view)
        return view

    def _keep_ready(self, epoch: int, view: AssetView) -> AssetView:
        if self.ready_ttl > 0 and epoch == self._epoch:
            if len(self._ready) >= 4096:
                self._ready.clear()
            self._ready[view.asset.id] = (time.monotonic() + self.ready_ttl, view)
        return view

    async def list_assets(self, *, limit: int = 50, after: str | None = None,
                   state: JobState | None = None) -> list[Asset]:
        store = self.services.store
        if state is None:
            return await store.list_assets(limit=limit, after=after)
        out: list[Asset] = []
        # Filtered pages: an admin read, not the hot path.
        async for page in asset_pages(store, after=after):
            out.extend(a for a in page if a.state == state)
            if len(out) >= limit:
                break
        return out[:limit]

    async def jobs(self, *, state: JobState | None = None,
                   asset_id: str | None = None) -> list[Job]:
        return await self.services.store.list_jobs(
            states=None if state is None else [state], asset_id=asset_id)

    # -- delete -------------------------------------------------------------------------
    async def delete(self, asset_id: str) -> None:
        store, objects = self.services.store, self.services.objects
        # What the edges may hold, read before the index is gone.
        renditions = await store.get_renditions(asset_id)
        counts = {r.id: len(await store.get_segments(asset_id, r.id)) for r in renditions}
        text = [r.id for r in renditions if r.kind == "text"]
        # Metadata first: once the row is gone nothing is served (after the cache
        # entry goes too) and a running job's next lease write fails, so it stops
        # without publishing; then the bytes, then the edges' copies.
        existed = await store.delete_asset(asset_id)
        await self._invalidate(asset_id)
        await self._forget_keys(asset_id)
        # Nothing is served from here, so the edges can drop their copies now: were
        # they purged after the bytes, an object store that fails that step would
        # leave them cached, and a second delete no longer knows the renditions.
        if self.edges and counts:
            await self._purge_edges(asset_id, counts, text)
        # A second delete after a failed one removes what the first left.
        removed = await objects.delete_prefix(media_prefix(asset_id) + "/")
        removed += await objects.delete_prefix(f"masters/{asset_id}/")
        if not existed and removed == 0:
            raise NotFound(f"no asset {asset_id}")

    async def _forget_keys(self, asset_id: str) -> None:
        """A taken-down asset's content keys go with it (nothing they open is left)."""
        keys = self.services.keys
        own = keys is None
        if keys is None:
            try:
                keys = key_store_beside(self.services.store)
            except TypeError:
                return  # a store with no key store beside it
        try:
            await keys.delete_asset(asset_id)
        finally:
            if own:
                await keys.close()

    async def _purge_edges(self, asset_id: str, counts: dict[str, int],
                           text: list[str]) -> None:
        """Takedown at the CDN: purge now, and once more a second later in the
        background to catch a fetch that was in flight during the delete."""
        result = await purge_asset(self.edges, asset_id, counts, repeat_after=0, text=text)
        if not result.ok:
            log.warning("purge of %s incomplete: %s", asset_id, result.failed[:3])

        async def again() -> None:
            await asyncio.sleep(1.0)
            await purge_asset(self.edges, asset_id, counts, repeat_after=0, text=text)

        task = asyncio.create_task(again())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- retry --------------------------------------------------------------------------
    async def retry(self, asset_id: str) -> Job:
        store = self.services.store
        asset = await store.get_asset(asset_id)
        if asset is None:
            raise NotFound(f"no asset {asset_id}")
        if asset.state != JobState.FAILED:
            raise FailedPrecondition(
                f"asset {asset_id} is {asset.state}; only a failed job can be retried")
        last = await store.get_job(asset.current_job) if asset.current_job else None
        if last is None:
            raise FailedPrecondition(f"asset {asset_id} has no job to retry; upload it again")
        if not await self._master_present(last.master):
            raise FailedPrecondition(f"the master of {asset_id} is gone; upload it again")
        queue = await self.scheduler.route(last.request)
        job = new_job(asset_id, last.request, last.master,
                      max_attempts=max(last.max_attempts, self.settings.max_attempts), queue=queue)
        await store.create_job(replace(asset, state=JobState.QUEUED, error=None), job)
        await self._invalidate(asset_id)
        await self._enqueue(job)
        return job

    async def _master_present(self, master: str) -> bool:
        if master.startswith("/"):
            return Path(master).is_file()
        return await self.services.objects.stat(master) is not None

    async def _invalidate(self, asset_id: str) -> None:
        self._epoch += 1
        self._ready.pop(asset_id, None)
        try:
            await invalidate_asset(self.services.cache, asset_id)
        except Exception:  # entries then expire by TTL; /readyz reports the cache
            log.warning("cache invalidation of %s failed", asset_id, exc_info=True)
