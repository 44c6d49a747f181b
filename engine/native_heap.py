"""Hand the memory a finished job freed back to the operating system.

A transcode allocates and frees hundreds of MiB of frame and encoder buffers in
the C libraries (libav*, x264). glibc keeps freed heap pages mapped for reuse,
and while the process also serves requests, their small allocations settle among
those pages, so the freed memory can no longer be returned by the heap's normal
top-of-heap trimming: a serving process that runs jobs grew ~8 MiB a job under
load (bench/soak), all of it freed-but-kept heap (`malloc_trim` gave it back).
So after each job the process asks glibc to release every free page of every
arena. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """malloc_trim(0): return free heap pages of every arena to the OS. True when
    the C library supports it (whether or not anything was released)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
