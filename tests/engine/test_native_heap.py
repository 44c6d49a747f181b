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
from pathlib import Path

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


# A job's thread frees a large codec buffer (glibc raises its mmap threshold to
# that size), then works in blocks just under it in its own arena and frees
# them: the arena keeps that free memory at its top, where malloc_trim does not
# reach. `bound` says whether the child fixes the thresholds first.
THREAD_ARENA = textwrap.dedent("""
    import ctypes, json, sys, threading
    from engine.native_heap import bound_kept_memory, release_free_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    MIB = 1024 * 1024

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "bound":
        assert bound_kept_memory()
    elif sys.argv[1] == "executor":
        import asyncio
        from pathlib import Path
        from engine.config import Settings
        from engine.executor import InProcessExecutor
        from engine.pipeline import Services
        from metadata import open_cache, open_objects, open_store

        async def start_and_close():
            data = Path(sys.argv[2])
            store = open_store("", data)
            services = Services(store=store, objects=open_objects("", data),
                                cache=open_cache(""), work_dir=data / "w")
            executor = InProcessExecutor(Settings(data_dir=data), services)
            await executor.start()
            await executor.close()
            await store.close()
        asyncio.run(start_and_close())
    figures = {}

    def job():
        big = libc.malloc(16 * MIB)
        ctypes.memset(big, 1, 16 * MIB)
        libc.free(big)
        before = rss_mib()
        blocks = [libc.malloc(MIB) for _ in range(24)]
        for b in blocks:
            ctypes.memset(b, 1, MIB)
        for b in blocks:
            libc.free(b)
        release_free_memory()
        figures["kept"] = rss_mib() - before

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    print(json.dumps(figures))
""")


def _kept_by_thread_arena(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", THREAD_ARENA, mode], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return float(json.loads(out)["kept"])


def test_bounded_thresholds_keep_a_job_threads_arena_from_holding_freed_memory() -> None:
    # glibc's own dynamic thresholds: the freed 24 MiB stay resident, trim or not.
    assert _kept_by_thread_arena("dynamic") > 16
    # Fixed thresholds: the blocks were mmapped and went straight back.
    assert _kept_by_thread_arena("bound") < 4


def test_a_started_in_process_executor_bounds_the_heap(tmp_path: Path) -> None:
    # The serving process's executor (a real one over SQLite and a local store)
    # fixes the thresholds when it starts: the same job thread then keeps nothing.
    out = subprocess.run([sys.executable, "-c", THREAD_ARENA, "executor", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert float(json.loads(out)["kept"]) < 4
