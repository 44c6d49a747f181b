"""The metadata store interface. SQLite by default, ScyllaDB at scale; every
implementation passes tests/metadata/test_store_contract.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
    ) -> None:
        """Atomically replace the asset's renditions and segment index and mark it
        READY (bumping asset.version). Readers never see a half-written index."""

    async def get_renditions(self, asset_id: str) -> list[Rendition]: ...

    async def get_segments(self, asset_id: str, rendition_id: str) -> list[Segment]:
        """Ordered by number."""

    async def delete_asset(self, asset_id: str) -> bool:
        """Remove the asset with its renditions and segments; False if it did not exist."""

    async def ping(self) -> None:
        """Raise if the backend is unreachable (readiness)."""

    async def close(self) -> None: ...
