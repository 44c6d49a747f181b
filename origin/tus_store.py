"""Resumable uploads on disk: one data file and one JSON sidecar per upload.

``<dir>/<id>.bin`` holds the bytes received so far; ``<dir>/<id>.json`` holds what
does not change while bytes arrive (length, metadata, the parsed job options) and
is written once at creation and once at completion (temp file, fsync, rename,
directory fsync). The upload's offset is the data file's size and its expiry the
file's last write plus the TTL: a PATCH is acknowledged after one ``fdatasync`` of
the data file, which makes both durable (one sync per PATCH, not three: each
sync costs a device flush, and that, not the bytes, bounded the PATCH rate).

So after a dropped connection, a crash or a restart of ``cdlc serve`` the offset
a HEAD reports is the bytes kept, in order (ext4's and XFS's ordered writes never
expose a size past the data written). A power cut can lose bytes that a HEAD
reported but no PATCH had acknowledged; the next PATCH then meets a smaller
offset, is answered 409, and the client asks again (tus §PATCH).

Nothing here speaks HTTP (origin/tus.py does); the state lives in the files, not
in memory, so any process over the same directory can serve any upload.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")

# States of an upload's sidecar.
RECEIVING = "receiving"
SUBMITTED = "submitted"   # the last byte arrived and the job was accepted
# The last byte arrived and the job is recorded with its master, but the queue would
# not take it (the job is FAILED): the client's resume (HEAD, PATCH) queues it again.
UNQUEUED = "unqueued"


@dataclass(frozen=True)
class UploadInfo:
    """What a sidecar holds. ``options`` are the job options from Upload-Metadata
    (already checked by JobRequest.parse at creation)."""

    id: str
    length: int
    offset: int = 0
    filename: str = "master"
    asset_id: str = ""
    options: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    expires_at: float = 0.0
    state: str = RECEIVING


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UploadDir:
    """The uploads of one directory. Blocking calls: run them off the event loop."""

    def __init__(self, root: Path, *, ttl_seconds: float) -> None:
        self.root = Path(root)
        self.ttl = ttl_seconds

    def data_path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.bin"

    def info_path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.json"

    # -- create / read / write ------------------------------------------------------
    def create(self, length: int, *, filename: str, asset_id: str,
               options: dict[str, str], metadata: dict[str, str]) -> UploadInfo:
        self.root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        info = UploadInfo(id=uuid.uuid4().hex, length=length, filename=filename,
                          asset_id=asset_id, options=options, metadata=metadata,
                          created_at=now, expires_at=now + self.ttl)
        try:
            with open(self.data_path(info.id), "xb") as f:
                os.fsync(f.fileno())
            self.save(info)
        except BaseException:
            # All or nothing (a full disk): no empty data file left for the sweep.
            self.remove(info.id)
            raise
        return info

    def load(self, upload_id: str) -> UploadInfo | None:
        """The upload's state, or None when there is none (never made, terminated,
        swept). Reading never changes the files (a writer may be appending)."""
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            return None
        try:
            raw: dict[str, Any] = json.loads(self.info_path(upload_id).read_text())
            info = UploadInfo(**raw)
        except (OSError, ValueError, TypeError):
            return None
        if info.state == RECEIVING:
            try:
                st = self.data_path(upload_id).stat()
            except FileNotFoundError:
                return None
            info = replace(info, offset=st.st_size,
                           expires_at=max(info.expires_at, st.st_mtime + self.ttl))
        return info

    def open_for_append(self, upload_id: str) -> BinaryIO:
        """The data file, locked for this writer (flock, so two processes over one
        directory never append to one upload at once), positioned at its end (the
        upload's offset). BlockingIOError when another writer holds it;
        FileNotFoundError when it is gone (submitted or terminated meanwhile)."""
        f = open(self.data_path(upload_id), "r+b")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            f.seek(0, os.SEEK_END)
        except BaseException:
            f.close()
            raise
        return f

    @staticmethod
    def acknowledge(f: BinaryIO) -> int:
        """Make the bytes written so far durable; the new offset."""
        f.flush()
        os.fdatasync(f.fileno())
        return f.tell()

    @staticmethod
    def roll_back(f: BinaryIO, offset: int) -> None:
        """Drop what this PATCH wrote (a checksum that did not match, a body too long)."""
        f.flush()
        f.truncate(offset)
        f.seek(offset)
        os.fdatasync(f.fileno())

    def save(self, info: UploadInfo) -> None:
        """Replace the sidecar atomically and durably."""
        path = self.info_path(info.id)
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(asdict(info), f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: the old sidecar stands alone
            raise
        _fsync_dir(self.root)

    def remove(self, upload_id: str) -> bool:
        """Terminate: the data and the sidecar go. False when there was none."""
        found = False
        for path in (self.data_path(upload_id), self.info_path(upload_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                found = True
        return found

    def ids(self) -> list[str]:
        """The ids of the uploads that have a sidecar."""
        if not self.root.is_dir():
            return []
        return sorted(p.name[:-5] for p in self.root.iterdir()
                      if p.name.endswith(".json") and UPLOAD_ID_RE.fullmatch(p.name[:-5]))

    # -- expiry ---------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> list[str]:
        """Remove uploads past their expiry (and data files whose sidecar is gone
        for longer than the TTL); the ids removed."""
        now = time.time() if now is None else now
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for path in self.root.iterdir():
            upload_id, _, suffix = path.name.partition(".")
            if not UPLOAD_ID_RE.fullmatch(upload_id):
                continue
            if suffix == "json":
                info = self.load(upload_id)
                if (info is None or info.expires_at <= now) and self.remove(upload_id):
                    removed.append(upload_id)
            elif suffix == "bin" and not self.info_path(upload_id).exists():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime + self.ttl <= now:
                        path.unlink()
                        removed.append(upload_id)
            elif suffix.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime + 60 <= now:
                        path.unlink()
        return removed
