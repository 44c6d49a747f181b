"""Job states, atomic publishing, kills, and the Celery path (issue 2 item 6)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cdn.edge import free_port
from engine.config import Settings
from engine.pipeline import IngestError, IngestOptions, ingest
from engine.services import open_backends
from metadata.models import JobState
from tests.conftest import ROOT, CdlcEnv, http_status, make_env
from tests.media import make_master


@pytest.fixture(scope="module")
def small_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_master(tmp_path_factory.mktemp("jobs") / "small.mp4", seconds=6,
                       width=640, height=360)


class StateLog:
    """on_progress for ingest(): the distinct states in the order they came."""

    def __init__(self) -> None:
        self.seen: list[JobState] = []

    def __call__(self, state: JobState, _fraction: float) -> None:
        if not self.seen or self.seen[-1] != state:
            self.seen.append(state)


def test_states_in_order_and_persisted(tmp_path: Path, small_master: Path) -> None:
    settings = Settings(data_dir=tmp_path, preset="ultrafast")
    on_progress = StateLog()
    seen = on_progress.seen

    async def run() -> None:
        backends = open_backends(settings)
        try:
            asset = await ingest(backends, "states", small_master,
                                 IngestOptions(ladder="360:600,240:300", preset="ultrafast"),
                                 on_progress=on_progress)
            assert asset.state == JobState.READY
            stored = await backends.store.get_asset("states")
            assert stored is not None and stored.state == JobState.READY
            assert stored.version >= 1
            assert {r.id for r in await backends.store.get_renditions("states")} == \
                {"v360", "v240", "audio", "storyboard"}
        finally:
            await backends.close()

    asyncio.run(run())
    # TRANSCODING appears through progress callbacks from the native thread.
    assert seen[0] == JobState.PROBING
    assert seen[-1] == JobState.READY
    assert [s for s in seen if s in (JobState.PACKAGING, JobState.PUBLISHING)] == \
        [JobState.PACKAGING, JobState.PUBLISHING]


def test_copy_job_in_process_states_publish_and_failure(tmp_path: Path,
                                                        small_master: Path) -> None:
    """A package-only job run by the pipeline itself (the executor's and the admin
    upload's path: no copy started by the CLI) goes PROBING -> PACKAGING ->
    PUBLISHING -> READY; one that fails leaves its work directory empty."""
    settings = Settings(data_dir=tmp_path)
    on_progress = StateLog()

    async def run() -> None:
        backends = open_backends(settings)
        try:
            asset = await ingest(backends, "copyjob", small_master,
                                 IngestOptions(copy=True, segment_seconds=2.0),
                                 on_progress=on_progress)
            assert asset.state == JobState.READY
            assert {r.id for r in await backends.store.get_renditions("copyjob")} == \
                {"v360", "audio", "storyboard"}
            noise = tmp_path / "noise.mp4"
            noise.write_bytes(bytes(range(256)) * 512)
            with pytest.raises(IngestError, match=r"noise\.mp4"):
                await ingest(backends, "copybad", noise, IngestOptions(copy=True))
            failed = await backends.store.get_asset("copybad")
            assert failed is not None and failed.state == JobState.FAILED
        finally:
            await backends.close()

    asyncio.run(run())
    assert on_progress.seen == [JobState.PROBING, JobState.PACKAGING, JobState.PUBLISHING,
                                JobState.READY]
    assert list(settings.work_dir.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "objects" / "media" / "copyjob").iterdir()) == \
        ["audio", "storyboard", "v360"]


def test_killed_ingest_leaves_nothing_served(tmp_path: Path, small_master: Path) -> None:
    """SIGKILL the CLI mid-job: the asset never turns READY and the origin 404s."""
    env = make_env(tmp_path / "data", CDLC_PRESET="medium")
    big = make_master(tmp_path / "long.mp4", seconds=20, width=1280, height=720)
    log = tmp_path / "ingest.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "ingest", str(big), "--id",
                                 "killed"], env=env.env, cwd=ROOT,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        state, last = "", ""
        while time.monotonic() < deadline:
            out = env.run("status", "killed", "--json")
            last = out.stderr
            if out.returncode == 0:
                state = json.loads(out.stdout)["state"]
                if state == "transcoding":
                    break
            time.sleep(0.2)
        assert state == "transcoding", (last, log.read_text())
    finally:
        proc.kill()  # SIGKILL: no cleanup runs, as when a worker machine dies
        proc.wait()
    status = json.loads(env.run("status", "killed", "--json").stdout)
    assert status["state"] != "ready"
    assert status["renditions"] == []
    port = free_port()
    server = env.serve(port)
    try:
        for path in ("master.m3u8", "manifest.mpd", "v720/init.mp4", "v720/1.m4s"):
            assert http_status(f"http://127.0.0.1:{port}/vod/killed/{path}") == 404
    finally:
        server.terminate()
        server.wait(timeout=10)
    # A new attempt with the same id succeeds: the dead attempt is replaced, not merged.
    proc2 = env.run("ingest", str(small_master), "--id", "killed", "--ladder", "360:500")
    assert proc2.returncode == 0, proc2.stderr


def test_reingest_of_a_ready_asset_is_refused(cdlc_env: CdlcEnv, small_master: Path) -> None:
    first = cdlc_env.run("ingest", str(small_master), "--id", "twice", "--ladder", "240:300")
    assert first.returncode == 0, first.stderr
    again = cdlc_env.run("ingest", str(small_master), "--id", "twice", "--ladder", "240:300")
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_celery_worker_runs_the_job(tmp_path: Path, small_master: Path, redis_url: str) -> None:
    """CDLC_BROKER set: the CLI queues the job, a Celery worker (another process)
    runs it through the shared store, and the CLI exits 0 when it is READY."""
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast",
                   CDLC_BROKER=redis_url.rsplit("/", 1)[0] + "/5")
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "engine.celery_app", "worker", "-Q", "cpu",
             "--pool", "solo", "--concurrency", "1", "--without-heartbeat", "--without-gossip",
             "--without-mingle", "-l", "WARNING"],
            env=env.env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        proc = env.run("ingest", str(small_master), "--id", "queued", "--ladder", "240:300",
                       "--json", timeout=180)
        assert proc.returncode == 0, proc.stderr + log.read_text()
        result = json.loads(proc.stdout)
        assert result["state"] == "ready"
        assert {r["id"] for r in result["renditions"]} == {"v240", "audio", "storyboard"}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_admin_upload_runs_the_job(tmp_path: Path, small_master: Path) -> None:
    """POST /v1/assets on `cdlc serve`: the in-process executor ingests the upload."""
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast", CDLC_API_KEY="k3y")
    port = free_port()
    server = env.serve(port)
    base = f"http://127.0.0.1:{port}"
    try:
        boundary = "cdlcboundary"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\nuploaded\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"ladder\"\r\n\r\n240:300\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"small.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
        ).encode() + small_master.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        assert http_status(f"{base}/v1/assets", body, headers, "POST") == 401
        headers["Authorization"] = "Bearer k3y"
        assert http_status(f"{base}/v1/assets", body, headers, "POST") in (201, 202)
        deadline = time.monotonic() + 120
        state = ""
        while time.monotonic() < deadline and state not in ("ready", "failed"):
            read = urllib.request.Request(f"{base}/v1/assets/uploaded",
                                          headers={"Authorization": "Bearer k3y"})
            with urllib.request.urlopen(read, timeout=10) as resp:
                state = json.loads(resp.read())["state"]
            time.sleep(0.3)
        assert state == "ready"
        assert http_status(f"{base}/vod/uploaded/master.m3u8") == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
