"""origin.server.run: several worker processes on one port (SO_REUSEPORT), metrics
summed over workers, graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from cdn.edge import free_port
from metadata import open_objects, open_store
from tests.metadata.servers import wait_port
from tests.origin.conftest import Media, publish_fake


async def _two_workers(tmp_path: Path, media: Media, asset_id: str,
                       port: int) -> subprocess.Popen[bytes]:
    """origin.server.run with two workers on ``port`` over a data dir holding one
    published asset."""
    store, objects = open_store("", tmp_path), open_objects("", tmp_path)
    await publish_fake(store, objects, asset_id, media)
    await store.close()
    code = textwrap.dedent(f"""
        from pathlib import Path
        from metadata import open_cache, open_objects, open_store
        from origin.app import OriginDeps, create_app
        from origin.server import run

        async def factory():
            d = Path({str(tmp_path)!r})
            return create_app(OriginDeps(open_store("", d), open_objects("", d), open_cache(""),
                                 close_backends=True))

        run(factory, "127.0.0.1", {port}, 2)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])


async def test_two_workers_serve_and_stop_gracefully(tmp_path: Path, media: Media) -> None:
    port = free_port()
    proc = await _two_workers(tmp_path, media, "srv1", port)
    try:
        await asyncio.to_thread(wait_port, port, 30)
        expected = media.file("v240", "1.m4s")
        for _ in range(20):  # a new connection each time: the kernel spreads them
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/vod/srv1/v240/1.m4s") as resp:
                    assert resp.status == 200
                    assert await resp.read() == expected
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
        # Summed over both workers, whichever one answers /metrics.
        assert 'cdlc_origin_requests_total{route="segment",status="200"} 20.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert time.monotonic() - started < 15
    with pytest.raises(OSError):
        wait_port(port, timeout=0.2)


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc)."""
    out: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port`` (IPv4)."""
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
            inodes.add(cols[9])
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return False
    return any(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


async def _serving(parent: int, port: int) -> set[int]:
    """The parent's two workers, once both listen."""
    for _ in range(300):
        now = _children(parent)
        if len(now) == 2 and all(_listening(pid, port) for pid in now):
            return now
        await asyncio.sleep(0.1)
    raise AssertionError(f"workers not listening: {_children(parent)}")


async def test_kill_9_of_one_worker_keeps_serving_and_a_new_one_starts(
        tmp_path: Path, media: Media) -> None:
    """A worker killed mid-flight: the other answers every request meanwhile, the
    parent starts a replacement, and the whole server still stops cleanly. Killed
    within its first 2 s here: before, the parent took that for a failed start and
    stopped the whole server."""
    port = free_port()
    proc = await _two_workers(tmp_path, media, "srv2", port)
    url = f"http://127.0.0.1:{port}/vod/srv2/v240/1.m4s"
    expected = media.file("v240", "1.m4s")

    async def get() -> None:
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == expected

    try:
        await asyncio.to_thread(wait_port, port, 30)
        first = await _serving(proc.pid, port)
        await get()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        while victim in _children(proc.pid):  # until the kernel has torn it down
            await asyncio.sleep(0.01)
        # Every request from then on is answered (a new connection each: the kernel
        # hands none to the dead worker's closed socket). Connections it had taken
        # but not answered are lost with it, as with any SO_REUSEPORT server.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            await get()
            now = _children(proc.pid)
            if len(now) == 2 and victim not in now and all(_listening(p, port) for p in now):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no replacement for worker {victim}: {_children(proc.pid)}")
        for _ in range(10):
            await get()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0


def test_workers_that_fail_at_start_stop_the_server_with_exit_1(tmp_path: Path) -> None:
    """A worker whose app cannot be built exits 1 at start: the parent stops, not
    restarting it in a loop, and its own exit says it failed (it was 0)."""
    code = textwrap.dedent(f"""
        from origin.server import run

        async def factory():
            raise RuntimeError("no app today")

        run(factory, "127.0.0.1", {free_port()}, 2)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "exited at start (1); stopping" in proc.stderr
    assert proc.stderr.count("no app today") >= 1
