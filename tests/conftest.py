"""Fixtures shared by every test folder: free ports, the `cdlc` CLI run as a user
runs it (a subprocess with CDLC_* in its environment), and `cdlc serve`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cdn.edge import free_port
from tests.metadata.servers import ServerProcess, own_moto

ROOT = Path(__file__).resolve().parent.parent
CDLC = [sys.executable, "-m", "engine.cli"]
# Every `cdlc serve` a test starts leaves the gRPC port (50051 by default) alone
# unless the test asks for one: several servers run at once in the suite.
os.environ["CDLC_GRPC_PORT"] = "0"
# The suite's jobs plan the fixed ladder (its rendition ids, a second faster per
# ingest) unless a test asks for another; the deployment default (auto) has tests
# of its own (tests/engine/test_pertitle.py).
os.environ["CDLC_LADDER"] = "fixed"


def kill_group(group: int) -> None:
    """kill -9 of every process left in a process group (none left: nothing)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount(8) syntax: "12m") at ``mount`` (made here): a disk
    that fills. Skips the test where mounting is not allowed."""
    mount.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.1)


def http_status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
                method: str | None = None) -> int:
    """Status code of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class CdlcEnv:
    """A data dir and the environment the CLI runs with."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CDLC, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout,
        )

    def serve(self, port: int, *extra: str) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / f"serve-{port}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [*CDLC, "serve", "--host", "127.0.0.1", "--port", str(port), *extra],
                env=self.env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
        except TimeoutError as exc:
            proc.kill()
            raise TimeoutError(f"{exc}; server log:\n{log.read_text()}") from None
        return proc


def make_env(data_dir: Path, **overrides: str) -> CdlcEnv:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDLC_")}
    env["CDLC_DATA_DIR"] = str(data_dir)
    env["CDLC_GRPC_PORT"] = "0"
    env["CDLC_LADDER"] = "fixed"  # as in this process (above)
    env.update(overrides)
    return CdlcEnv(data_dir, env)


@pytest.fixture
def moto() -> Iterator[ServerProcess]:
    """A moto S3 server of the test's own, to hang (pause), kill or restart."""
    server = own_moto().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cdlc_env(tmp_path_factory: pytest.TempPathFactory) -> CdlcEnv:
    """One embedded-defaults data dir for the session (SQLite + local objects)."""
    return make_env(tmp_path_factory.mktemp("cdlc-data"), CDLC_PRESET="ultrafast")


@pytest.fixture(scope="session")
def origin_url(cdlc_env: CdlcEnv) -> Iterator[str]:
    """`cdlc serve` over the session data dir."""
    port = free_port()
    proc = cdlc_env.serve(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
