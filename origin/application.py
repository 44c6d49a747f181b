"""The one application interface behind every front door (REST, gRPC, console).

``engine`` implements it (engine.application.Engine) and injects it; the origin's
handlers and servicers stay thin: parse the wire format, call one operation, map
its result or its exception to the wire. A rule (what a valid request is, who may
be retried, what a delete removes) is written once, in the implementation.

Errors every operation may raise, and what each front door answers:

| exception (metadata.jobs) | REST | gRPC | CLI |
|---|---|---|---|
| RequestError (a ValueError) | 400 | INVALID_ARGUMENT | exit 2 |
| NotFound (a LookupError) | 404 | NOT_FOUND | exit 1 |
| AlreadyExists | 409 | ALREADY_EXISTS | exit 2 |
| FailedPrecondition | 409 | FAILED_PRECONDITION | exit 2 |
| StorageFull (an OSError) | 507 | RESOURCE_EXHAUSTED | exit 1 |
| NotQueued | 503 | UNAVAILABLE | exit 1 |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from metadata.jobs import Job
from metadata.models import Asset, JobState, Rendition


class StorageFull(OSError):
    """No room to keep the master: the request was refused and nothing kept."""


class NotQueued(Exception):
    """The asset and its job are recorded and the master is kept, but the queue
    would not take the job: it is FAILED with that reason, and ``retry`` queues it
    once the queue is back. The queue's own fault is ``__cause__``."""

    def __init__(self, asset_id: str, reason: str) -> None:
        super().__init__(f"asset {asset_id} is kept but its job could not be queued "
                         f"({reason}); retry it once the queue is back")
        self.asset_id = asset_id


@dataclass
class AssetView:
    """An asset as the API shows it: the row, its renditions (once published), its
    current job and the segment count per rendition."""

    asset: Asset
    renditions: list[Rendition] = field(default_factory=list)
    job: Job | None = None
    segments: dict[str, int] = field(default_factory=dict)


class Application(Protocol):
    async def submit(self, asset_id: str | None, master: Path, options: Mapping[str, object],
                     *, source_name: str) -> AssetView:
        """Check the options and the id, record the asset and its job in one atomic
        step, keep the master (``master`` is a local file the call takes over; on
        refusal it is removed), start the job. Nothing is kept when it raises,
        except NotQueued: the queue refused the recorded job (it is FAILED, its
        master kept for ``retry``)."""

    async def check(self, asset_id: str | None, options: Mapping[str, object], *,
                    source_name: str) -> None:
        """Refuse now what ``submit`` would refuse for this id and these options
        (RequestError, AlreadyExists), so a front door refuses before it takes in a
        master (an upload, a fetch); ``submit`` still decides, atomically."""

    async def get(self, asset_id: str) -> AssetView:
        """The asset with its renditions and current job; NotFound."""

    async def list_assets(self, *, limit: int = 50, after: str | None = None,
                   state: JobState | None = None) -> list[Asset]:
        """Assets ordered by id, after ``after``, optionally in one state."""

    async def delete(self, asset_id: str) -> None:
        """Takedown: a running job is stopped, metadata, media and master removed,
        the edges purged; NotFound."""

    async def retry(self, asset_id: str) -> Job:
        """A new job for a FAILED asset, from its kept master and request;
        NotFound, FailedPrecondition (not failed, or the master is gone), NotQueued
        (the queue refused it: FAILED again, the master still kept)."""

    async def jobs(self, *, state: JobState | None = None,
                   asset_id: str | None = None) -> list[Job]:
        """Jobs, oldest first."""
