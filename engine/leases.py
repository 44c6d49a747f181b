"""Leases on job records: who runs a job, until when, and what happens when they die.

A process claims a job by writing its holder id and an expiry into the job record
(compare-and-set on the record's rev, so of two claimers one wins), renews the
lease while it works, and finishes or releases the job. A holder that dies stops
renewing: once the lease has run out, any process that sweeps (``cdlc serve``, a
worker, the next CLI command) queues the job again after a backoff, or fails it
when its attempts are spent. A holder on this machine whose process is gone is
treated as expired at once, so a restart after kill -9 does not wait out the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from metadata.jobs import Job, StaleJob, backoff_seconds
from metadata.models import Asset, JobState, Rendition, Segment
from metadata.store import MetadataStore

log = logging.getLogger(__name__)

_HOST = socket.gethostname()


def holder_id() -> str:
    """This process as a lease holder: host, pid and a nonce (pids are reused)."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def holder_dead(holder: str | None) -> bool:
    """True when ``holder`` names a process of this machine that no longer runs."""
    if not holder:
        return False
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    return host == _HOST and pid.isascii() and pid.isdigit() and not pid_alive(int(pid))


def lease_lost(job: Job, now: float) -> bool:
    """A running job whose holder can no longer be working on it."""
    return not job.finished and job.lease_holder is not None and (
        job.lease_expires < now or holder_dead(job.lease_holder))


async def claim(store: MetadataStore, job: Job, holder: str, ttl: float) -> Job | None:
    """Take ``job`` for ``holder`` (attempt + 1, lease until now + ttl), or None when
    it is finished, held by a live lease, backing off, or another claimer won."""
    now = time.time()
    if job.finished or job.not_before > now:
        return None
    if job.lease_holder is not None and not lease_lost(job, now):
        return None
    taken = replace(job, lease_holder=holder, lease_expires=now + ttl, attempt=job.attempt + 1,
                    state=JobState.QUEUED if job.state == JobState.QUEUED else job.state)
    if not await store.write_job(taken):
        return None
    return taken


async def expire(store: MetadataStore, job: Job, reason: str) -> Job | None:
    """A job whose holder died: queued again after a backoff, or FAILED once its
    attempts are spent. None when another process wrote it first."""
    if job.attempt >= job.max_attempts:
        done = replace(job, state=JobState.FAILED, lease_holder=None,
                       error=f"{reason}; gave up after {job.attempt} attempt"
                             f"{'s' if job.attempt != 1 else ''}")
    else:
        delay = backoff_seconds(job.attempt)
        done = replace(job, state=JobState.QUEUED, progress=0.0, lease_holder=None,
                       not_before=time.time() + delay,
                       error=f"{reason}; attempt {job.attempt + 1} in {delay:g} s")
    return done if await store.write_job(done) else None


class Lease:
    """A claimed job, renewed in the background while work runs. Every write goes
    through here, one at a time, so the rev this process holds stays current; a
    write that loses its compare-and-set means another process owns the job now
    (StaleJob), and ``lost`` is set so the work can stop."""

    def __init__(self, store: MetadataStore, job: Job, ttl: float) -> None:
        self.store, self.job, self.ttl = store, job, ttl
        self.lost = asyncio.Event()
        self._lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lease:
        self._renewer = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.write()
            except StaleJob:
                log.warning("lease of job %s lost", self.job.id)
                return
            except Exception:  # the store is out: retry at the next beat
                log.warning("renewing the lease of job %s failed", self.job.id, exc_info=True)

    async def write(self, **changes: object) -> None:
        """Apply ``changes`` to the job and store it, extending the lease."""
        async with self._lock:
            if self.lost.is_set():
                raise StaleJob(f"job {self.job.id} was taken over by another process")
            updated = replace(self.job, **changes)  # type: ignore[arg-type]
            if updated.lease_holder is not None:
                updated.lease_expires = time.time() + self.ttl
            if not await self.store.write_job(updated):
                self.lost.set()
                raise StaleJob(f"job {self.job.id} was taken over by another process")
            self.job = updated

    async def publish(self, asset: Asset, renditions: Sequence[Rendition],
                      segments: Sequence[Segment]) -> None:
        """Publish the asset and finish the job READY in one step of the store,
        fenced by the lease: a process that lost the job publishes nothing."""
        async with self._lock:
            if self.lost.is_set():
                raise StaleJob(f"job {self.job.id} was taken over by another process")
            try:
                await self.store.publish(asset, renditions, segments, job=self.job)
            except StaleJob:
                self.lost.set()
                raise

    async def state(self, state: JobState, progress: float = 0.0) -> None:
        await self.write(state=state, progress=progress)

    async def progress(self, fraction: float) -> None:
        await self.write(progress=fraction)
