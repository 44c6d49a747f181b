"""Job scheduling. In-process by default (a bounded number of concurrent jobs in
this event loop, native work in threads); Celery when CDLC_BROKER is set, with one
queue per worker class."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from engine.config import Settings
from engine.pipeline import IngestOptions, Services, ingest
from engine.workers import choose_worker
from metadata.models import master_key

log = logging.getLogger(__name__)


def _flag(value: object) -> bool:
    """A form field ("true", "0", ...) or a JSON boolean."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def options_from(settings: Settings, raw: dict[str, Any]) -> IngestOptions:
    """Job options as sent over the admin API or a queue, defaults from settings."""
    return IngestOptions(
        ladder=raw.get("ladder") or None,
        preset=str(raw.get("preset") or settings.preset),
        segment_seconds=float(raw.get("segment_seconds") or settings.segment_seconds),
        gop_seconds=float(raw.get("gop_seconds") or settings.gop_seconds),
        copy=_flag(raw.get("copy", False)),
        encoder=str(raw.get("encoder") or settings.encoder),
    )


class Executor(Protocol):
    async def submit(self, asset_id: str, master: Path, options: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class InProcessExecutor:
    """Runs jobs as tasks of the current event loop, at most `max_jobs` at once."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self._settings = settings
        self._services = services
        self._slots = asyncio.Semaphore(settings.max_jobs)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, asset_id: str, master: Path, options: dict[str, Any]) -> None:
        job = self._run(asset_id, master, options_from(self._settings, options),
                        options.get("source_name"))
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, asset_id: str, master: Path, options: IngestOptions,
                   source_name: str | None) -> None:
        async with self._slots:
            try:
                await ingest(self._services, asset_id, master, options, source_name=source_name)
            except Exception as exc:  # already recorded as FAILED in the store
                log.warning("job %s failed: %s", asset_id, exc)
            finally:
                # An upload staged for a remote object store is a local copy only.
                uploads = (self._settings.data_dir / "uploads").resolve()
                if master.resolve().parent == uploads:
                    master.unlink(missing_ok=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class CeleryExecutor:
    """Sends jobs to Celery workers. The master must already be in the object store
    (masters/{asset}/source) so any machine can fetch it."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self._settings = settings
        self._services = services

    async def submit(self, asset_id: str, master: Path, options: dict[str, Any]) -> None:
        from engine.celery_app import INGEST_TASK, make_app

        key = master_key(asset_id)
        if await self._services.objects.stat(key) is None:
            await self._services.objects.put_file(key, master)
        queue = choose_worker(str(options.get("encoder") or self._settings.encoder)).value
        app = make_app(self._settings)
        await asyncio.to_thread(
            app.send_task, INGEST_TASK,
            args=[asset_id, str(options.get("source_name") or master.name), options], queue=queue
        )

    async def close(self) -> None:
        return None


def make_executor(settings: Settings, services: Services) -> Executor:
    if settings.broker:
        return CeleryExecutor(settings, services)
    return InProcessExecutor(settings, services)
