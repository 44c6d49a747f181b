"""The metadata store interface. SQLite by default, ScyllaDB at scale; every
implementation passes tests/metadata/test_store_contract.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from metadata.jobs import Job
from metadata.models import Asset, JobState, Rendition, Segment


class MetadataStore(Protocol):
    async def put_asset(self, asset: Asset) -> None:
        """Create or replace the asset row (not its renditions)."""

    async def get_asset(self, asset_id: str) -> Asset | None: ...

    async def list_assets(self, limit: int = 50, after: str | None = None) -> list[Asset]:
        """Assets ordered by id, those with id > after."""

    async def set_state(
        self,
        asset_id: str,
        state: JobState,
        *,
        progress: float | None = None,
        error: str | None = None,
    ) -> None: ...

    async def publish(
        self,
        asset: Asset,
        renditions: Sequence[Rendition],
        segments: Sequence[Segment],
        job: Job | None = None,
    ) -> None:
        """Atomically replace the asset's renditions and segment index and mark it
        READY (bumping asset.version). Readers never see a half-written index. With
        ``job``, that job is finished READY by compare-and-set on its rev; StaleJob
        (nothing published) when another process has taken it over."""

    async def get_renditions(self, asset_id: str) -> list[Rendition]: ...

    async def get_segments(self, asset_id: str, rendition_id: str) -> list[Segment]:
        """Ordered by number."""

    async def delete_asset(self, asset_id: str) -> bool:
        """Remove the asset with its renditions, segments and jobs; False if it did
        not exist."""

    async def create_job(self, asset: Asset, job: Job) -> None:
        """Record the asset (new, or FAILED before) QUEUED with its current job, in one
        atomic step: AlreadyExists when the id holds a READY asset or a running job,
        so of concurrent submits of one id exactly one is accepted."""

    async def get_job(self, job_id: str) -> Job | None: ...

    async def list_jobs(self, *, states: Sequence[JobState] | None = None,
                        asset_id: str | None = None, limit: int = 1000) -> list[Job]:
        """Jobs oldest first, optionally of some states and of one asset."""

    async def write_job(self, job: Job) -> bool:
        """Compare-and-set on ``job.rev``: stored (rev bumped, state mirrored onto the
        asset unless it is READY) only if nobody wrote the job since it was read."""

    async def ping(self) -> None:
        """Raise if the backend is unreachable (readiness)."""

    async def close(self) -> None: ...


class AssetLister(Protocol):
    """What lists assets by id a page at a time: a store, or the application."""

    async def list_assets(self, *, limit: int = 50, after: str | None = None
                          ) -> list[Asset]: ...


PAGE = 500


async def asset_pages(lister: AssetLister, *, most: int | None = None,
                      after: str | None = None) -> AsyncIterator[list[Asset]]:
    """Every asset after ``after`` by id, ``PAGE`` at a time, the first ``most`` of
    them (None: all): for the readers that walk the whole catalogue (the live feed,
    the webhook poll, a state filter), which may stop early."""
    got = 0
    while most is None or got < most:
        want = PAGE if most is None else min(PAGE, most - got)
        page = await lister.list_assets(limit=want, after=after)
        if page:
            yield page
        got += len(page)
        if len(page) < want:
            return
        after = page[-1].id
