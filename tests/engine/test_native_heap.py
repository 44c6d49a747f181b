"""engine.native_heap: the memory a job freed goes back to the OS.

The fault it guards against is glibc keeping freed heap pages that a process's
later small allocations pin: a serving process grew with every job it ran. The
test builds that heap shape with the C allocator itself (in a child process, so
this one's heap is not measured): 96 MiB of blocks freed below a block still in
use, which the allocator's own top-of-heap trimming cannot give back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from engine.native_heap import release_free_memory

CHILD = textwrap.dedent("""
    import ctypes, json
    from engine.native_heap import release_free_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    block = 64 * 1024  # under the mmap threshold: these come from the heap
    blocks = [libc.malloc(block) for _ in range(96 * 16)]
    for b in blocks:
        ctypes.memset(b, 1, block)  # touched: resident
    pin = libc.malloc(block)  # above them all, still in use
    ctypes.memset(pin, 1, block)
    for b in blocks:
        libc.free(b)
    freed = rss_mib()
    ok = release_free_memory()
    print(json.dumps({"freed": freed, "released": rss_mib(), "ok": ok}))
""")


def test_freed_heap_below_a_live_block_goes_back_to_the_os() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    figures = json.loads(out)
    assert figures["ok"] is True
    # Without the release the freed 96 MiB stay resident (glibc cannot trim
    # below the live block); with it, nearly all of it is gone.
    assert figures["freed"] - figures["released"] > 64, figures


def test_release_is_safe_to_call_repeatedly() -> None:
    assert release_free_memory() is True
    assert release_free_memory() is True
