"""The embedded object store: a local directory, one file per key.

Writes are atomic (a temp file in the target's directory, fsync, then rename(2)),
so a reader sees the old bytes or the new ones, never a torn file; the origin
sends files with sendfile(2) through ``local_path``. Blocking file work runs in the
default thread pool. ETags are ``"<mtime_ns hex>-<size hex>"``, the same strong
validator aiohttp's FileResponse sends, so HEAD/304 agree with ``stat``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from stat import S_ISREG
from typing import ParamSpec, TypeVar

from metadata.objects import ObjectStat

P = ParamSpec("P")
T = TypeVar("T")
_TMP_MARK = ".cdlc-tmp-"
_KEY_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]{0,254}")


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

    def _tmp_for(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.parent / f"{_TMP_MARK}{path.name}.{uuid.uuid4().hex}"

    def _commit(self, tmp: Path, path: Path) -> None:
        os.replace(tmp, path)

    async def _io(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    def _put_file_sync(self, key: str, src: Path) -> None:
        path = self._path(key)
        tmp = self._tmp_for(path)
        try:
            shutil.copyfile(src, tmp)  # copy_file_range/sendfile in the kernel
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            self._commit(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def put_file(self, key: str, path: Path) -> None:
        await self._io(self._put_file_sync, key, Path(path))

    def _adopt_sync(self, key: str, src: Path) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, path)
        except OSError:  # another filesystem: copy, then drop the source
            self._put_file_sync(key, src)
            src.unlink(missing_ok=True)

    async def adopt_file(self, key: str, path: Path) -> None:
        """Move ``path`` into the store (a rename when on the same filesystem).
        The source is gone afterwards."""
        await self._io(self._adopt_sync, key, Path(path))

    def _adopt_tree_sync(self, prefix: str, directory: Path) -> int:
        files = [Path(root) / name for root, _, names in os.walk(directory) for name in names]
        keys = [f"{prefix}/{f.relative_to(directory).as_posix()}" for f in files]
        for key in keys:  # every key is checked before anything moves
            check_key(key)
        target = self._path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Replaces a missing or empty target; a leftover from an earlier,
            # killed job (not empty) or another filesystem takes the slow path.
            os.rename(directory, target)
        except OSError:
            for key, f in zip(keys, files, strict=True):
                self._adopt_sync(key, f)
            shutil.rmtree(directory, ignore_errors=True)
        return len(files)

    async def adopt_tree(self, prefix: str, directory: Path,
                         on_progress: Callable[[float], None] | None = None) -> int:
        count = await self._io(self._adopt_tree_sync, prefix.rstrip("/"), Path(directory))
        if on_progress is not None:
            on_progress(1.0)
        return count

    def _put_bytes_sync(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._tmp_for(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._commit(tmp, path)
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
