"""Celery for many machines: `celery -A engine.celery_app worker -Q cpu` (or gpu).

A task is acknowledged only after it finished (acks_late) and is re-queued if its
worker dies (reject_on_worker_lost): a killed worker's job runs again elsewhere, and
since publishing is atomic the half-done attempt was never served.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from celery import Celery

from engine.config import Settings
from engine.executor import options_from
from engine.pipeline import ingest
from engine.services import open_backends
from metadata.models import master_key

INGEST_TASK = "cdlc.ingest"


def make_app(settings: Settings) -> Celery:
    app = Celery("cdlc", broker=settings.broker, backend=None)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
    )
    app.task(name=INGEST_TASK)(run_ingest_task)
    return app


def run_ingest_task(asset_id: str, source_name: str, options: dict[str, Any]) -> str:
    settings = Settings()
    return asyncio.run(_run(settings, asset_id, source_name, options))


async def _run(settings: Settings, asset_id: str, source_name: str,
               options: dict[str, Any]) -> str:
    backends = open_backends(settings)
    try:
        key = master_key(asset_id)
        local = backends.objects.local_path(key)
        with tempfile.TemporaryDirectory(dir=settings.data_dir) as tmp:
            if local is None:
                local = Path(tmp) / "source"
                with local.open("wb") as fh:
                    async for chunk in backends.objects.iter_range(key):
                        fh.write(chunk)
            asset = await ingest(backends, asset_id, local, options_from(settings, options),
                                 source_name=source_name)
        return asset.state.value
    finally:
        await backends.close()


app = make_app(Settings())
