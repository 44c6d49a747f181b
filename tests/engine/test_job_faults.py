"""Every job ends, whatever happens to the process running it (docs/jobs.md):
kill -9 of `cdlc serve` or `cdlc ingest` mid-job, a data dir that fills up. The
next process to start sweeps: the job runs again or fails with its reason, the
dead run's scratch is gone, and nothing half-done is served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdn.edge import free_port
from tests.conftest import ROOT, CdlcEnv, http_status, make_env, tmpfs
from tests.media import ffprobe, make_master

LADDER = "360:600,240:300"


def upload(base: str, master: Path, asset_id: str, **fields: str) -> int:
    boundary = "cdlcfaults"
    parts = "".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        for k, v in {"id": asset_id, **fields}.items())
    body = (parts + f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{master.name}\"\r\nContent-Type: video/mp4\r\n\r\n").encode() \
        + master.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return http_status(f"{base}/v1/assets", body,
                       {"Content-Type": f"multipart/form-data; boundary={boundary}"}, "POST")


def asset_doc(base: str, asset_id: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base}/v1/assets/{asset_id}", timeout=10) as resp:
        doc: dict[str, object] = json.loads(resp.read())
        return doc


def wait_state(base: str, asset_id: str, states: set[str], timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    doc: dict[str, object] = {}
    while time.monotonic() < deadline:
        doc = asset_doc(base, asset_id)
        if doc["state"] in states:
            return doc
        time.sleep(0.2)
    raise AssertionError(f"{asset_id} never reached {states}: {doc}")


def jobs(env: CdlcEnv, *args: str) -> list[dict[str, object]]:
    proc = env.run("jobs", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    out: list[dict[str, object]] = json.loads(proc.stdout)
    return out


@pytest.fixture(scope="module")
def long_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_master(tmp_path_factory.mktemp("faults") / "long.mp4", seconds=16,
                       width=1280, height=720)


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[CdlcEnv]:
    yield make_env(tmp_path / "data", CDLC_PRESET="medium", CDLC_LEASE_SECONDS="6")


def test_kill_9_of_serve_mid_job_runs_the_job_again_on_restart(
        serve_env: CdlcEnv, long_master: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve_env.serve(port)
    try:
        assert upload(base, long_master, "again", ladder=LADDER) == 202
        wait_state(base, "again", {"transcoding"}, 60)
    finally:
        server.kill()  # SIGKILL mid-transcode: no cleanup runs
        server.wait()
    work = serve_env.data_dir / "work"
    assert any(work.iterdir()), "the dead run left its scratch (what the sweep must remove)"
    (job,) = jobs(serve_env, "--asset", "again")
    # `cdlc jobs` is a process that starts: it already swept the dead holder's job.
    assert job["state"] == "queued" and "died" in str(job["error"]), job
    server = serve_env.serve(port)
    try:
        doc = wait_state(base, "again", {"ready", "failed"}, 120)
        assert doc["state"] == "ready", doc
        assert http_status(f"{base}/vod/again/master.m3u8") == 200
        probe = ffprobe(f"{base}/vod/again/v360/media.m3u8", "-show_entries", "format=duration")
        assert float(probe["format"]["duration"]) == pytest.approx(16, abs=0.5)
        (job,) = jobs(serve_env, "--asset", "again")
        assert job["state"] == "ready" and job["attempt"] == 2, job
        assert sorted(p.name for p in work.iterdir()) == []
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_kill_9_of_ingest_fails_its_job_and_sweeps_its_scratch(
        tmp_path: Path, long_master: Path) -> None:
    env = make_env(tmp_path / "data", CDLC_PRESET="medium")
    log = tmp_path / "ingest.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "ingest", str(long_master),
                                 "--id", "dead", "--ladder", LADDER], env=env.env, cwd=ROOT,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = env.run("status", "dead", "--json")
            if out.returncode == 0 and json.loads(out.stdout)["state"] == "transcoding":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
    finally:
        proc.kill()
        proc.wait()
    staged = env.data_dir / "uploads" / f"upload-x.{proc.pid}.part"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"half an upload of the dead process")
    # `status` is the first command after the kill: it sweeps too (it showed the
    # dead job as still transcoding).
    status = json.loads(env.run("status", "dead", "--json").stdout)
    assert status["state"] == "failed" and status["renditions"] == []
    (job,) = jobs(env, "--asset", "dead")
    assert job["state"] == "failed", job
    assert f":{proc.pid}:" in str(job["error"]) and "died" in str(job["error"])
    assert "gave up after 1 attempt" in str(job["error"])
    assert list((env.data_dir / "work").iterdir()) == []
    assert not staged.exists()
    listing = env.run("list", "--state", "failed")
    assert listing.returncode == 0 and listing.stdout.startswith("dead ")
    # The id is free again: a failed asset takes a new job.
    small = make_master(tmp_path / "small.mp4", seconds=2, width=320, height=240)
    again = env.run("ingest", str(small), "--id", "dead", "--ladder", "240:300")
    assert again.returncode == 0, again.stderr


def test_an_ingest_stopped_past_its_lease_ends_in_one_line(
        tmp_path: Path, long_master: Path) -> None:
    """SIGSTOP mid-transcode past the lease, another command sweeps the job FAILED,
    SIGCONT: the ingest finds its job taken over and stops, exit 1 with one line (it
    was StaleJob's traceback), and nothing is published."""
    env = make_env(tmp_path / "data", CDLC_PRESET="medium", CDLC_LEASE_SECONDS="2")
    err = tmp_path / "ingest.err"
    with err.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "ingest", str(long_master),
                                 "--id", "stalled", "--ladder", LADDER], env=env.env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = env.run("status", "stalled", "--json")
            if out.returncode == 0 and json.loads(out.stdout)["state"] == "transcoding":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(err.read_text())
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3)  # past the 2 s lease
        (job,) = jobs(env, "--asset", "stalled")
        assert job["state"] == "failed", job
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=60) == 1
    finally:
        proc.kill()
        proc.wait()
    lines = err.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cdlc: error: ") and "taken over" in lines[0], lines
    status = json.loads(env.run("status", "stalled", "--json").stdout)
    assert status["state"] == "failed" and status["renditions"] == []


def test_retry_and_delete_from_the_command_line(tmp_path: Path) -> None:
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=240)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(master.read_bytes()[: master.stat().st_size // 3])
    first = env.run("ingest", str(broken), "--id", "rt", "--ladder", "240:300")
    assert first.returncode == 2 and len(first.stderr.strip().splitlines()) == 1
    assert env.run("retry", "nope").returncode == 1
    busy = env.run("ingest", str(master), "--id", "rt2", "--ladder", "240:300")
    assert busy.returncode == 0
    refused = env.run("retry", "rt2")
    assert refused.returncode == 2 and "only a failed job" in refused.stderr
    broken.write_bytes(master.read_bytes())  # the master is mended where the job finds it
    retried = env.run("retry", "rt")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(env.run("status", "rt", "--json").stdout)["state"] == "ready"
    assert [j["state"] for j in jobs(env, "--asset", "rt")] == ["failed", "ready"]
    assert env.run("delete", "rt").returncode == 0
    assert env.run("status", "rt").returncode == 1
    gone = env.run("delete", "rt")
    assert gone.returncode == 1 and gone.stderr.strip() == "cdlc: error: no asset rt"
    assert not (env.data_dir / "objects" / "media" / "rt").exists()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs as the data dir: room for the metadata and a start, not a ladder."""
    with tmpfs(tmp_path / "tmpfs", "12m") as mount:
        yield mount


def test_full_disk_is_one_line_and_failed_with_scratch_freed(
        full_disk: Path, tmp_path: Path) -> None:
    master = make_master(tmp_path / "big.mp4", seconds=12, width=1280, height=720)
    env = make_env(full_disk / "data", CDLC_PRESET="ultrafast")
    proc = env.run("ingest", str(master), "--id", "full", "--ladder", "720:20000,480:10000")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cdlc: error: no space left on device in ")
    assert "while transcoding" in lines[0] or "while publishing" in lines[0]
    status = json.loads(env.run("status", "full", "--json").stdout)
    assert status["state"] == "failed" and "no space left" in status["error"]
    assert list((env.data_dir / "work").iterdir()) == []
    assert not (env.data_dir / "objects" / "media" / "full").exists()
    assert os.statvfs(full_disk).f_bavail > 0
    # With room again the same data dir serves and takes a smaller job.
    small = make_master(tmp_path / "small.mp4", seconds=2, width=320, height=240)
    again = env.run("ingest", str(small), "--id", "fits", "--ladder", "240:300")
    assert again.returncode == 0, again.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs as the data dir: room for the metadata and a short copy."""
    with tmpfs(tmp_path / "tmpfs", "3m") as mount:
        yield mount


def test_full_disk_under_a_copy_is_one_line(tiny_disk: Path, tmp_path: Path) -> None:
    """`--copy` starts packaging before the store opens; when that fills the disk the
    store's own write fails (sqlite3's "database or disk is full", which was a
    traceback): one line, exit 1, the copy's output removed, the data dir usable."""
    master = make_master(tmp_path / "long.mp4", seconds=40, width=640, height=360)
    assert master.stat().st_size > 4 * 2**20, master.stat().st_size
    env = make_env(tiny_disk / "data", CDLC_PRESET="ultrafast")
    proc = env.run("ingest", str(master), "--id", "full", "--copy")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cdlc: error: no space left on device in "), lines
    assert list((env.data_dir / "work").iterdir()) == []
    assert not (env.data_dir / "objects" / "media" / "full").exists()
    small = make_master(tmp_path / "small.mp4", seconds=2, width=320, height=240)
    again = env.run("ingest", str(small), "--id", "fits", "--copy")
    assert again.returncode == 0, again.stderr


def test_serve_start_up_errors_are_one_line(tmp_path: Path) -> None:
    busy = free_port()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import socket,time;s=socket.socket();"
                               f"s.bind(('127.0.0.1',{busy}));s.listen();time.sleep(60)"])
    try:
        time.sleep(0.3)
        cases = [
            ({}, ["--port", str(busy)], f"cannot listen on 127.0.0.1:{busy}: already in use"),
            ({"CDLC_STORAGE": "ftp://x"}, [], "CDLC_STORAGE='ftp://x': unknown storage URL"),
            ({"CDLC_EVENTS": "bogus://x"}, [], "CDLC_EVENTS='bogus://x': unknown event log URL"),
            ({"CDLC_BROKER": f"redis://127.0.0.1:{free_port()}/0"}, [], "is unreachable"),
            ({}, ["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0: no auth is configured"),
            ({"CDLC_LEASE_SECONDS": "0"}, [], "CDLC_LEASE_SECONDS"),
        ]
        for extra_env, args, says in cases:
            e = make_env(tmp_path / "data", **extra_env)
            proc = e.run("serve", "--port", str(free_port()), *args, timeout=30)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode in (1, 2) and len(lines) == 1 and says in lines[0], \
                (extra_env, args, proc.stderr)
        # A data dir nobody may write, root included (/proc takes no new entries).
        proc = make_env(Path("/proc/cdlc-data")).run("serve", "--port", str(free_port()),
                                                     timeout=30)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("cdlc: error: data dir /proc/cdlc-data is not writable")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
