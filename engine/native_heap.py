"""Hand the memory a finished job freed back to the operating system.

A transcode allocates and frees hundreds of MiB of frame and encoder buffers in
the C libraries (libav*, x264). glibc keeps freed heap pages mapped for reuse,
and while the process also serves requests, their small allocations settle among
those pages, so the freed memory can no longer be returned by the heap's normal
top-of-heap trimming: a serving process that runs jobs grew ~8 MiB a job under
load (bench/soak), all of it freed-but-kept heap (`malloc_trim` gave it back).
So after each job the process asks glibc to release every free page of every
arena. Elsewhere (musl, macOS) this is a no-op.

The trim alone did not make a serving process flat: glibc's thresholds are
dynamic. Freeing one large mmapped block (a codec's frame buffer) raises the
mmap threshold to that block's size and the trim threshold to twice it, up to
32 and 64 MiB, so from then on each thread's arena keeps that much free memory
at its top, and ``malloc_trim`` does not trim a thread arena's top. Every
thread that ran a job left its arena holding some, so RSS crept up as jobs met
new threads (bench/soak: +7 MiB a minute of deletes and re-ingests). A serving
process therefore fixes both thresholds at start (``bound_kept_memory``), which
also turns the dynamic adjustment off: each arena then keeps at most
``TRIM_THRESHOLD`` free at its top, and blocks from ``MMAP_THRESHOLD`` up go
straight back to the OS when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _libc(name: str, *argtypes: type[ctypes._SimpleCData[int]]) -> Callable[..., int] | None:
    """The C library's function ``name`` (returning int), or None outside glibc."""
    lib = ctypes.util.find_library("c")
    if lib is None:
        return None
    try:
        fn = ctypes.CDLL(lib)[name]
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


_TRIM = _libc("malloc_trim", ctypes.c_size_t)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Large enough that per-frame packet buffers stay in the arenas (no mmap and page
# faults per packet), small enough that 16 arenas keep at most ~16 MiB free.
MMAP_THRESHOLD = 512 * 1024
TRIM_THRESHOLD = 1024 * 1024


_MALLOPT = _libc("mallopt", ctypes.c_int, ctypes.c_int)


def bound_kept_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (module docstring) for a process that
    runs jobs and lives on. True when the C library took both settings."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and _MALLOPT(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_free_memory() -> bool:
    """malloc_trim(0): return free heap pages of every arena to the OS. True when
    the C library supports it (whether or not anything was released)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
