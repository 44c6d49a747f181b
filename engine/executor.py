"""Job scheduling. In-process by default: the store is the queue, and a loop in
this process claims QUEUED jobs (at most ``max_jobs`` at once), runs them under a
lease and sweeps what dead runs left; several processes (``cdlc serve --workers
N``) share the work safely, since a claim is a compare-and-set. With
``CDLC_BROKER`` set, Celery workers run the jobs (engine.celery_app), one queue
per worker class.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from engine.application import Scheduler
from engine.config import Settings
from engine.leases import claim, holder_id
from engine.native_heap import bound_kept_memory, release_free_memory
from engine.pipeline import Services
from engine.runner import execute
from engine.sweep import sweep, sweep_jobs
from metadata.jobs import Job, JobRequest, RequestError
from metadata.models import JobState

log = logging.getLogger(__name__)


def check_encoder_here(request: JobRequest) -> None:
    """encoder=gpu on a machine whose NVENC does not open is refused up front."""
    if request.encoder == "gpu" and not request.copy:
        from engine.workers import gpu_available

        if not gpu_available():
            raise RequestError("encoder gpu requested, but h264_nvenc has no usable CUDA "
                               "device on this machine (use encoder auto or cpu)")


class InProcessExecutor:
    """Runs jobs of the metadata store as tasks of the current event loop."""

    def __init__(self, settings: Settings, services: Services, *,
                 poll_seconds: float = 1.0) -> None:
        self._settings = settings
        self._services = services
        self._poll = poll_seconds
        self._holder = holder_id()
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None

    async def route(self, request: JobRequest) -> str:
        check_encoder_here(request)
        return ""

    async def enqueue(self, job: Job) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Sweep what dead runs left, then claim and run jobs until close()."""
        # Jobs run beside request traffic for the life of the process: keep the
        # heap that their threads free from settling in every arena.
        bound_kept_memory()
        report = await sweep(self._services.store, self._settings.scratch_dirs)
        if report.requeued or report.failed:
            log.info("start-up sweep: %d jobs queued again, %d failed",
                     len(report.requeued), len(report.failed))
        self._loop_task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        sweep_every = max(1.0, self._settings.lease_seconds / 3)
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - last_sweep >= sweep_every:
                    last_sweep = loop.time()
                    await sweep_jobs(self._services.store)
                await self._claim_some()
            except Exception:  # the store is out: try again at the next beat
                log.warning("job scheduling failed; retrying", exc_info=True)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def _claim_some(self) -> None:
        free = self._settings.max_jobs - len(self._running)
        if free <= 0:
            return
        queued = await self._services.store.list_jobs(states=[JobState.QUEUED], limit=100)
        for job in queued:
            if free <= 0:
                break
            if job.id in self._running:
                continue
            taken = await claim(self._services.store, job, self._holder,
                                self._services.lease_seconds)
            if taken is None:
                continue
            free -= 1
            task = asyncio.create_task(self._run(taken))
            self._running[taken.id] = task

    async def _run(self, job: Job) -> None:
        try:
            await execute(self._services, job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # recorded in the job already
            log.warning("job %s of %s ended: %s", job.id, job.asset_id, exc)
        finally:
            self._running.pop(job.id, None)
            self._wake.set()
            # This process also serves: collect the job's cyclic garbage now (its
            # tracebacks, futures, parsed headers) rather than at the next full
            # collection, while request traffic settles among the freed pages, and
            # give its freed codec buffers back to the OS. The serving process froze
            # its start-up objects, so the collection walks only what came since.
            gc.collect()
            await asyncio.to_thread(release_free_memory)

    async def close(self) -> None:
        """Stop claiming; running jobs are cancelled and handed back QUEUED, so the
        next process to start runs them again."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def make_executor(settings: Settings, services: Services) -> Scheduler:
    if settings.broker:
        from engine.celery_executor import CeleryExecutor

        return CeleryExecutor(settings, services)
    return InProcessExecutor(settings, services)
