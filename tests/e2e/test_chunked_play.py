"""A film encoded in chunks on two Celery workers, one of them killed (kill -9 of
the whole worker) mid-chunk, plays in hls.js: the stitched segment index is one
stream to a real player, start to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cdn.edge import free_port
from tests.conftest import ROOT
from tests.engine.conftest import Worker, redis_broker, redis_url
from tests.engine.test_chunked_jobs import chunked_env, start_workers
from tests.media import make_master

__all__ = ["redis_broker", "redis_url"]


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def test_chunked_asset_after_a_killed_worker_plays_in_hlsjs(
        tmp_path: Path, redis_broker: str, workers: list[Worker], browser_context: Any,
        page_origin: str) -> None:
    master = make_master(tmp_path / "film.mp4", seconds=16, width=960, height=540, fps="25")
    env = chunked_env(tmp_path, redis_broker, CDLC_PRESET="medium")
    victim, _ = start_workers(env, workers, 2, "--class", "cpu")
    ingest = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "ingest", str(master), "--id", "film",
         "--ladder", "540:1500,270:400"], env=env.env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 60:
            jobs = json.loads(env.run("jobs", "--json").stdout or "[]")
            pids = victim.pids()
            if any(int(h.split(":")[1]) in pids for j in jobs for h in j["holders"]):
                break
            time.sleep(0.2)
        victim.kill_group()
        _, err = ingest.communicate(timeout=120)
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
    assert ingest.returncode == 0, err
    port = free_port()
    server = env.serve(port)
    page = browser_context.new_page()
    try:
        src = f"http://127.0.0.1:{port}/vod/film/master.m3u8"
        page.goto(f"{page_origin}/player.html?player=hlsjs&src={quote(src, safe='')}")
        page.wait_for_function("document.getElementById('video').currentTime > 0.5",
                               timeout=30_000)
        duration = page.evaluate("document.getElementById('video').duration")
        assert duration == pytest.approx(16, abs=0.3)
        # Past a chunk boundary (8 s), and the last chunk: seek near the end.
        page.wait_for_function("document.getElementById('video').currentTime > 9",
                               timeout=30_000)
        page.evaluate("document.getElementById('video').currentTime = 13")
        page.wait_for_function("document.getElementById('video').currentTime > 14.5",
                               timeout=30_000)
        errors = page.evaluate("E2E.errors")
        assert not [e for e in errors if e["fatal"]], errors
    finally:
        page.close()
        server.terminate()
        server.wait(timeout=20)
