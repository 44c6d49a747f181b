"""Wiring: open the configured backends. The only place that knows which
implementation stands behind each interface."""

from __future__ import annotations

from engine.config import Settings
from engine.pipeline import Services
from metadata import open_cache, open_objects, open_store


class Backends(Services):
    async def close(self) -> None:
        await self.store.close()
        await self.objects.close()
        await self.cache.close()


def open_backends(settings: Settings) -> Backends:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Backends(
        store=open_store(settings.metadata, settings.data_dir),
        objects=open_objects(settings.storage, settings.data_dir),
        work_dir=settings.work_dir,
        cache=open_cache(settings.cache),
        lease_seconds=settings.lease_seconds,
        remote_read_timeout=settings.remote_read_timeout,
    )
