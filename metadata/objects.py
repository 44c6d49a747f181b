"""The object store interface for media bytes. Local directory by default, S3 at
scale; every implementation passes tests/metadata/test_objects_contract.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ObjectStat:
    size: int
    etag: str          # strong validator, quoted as an HTTP ETag: '"..."'
    mtime: float


class ObjectStore(Protocol):
    async def put_file(self, key: str, path: Path) -> None:
        """Upload a local file (multipart for large files on S3). Like every write
        here, durable when it returns (docs/durability.md)."""

    async def adopt_file(self, key: str, path: Path) -> None:
        """Like put_file, but the file is consumed: a rename on the local store (the
        job's output becomes the published object without a copy)."""

    async def adopt_tree(self, prefix: str, directory: Path,
                         on_progress: Callable[[float], None] | None = None) -> int:
        """Move every file under ``directory`` to ``prefix/<its relative path>`` and
        return how many; the directory is consumed. One rename of the whole tree on
        the local store (a job's 300 segments publish in one system call); uploads
        on S3, with the fraction done reported as they finish. Every file (and,
        locally, every directory) is durable before this returns, so metadata
        published next names only bytes that survive a crash."""

    async def put_bytes(self, key: str, data: bytes) -> None: ...

    async def get_bytes(self, key: str) -> bytes:
        """Raise KeyError if the object does not exist."""

    async def stat(self, key: str) -> ObjectStat | None: ...

    def iter_range(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the object (end None = to the end), streamed.
        KeyError when it does not exist; a store that fails mid-way raises (the
        caller must not take what came so far for the whole)."""

    def local_path(self, key: str) -> Path | None:
        """Filesystem path for sendfile when the store is local, else None."""

    async def read_url(self, key: str, expires: float) -> str | None:
        """An http(s) URL that reads the object (ranged GETs included) for
        ``expires`` seconds, with no credentials beside it: what a chunk of a long
        master reads its span through instead of downloading all of it. None where
        the store has no such URL (the local store: ``local_path`` then). The URL
        is a credential while it lasts: never logged or recorded."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under prefix; returns how many."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
