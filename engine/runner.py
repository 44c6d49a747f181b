"""Running a claimed job to its end, whatever happens (docs/jobs.md).

``execute`` runs the pipeline under the job's lease and decides how the attempt
ends: READY (published), FAILED with the reason (bad input, a full disk, attempts
spent), queued again after a backoff (an infrastructure fault with attempts left),
or released untouched when another process took the job over. ``ingest_here`` is
the embedded path (``cdlc ingest``, tests): it records a job of its own, claims it
and executes it in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from prometheus_client import Counter, Histogram

from engine.copy_run import CopyRun
from engine.job_spec import IngestError, IngestOptions, RequestError, check_asset_id
from engine.leases import Lease, claim, holder_id
from engine.pipeline import (
    NoSpaceError,
    ProgressFn,
    Services,
    encryption_for,
    run_pipeline,
    sidecars_of,
)
from metadata.jobs import AlreadyExists, Job, StaleJob, backoff_seconds, new_job_id
from metadata.models import Asset, JobState

log = logging.getLogger(__name__)

# Where jobs run (cdlc serve's /metrics in-process; `cdlc worker --metrics-port`).
JOBS_ENDED = Counter("cdlc_jobs_ended_total",
                     "Job attempts by how they ended: ready, failed, retried, released",
                     ["result"])
ENCODE_SPEED = Histogram(
    "cdlc_job_encode_speed", "Source seconds encoded per wall second, per job",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128))

# Failures that another attempt would only repeat.
PERMANENT = (IngestError, RequestError, NoSpaceError)


def reason_of(exc: BaseException) -> str:
    """One line for the job record."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    text = str(exc).strip().splitlines()
    return (text[0] if text else "") or type(exc).__name__


async def execute(services: Services, job: Job, *, on_progress: ProgressFn | None = None,
                  run: CopyRun | None = None, requeue_on_cancel: bool = True) -> Asset:
    """Run ``job`` (claimed by this process) to its end. Returns the READY asset;
    raises what ended the attempt after recording it (StaleJob: nothing recorded,
    the job is another process's now)."""
    lease = Lease(services.store, job, services.lease_seconds)
    t0 = time.monotonic()
    async with lease:
        try:
            async with local_master(services, job) as master:
                asset = await run_pipeline(services, lease, master, on_progress, run)
            JOBS_ENDED.labels("ready").inc()
            ENCODE_SPEED.observe(asset.duration / max(1e-6, time.monotonic() - t0))
            return asset
        except StaleJob:
            JOBS_ENDED.labels("released").inc()
            log.warning("job %s was taken over; this attempt stops", job.id)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            if requeue_on_cancel:
                # A graceful stop: the next process to start runs it again, and this
                # interrupted attempt does not count against the job.
                await _shielded(lease, state=JobState.QUEUED, progress=0.0, lease_holder=None,
                                attempt=max(0, lease.job.attempt - 1), error=None)
            else:
                await _shielded(lease, state=JobState.FAILED, lease_holder=None,
                                error="interrupted; nothing was published")
            raise exc
        except BaseException as exc:
            await record_failure(lease, exc)
            raise


async def record_failure(lease: Lease, exc: BaseException) -> None:
    """End the attempt: FAILED (a permanent fault or attempts spent) or QUEUED
    again after a backoff; the lease is given up either way."""
    job, reason = lease.job, reason_of(exc)
    if isinstance(exc, PERMANENT) or job.attempt >= job.max_attempts:
        if not isinstance(exc, PERMANENT) and job.max_attempts > 1:
            reason = f"{reason} (gave up after {job.attempt} attempts)"
        changes: dict[str, object] = {"state": JobState.FAILED, "error": reason}
        JOBS_ENDED.labels("failed").inc()
    else:
        JOBS_ENDED.labels("retried").inc()
        delay = backoff_seconds(job.attempt)
        changes = {"state": JobState.QUEUED, "progress": 0.0, "not_before": time.time() + delay,
                   "error": f"attempt {job.attempt} failed: {reason}; retrying in {delay:g} s"}
        log.warning("job %s attempt %d failed, retrying: %s", job.id, job.attempt, reason)
    await _shielded(lease, lease_holder=None, **changes)


async def _shielded(lease: Lease, **changes: object) -> None:
    """A final write that a cancellation does not interrupt; if the store is out the
    lease runs out and a sweep finishes the job instead."""
    try:
        await asyncio.shield(lease.write(**changes))
    except StaleJob:
        pass
    except Exception:
        log.exception("could not record the end of job %s", lease.job.id)


def _local_file(services: Services, job: Job) -> Path | None:
    """The master's file when it is one here: a local path, or a key of a local
    store."""
    if job.master.startswith("/"):
        return Path(job.master)
    return services.objects.local_path(job.master)


@contextlib.asynccontextmanager
async def local_master(services: Services, job: Job) -> AsyncIterator[Path]:
    """The job's master as a local file: a local path as it is, an object key from
    a local store as its file, else fetched into the work dir for this attempt."""
    found = _local_file(services, job)
    if found is not None:
        yield found
        return
    services.work_dir.mkdir(parents=True, exist_ok=True)
    from engine.job_spec import work_dir_name

    tmp = services.work_dir / f"{work_dir_name(job.asset_id)}.master"
    try:
        with tmp.open("wb") as fh:
            async for chunk in services.objects.iter_range(job.master):
                await asyncio.to_thread(fh.write, chunk)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


# A presigned read URL outlives the longest part it serves (parts are minutes).
READ_URL_SECONDS = 6 * 3600.0


@contextlib.asynccontextmanager
async def span_master(services: Services, job: Job) -> AsyncIterator[Path | str]:
    """The job's master for a part that reads one span of it: a local file as
    ``local_master`` gives it, else the store's read URL (ranged GETs: the span's
    bytes, not a download of the whole master), else downloaded as
    ``local_master`` does. The URL is a credential: scrub it from what is shown
    (``scrubbed``)."""
    if _local_file(services, job) is None:
        url = await services.objects.read_url(job.master, READ_URL_SECONDS)
        if url is not None:
            yield url
            return
    async with local_master(services, job) as master:
        yield master


def scrubbed(exc: BaseException, url: str, shown: str) -> BaseException:
    """``exc`` with every mention of ``url`` (and its query-less form) shown as
    ``shown``: a native error's message names its input."""
    text = str(exc)
    bare = url.split("?", 1)[0]
    if url not in text and bare not in text:
        return exc
    clean = text.replace(url, shown).replace(bare, shown)
    try:
        return type(exc)(clean)
    except Exception:
        return RuntimeError(clean)


def new_job(asset_id: str, request: IngestOptions, master: str, *, max_attempts: int,
            queue: str = "") -> Job:
    return Job(id=new_job_id(), asset_id=asset_id, request=request, master=master,
               max_attempts=max_attempts, queue=queue)


async def ingest_here(
    services: Services,
    asset_id: str,
    master: Path,
    options: IngestOptions,
    *,
    on_progress: ProgressFn | None = None,
    source_name: str | None = None,
    started: CopyRun | None = None,
) -> Asset:
    """Record, claim and run a job for ``master`` in this process (one attempt:
    nothing else would run it again; a sweep fails it if this process dies)."""
    if started is not None and not options.copy:
        raise ValueError("a started copy needs options.copy")
    if started is not None and options.encryption:
        raise ValueError("an encrypted copy starts with its key: do not start it early")
    run = started
    try:
        try:
            check_asset_id(asset_id)
            options.check()
        except RequestError as exc:
            raise IngestError(str(exc)) from exc
        request = replace(options, source_name=source_name or options.source_name
                          or master.name)
        job = new_job(asset_id, request, str(master.absolute()), max_attempts=1)
        try:
            await services.store.create_job(Asset(id=asset_id, source_name=request.source_name),
                                            job)
        except AlreadyExists as exc:
            raise IngestError(f"asset {asset_id} already exists; delete it or choose "
                              "another --id") from exc
        claimed = await claim(services.store, job, holder_id(), services.lease_seconds)
        if claimed is None:
            raise IngestError(f"job {job.id} of {asset_id} was taken by another process")
        if options.copy and run is None:
            # An encrypted copy starts once its key is in the key store.
            run = CopyRun(master, services.work_dir, asset_id, options.segment_seconds,
                          {**sidecars_of(options),
                           "encryption": await encryption_for(services, asset_id, options)})
        return await execute(services, claimed, on_progress=on_progress, run=run,
                             requeue_on_cancel=False)
    finally:
        if run is not None:
            # Also when the job failed before it needed the copy: it still owns it.
            await run.close()
