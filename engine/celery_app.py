"""Celery for many machines: ``cdlc worker --class cpu`` (or gpu), or
``celery -A engine.celery_app worker -Q cpu``.

A task carries a job id only; the job record in the metadata store is the truth.
A worker claims the job with a lease (compare-and-set), renews it while it works,
and finishes it; a delivery of a job that is finished, or held by a live lease, is
dropped. Recovery does not wait for the broker: every worker runs a reaper that
sweeps the store every third of a lease and sends again each job whose holder died
(at once on this machine, where a dead pid is seen; elsewhere when its lease runs
out), so kill -9 of a whole worker gets its job running again within about a lease.
Tasks are acknowledged late and rejected when their worker is lost, so a broker
that notices (RabbitMQ closes the channel) redelivers at once as well; either
way the lease decides who runs it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from engine.chunks import CHUNK_TASK, PartRun, maybe_split, sweep_parts
from engine.config import Settings
from engine.leases import claim, holder_id
from engine.native_heap import bound_kept_memory, release_free_memory
from engine.runner import execute
from engine.services import open_backends
from engine.sweep import sweep_files, sweep_jobs
from metadata.jobs import Job
from metadata.models import JobState

log = logging.getLogger(__name__)

JOB_TASK = "cdlc.job"
# A QUEUED job nobody has touched for this long lost its message (a submitter
# killed between recording and sending, a purged queue): the reaper sends it again.
LOST_MESSAGE_SECONDS = 300.0
BROKER_TIMEOUT_S = 5.0


def make_app(settings: Settings) -> Celery:
    app = Celery("cdlc", broker=settings.broker, backend=None)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        broker_transport_options={
            # Redelivery of an unacknowledged task (Redis) after a worker died: the
            # reaper normally gets there first; this bounds the case with no reaper
            # alive.
            "visibility_timeout": 3600,
            # A hung broker (connections taken, never answered) fails a publish or a
            # broadcast after this long: kombu's Redis transport waits for ever by
            # default, and the submitter's thread with it (a POST /v1/assets never
            # answered, the process's default thread pool used up). py-amqp takes
            # the write bound; it ignores the Redis names, as Redis ignores it.
            "socket_timeout": BROKER_TIMEOUT_S,
            "socket_connect_timeout": BROKER_TIMEOUT_S,
            "write_timeout": BROKER_TIMEOUT_S,
        },
        # One more try after a failed publish, not three: with the bound above a
        # submit against a hung broker is refused in ~10 s.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0,
                                   "interval_step": 0.5, "interval_max": 0.5},
        worker_hijack_root_logger=False,
    )
    app.task(name=JOB_TASK)(run_job_task)
    app.task(name=CHUNK_TASK)(run_chunk_task)
    return app


def send_job(app: Celery, job: Job, countdown: float = 0.0) -> None:
    app.send_task(JOB_TASK, args=[job.id], queue=job.queue or "cpu",
                  countdown=max(0.0, countdown) or None)


def run_job_task(job_id: str) -> str:
    bound_kept_memory()  # the child runs task after task (engine.native_heap)
    try:
        return asyncio.run(_run_job(Settings(), job_id))
    finally:
        release_free_memory()  # the worker child lives on for the next task


def send_part(job: Job, name: str, countdown: float = 0.0) -> None:
    app.send_task(CHUNK_TASK, args=[job.id, name], queue=job.queue or "cpu",
                  countdown=max(0.0, countdown) or None)


def run_chunk_task(job_id: str, name: str) -> str:
    bound_kept_memory()
    settings = Settings()

    async def go() -> str:
        backends = open_backends(settings)
        try:
            return await PartRun(backends, job_id, name, send_part,
                                 max_attempts=settings.max_attempts).run()
        finally:
            await backends.close()

    try:
        return asyncio.run(go())
    finally:
        release_free_memory()


async def _run_job(settings: Settings, job_id: str) -> str:
    backends = open_backends(settings)
    try:
        job = await backends.store.get_job(job_id)
        if job is None or job.finished:
            return "gone"
        wait = job.not_before - time.time()
        if wait > 0:  # backing off: come back then
            send_job(app, job, wait)
            return "later"
        taken = await claim(backends.store, job, holder_id(), settings.lease_seconds)
        if taken is None:
            return "held"  # a live lease: if its holder dies, a reaper sends it again
        try:
            if settings.chunk_seconds > 0 and not taken.request.copy:
                kept = await maybe_split(backends, taken, settings.chunk_seconds,
                                         chunk_window(settings, taken), send_part)
                if kept is None:
                    return "split"
                taken = kept
            await execute(backends, taken)
        except Exception as exc:  # recorded in the job
            log.warning("job %s ended: %s", job_id, exc)
        after = await backends.store.get_job(job_id)
        if after is not None and after.state == JobState.QUEUED:  # a retry with backoff
            send_job(app, after, after.not_before - time.time())
        return str(after.state) if after else "gone"
    finally:
        await backends.close()


def chunk_window(settings: Settings, job: Job) -> int:
    """How many of a job's parts are queued at once: the setting, else the number
    of live workers on the job's queue (at least 2), so chunks of one film keep
    every worker busy while a short job queued behind waits for one chunk."""
    if settings.chunk_window > 0:
        return settings.chunk_window
    try:
        replies = app.control.inspect(timeout=1.0).active_queues() or {}
    except Exception:
        replies = {}
    queue = job.queue or "cpu"
    live = sum(1 for queues in replies.values() if any(q["name"] == queue for q in queues))
    return max(2, live)


async def reap_once(settings: Settings, celery: Celery) -> int:
    """Sweep the store; send again what dead workers held and what lost its message."""
    backends = open_backends(settings)
    try:
        report = await sweep_jobs(backends.store)
        for job in report.requeued:
            send_job(celery, job, job.not_before - time.time())
        now = time.time()
        sent = len(report.requeued)
        sent += await sweep_parts(backends, send_part, settings.max_attempts)
        for job in await backends.store.list_jobs(states=[JobState.QUEUED]):
            if job.lease_holder is None and now - job.updated_at > LOST_MESSAGE_SECONDS \
                    and job.not_before <= now and await backends.store.write_job(job):
                send_job(celery, job)
                sent += 1
        return sent
    finally:
        await backends.close()


class Reaper(threading.Thread):
    """The worker's main process sweeps for dead workers' jobs (module docstring)."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        super().__init__(name="cdlc-reaper", daemon=True)
        self.settings, self.celery = settings, celery
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(max(1.0, self.settings.lease_seconds / 3)):
            try:
                asyncio.run(reap_once(self.settings, self.celery))
            except Exception:
                log.warning("reaper: sweep failed; retrying", exc_info=True)


_reaper: Reaper | None = None


def _start_reaper(**_: Any) -> None:
    """A worker that starts sweeps what dead runs left, then keeps reaping."""
    global _reaper
    settings = Settings()

    try:
        sweep_files(settings.scratch_dirs)
        # Jobs next, sending again what it queues (a sweep alone would queue them
        # in the store, where nothing would send them).
        asyncio.run(reap_once(settings, app))
    except Exception:
        log.warning("start-up sweep failed", exc_info=True)
    _reaper = Reaper(settings, app)
    _reaper.start()


def _stop_reaper(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stopped.set()


worker_ready.connect(_start_reaper)
worker_shutdown.connect(_stop_reaper)
app = make_app(Settings())
