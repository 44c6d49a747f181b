"""The submitting side of Celery: route a job to a worker class that is alive and
send it. Workers announce their class by the queue they consume (``cdlc worker
--class gpu`` consumes "gpu" only where NVENC opens); ``encoder=auto`` goes to gpu
when a live worker consumes that queue, else to cpu, whatever this machine has."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.config import Settings
from engine.pipeline import Services
from engine.sweep import sweep
from metadata.jobs import Job, JobRequest, RequestError

# How long the answer to "which worker classes are alive" is reused.
ROUTE_TTL = 10.0


class CeleryExecutor:
    def __init__(self, settings: Settings, services: Services) -> None:
        from engine.celery_app import make_app

        self._settings = settings
        self._services = services
        self._app = make_app(settings)
        self._classes: tuple[float, set[str]] = (0.0, set())

    async def live_classes(self) -> set[str]:
        """Queues that live workers consume (a broadcast over the broker, ~1 s)."""
        at, classes = self._classes
        if time.monotonic() - at < ROUTE_TTL:
            return classes

        def ask() -> set[str]:
            replies: dict[str, Any] = self._app.control.inspect(timeout=1.0).active_queues() or {}
            return {q["name"] for queues in replies.values() for q in queues}

        classes = await asyncio.to_thread(ask)
        self._classes = (time.monotonic(), classes)
        return classes

    async def route(self, request: JobRequest) -> str:
        if request.copy or request.encoder == "cpu":
            return "cpu"
        if request.encoder == "gpu":
            if "gpu" not in await self.live_classes():
                raise RequestError("encoder gpu requested, but no gpu worker is alive "
                                   "(start one with `cdlc worker --class gpu`)")
            return "gpu"
        return "gpu" if "gpu" in await self.live_classes() else "cpu"

    async def enqueue(self, job: Job) -> None:
        from engine.celery_app import send_job

        await asyncio.to_thread(send_job, self._app, job)

    async def start(self) -> None:
        """The origin's process sweeps at start too (its uploads, its own scratch);
        reaping is the workers' job."""
        await sweep(self._services.store, self._settings.scratch_dirs)

    async def close(self) -> None:
        return None
