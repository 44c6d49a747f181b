"""origin.server.run: several worker processes on one port (SO_REUSEPORT), metrics
summed over workers, graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
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


async def test_two_workers_serve_and_stop_gracefully(tmp_path: Path, media: Media) -> None:
    store, objects = open_store("", tmp_path), open_objects("", tmp_path)
    await publish_fake(store, objects, "srv1", media)
    await store.close()
    port = free_port()
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
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
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
