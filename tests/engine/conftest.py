"""Servers the engine's tests run against: Redis and an S3-compatible server
(tests/metadata/servers.py), RabbitMQ (here), and Celery workers as a user starts
them (`cdlc worker`, a process group of its own so a test can kill it whole)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.leases import claim, holder_id
from engine.pipeline import Services
from metadata.jobs import Job, JobRequest, new_job_id
from metadata.models import Asset, master_key
from tests.conftest import ROOT, CdlcEnv, kill_group
from tests.metadata.servers import redis_url, s3_endpoint, wait_port

__all__ = ["redis_url", "s3_endpoint"]


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[None]:
    """RabbitMQ on 5672, started if nothing answers there (Makefile installs it)."""
    if _answers(5672):
        yield
        return
    exe = shutil.which("rabbitmq-server")
    if exe is None:
        pytest.fail("rabbitmq-server is not installed (Makefile APT_PACKAGES)")
    subprocess.run([exe, "-detached"], check=False, capture_output=True)
    wait_port(5672, timeout=60)
    yield


@pytest.fixture
def amqp_url(rabbitmq: None) -> Iterator[str]:
    """A vhost of its own on the local RabbitMQ: queues of other tests never mix."""
    vhost = f"cdlc-{uuid.uuid4().hex[:8]}"
    ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True)


_REDIS_DBS = iter(range(6, 16))


@pytest.fixture
def redis_broker(redis_url: str) -> Iterator[str]:
    """A Redis database of its own as a Celery broker (flushed before and after)."""
    import redis

    db = next(_REDIS_DBS)
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


class Worker:
    """`cdlc worker` in a process group of its own (main process and pool child)."""

    def __init__(self, env: CdlcEnv, log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "worker", *args], env=env.env, cwd=ROOT,
                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if " ready." in text:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {text}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready: {self.log.read_text()}")

    def pids(self) -> set[int]:
        """The group's live processes (main and pool children)."""
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return {int(p) for p in out.split()}

    def kill_group(self) -> None:
        """kill -9 of the whole worker, as when its machine dies."""
        kill_group(self.proc.pid)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill_group()
        # A pool child outlives a main process that died first; left running it
        # would take later tests' tasks from a reused broker database.
        self.kill_group()


async def claimed_job(backends: Services, master: Path, asset_id: str,
                      request: JobRequest) -> Job:
    """``master`` stored as ``asset_id``'s, its job recorded on the cpu queue and
    claimed here with a 6 s lease: what a worker holds before it runs or splits it."""
    await backends.objects.put_file(master_key(asset_id), master)
    job = Job(id=new_job_id(), asset_id=asset_id, master=master_key(asset_id),
              request=request, queue="cpu")
    await backends.store.create_job(Asset(id=asset_id), job)
    taken = await claim(backends.store, job, holder_id(), 6)
    assert taken is not None
    return taken
