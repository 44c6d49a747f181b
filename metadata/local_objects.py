"""The embedded object store: a local directory, one file per key.

Writes are atomic (a temp file in the target's directory, fsync, then rename(2)),
so a reader sees the old bytes or the new ones, never a torn file; the origin
sends files with sendfile(2) through ``local_path``.

Writes are durable when they return: a file's bytes are fsynced before it is
renamed into place, and every directory whose entries changed (the target's
parent, directories created on the way, the source's parent of a move) is
fsynced after (rename(2) alone is atomic but not durable: POSIX leaves the new
name in the page cache until the directory is synced). ``adopt_tree`` syncs every
file and directory of the tree (on a small thread pool: fsyncs queue in the
device, not behind each other), so a publish that follows it commits metadata
that names only bytes on disk. docs/durability.md says what each backend promises.

Blocking file work runs in the default thread pool. ETags are
``"<mtime_ns hex>-<size hex>"``, the strong validator the origin sends for a
local file (origin/playback.py), so HEAD/304 agree with ``stat``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISREG
from typing import ParamSpec, TypeVar

from metadata.objects import ObjectStat

P = ParamSpec("P")
T = TypeVar("T")
_TMP_MARK = ".cdlc-tmp-"
_KEY_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]{0,254}")


_SYNC_THREADS = 8


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """fsync(2) a file or a directory by path (a directory is opened read-only,
    which Linux allows for fsync)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_all(files: Iterable[Path], directories: Iterable[Path]) -> None:
    """fsync every file, then every directory (a directory's entries are only
    worth syncing once the files they name are)."""
    files, directories = list(files), list(dict.fromkeys(directories))
    if len(files) > 1:
        with ThreadPoolExecutor(min(_SYNC_THREADS, len(files))) as pool:
            list(pool.map(fsync_path, files))  # list(): re-raises a failure
    else:
        for f in files:
            fsync_path(f)
    for d in directories:
        fsync_path(d, directory=True)


def makedirs_durable(directory: Path) -> list[Path]:
    """mkdir -p, returning the parents whose entries changed (to be fsynced):
    a new directory survives a crash only once its parent is synced."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    return [m.parent for m in reversed(missing)]


def check_key(key: str) -> str:
    """Refuse keys that could leave the store's root: only relative paths of plain
    name parts (no empty part, '.', '..', backslash, NUL or leading dot)."""
    parts = key.split("/")
    if not key or not all(_KEY_PART.fullmatch(p) for p in parts):
        raise ValueError(f"invalid object key: {key!r}")
    return key


class LocalObjects:
    """ObjectStore over a directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _tmp_for(self, path: Path) -> tuple[Path, list[Path]]:
        """A temp name beside ``path``, and the directories created for it."""
        new_dirs = makedirs_durable(path.parent)
        return path.parent / f"{_TMP_MARK}{path.name}.{uuid.uuid4().hex}", new_dirs

    def _commit(self, tmp: Path, path: Path, new_dirs: list[Path]) -> None:
        """Rename the synced temp file into place, then sync the directories."""
        os.replace(tmp, path)
        fsync_all((), [path.parent, *new_dirs])

    async def _io(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    def _put_file_sync(self, key: str, src: Path) -> None:
        path = self._path(key)
        tmp, new_dirs = self._tmp_for(path)
        try:
            shutil.copyfile(src, tmp)  # copy_file_range/sendfile in the kernel
            fsync_path(tmp)
            self._commit(tmp, path, new_dirs)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def put_file(self, key: str, path: Path) -> None:
        await self._io(self._put_file_sync, key, Path(path))

    def _adopt_sync(self, key: str, src: Path) -> None:
        path = self._path(key)
        src = Path(src)
        new_dirs = makedirs_durable(path.parent)
        fsync_path(src)  # the bytes first: the name must never outlive them
        try:
            os.replace(src, path)
        except OSError:  # another filesystem: copy (synced), then drop the source
            fsync_all((), new_dirs)
            self._put_file_sync(key, src)
            src.unlink(missing_ok=True)
            return
        # The new name (and the old one's removal) made durable.
        fsync_all((), [path.parent, src.parent, *new_dirs])

    async def adopt_file(self, key: str, path: Path) -> None:
        """Move ``path`` into the store (a rename when on the same filesystem).
        The source is gone afterwards; the file and its directory are synced
        before this returns."""
        await self._io(self._adopt_sync, key, Path(path))

    def _adopt_tree_sync(self, prefix: str, directory: Path) -> int:
        files = [Path(root) / name for root, _, names in os.walk(directory) for name in names]
        keys = [f"{prefix}/{f.relative_to(directory).as_posix()}" for f in files]
        for key in keys:  # every key is checked before anything moves
            check_key(key)
        target = self._path(prefix)
        new_dirs = makedirs_durable(target.parent)
        # Every file and directory of the tree is synced before it moves: the
        # job wrote it without fsync (one sync here, on a pool, costs less).
        subdirs = [Path(root) for root, _, _ in os.walk(directory)]
        fsync_all(files, reversed(subdirs))
        try:
            # Replaces a missing or empty target; a leftover from an earlier,
            # killed job (not empty) or another filesystem takes the slow path.
            os.rename(directory, target)
        except OSError:
            for key, f in zip(keys, files, strict=True):
                self._adopt_sync(key, f)
            shutil.rmtree(directory, ignore_errors=True)
            fsync_all((), [*new_dirs, directory.parent])
            return len(files)
        # The renamed tree's root entry (and the old one's removal).
        fsync_all((), [target.parent, directory.parent, *new_dirs])
        return len(files)

    async def adopt_tree(self, prefix: str, directory: Path,
                         on_progress: Callable[[float], None] | None = None) -> int:
        count = await self._io(self._adopt_tree_sync, prefix.rstrip("/"), Path(directory))
        if on_progress is not None:
            on_progress(1.0)
        return count

    def _put_bytes_sync(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp, new_dirs = self._tmp_for(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._commit(tmp, path, new_dirs)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self._io(self._put_bytes_sync, key, bytes(data))

    def _get_sync(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    async def get_bytes(self, key: str) -> bytes:
        return await self._io(self._get_sync, key)

    def _stat_sync(self, key: str) -> ObjectStat | None:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not S_ISREG(st.st_mode):
            return None
        return ObjectStat(
            size=st.st_size, etag=f'"{st.st_mtime_ns:x}-{st.st_size:x}"', mtime=st.st_mtime
        )

    async def stat(self, key: str) -> ObjectStat | None:
        return await self._io(self._stat_sync, key)

    async def iter_range(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        loop = asyncio.get_running_loop()
        try:
            f = await loop.run_in_executor(None, open, path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        try:
            await loop.run_in_executor(None, f.seek, start)
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                n = chunk if left is None else min(chunk, left)
                data = await loop.run_in_executor(None, f.read, n)
                if not data:
                    break
                if left is not None:
                    left -= len(data)
                yield data
        finally:
            await loop.run_in_executor(None, f.close)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def read_url(self, key: str, expires: float) -> str | None:
        return None

    def _delete_prefix_sync(self, prefix: str) -> int:
        # A prefix is a key prefix, not necessarily a whole directory name.
        if prefix.strip("/") == "":
            raise ValueError("refusing to delete the whole store")
        head, _, tail = prefix.rpartition("/")
        base = self.root / check_key(head) if head else self.root
        if not base.is_dir():
            return 0
        count = 0
        if not tail:  # a whole directory: count, then remove it with its subfolders
            for _, _, files in os.walk(base):
                count += sum(1 for name in files if not name.startswith(_TMP_MARK))
            shutil.rmtree(base, ignore_errors=True)
            return count
        for entry in list(base.iterdir()):
            if not entry.name.startswith(tail):
                continue
            if entry.is_dir() and not entry.is_symlink():
                for _, _, files in os.walk(entry):
                    count += sum(1 for name in files if not name.startswith(_TMP_MARK))
                shutil.rmtree(entry, ignore_errors=True)
            else:
                if not entry.name.startswith(_TMP_MARK):
                    count += 1
                entry.unlink(missing_ok=True)
        return count

    async def delete_prefix(self, prefix: str) -> int:
        return await self._io(self._delete_prefix_sync, prefix)

    async def ping(self) -> None:
        ok = await self._io(os.access, self.root, os.W_OK)
        if not ok:
            raise OSError(f"object store {self.root} is not writable")

    async def close(self) -> None:
        return None
