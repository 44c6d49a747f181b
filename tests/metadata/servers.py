"""Real servers for the backend tests: Redis (the one at 127.0.0.1:6379, started
here when none runs) and an S3-compatible server (moto in server mode on a free
127.0.0.1 port, or the one named by CDLC_TEST_S3_ENDPOINT)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdn.edge import free_port
from cdn.edge import wait_port as wait_host_port


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Something accepts connections on 127.0.0.1:port (TimeoutError if not)."""
    wait_host_port("127.0.0.1", port, timeout)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """redis://127.0.0.1:6379/0, starting redis-server if nothing answers there.
    Tests use unique keys (no FLUSHDB: the server may be shared)."""
    proc = None
    if not _redis_answers(6379):
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (Makefile APT_PACKAGES)")
        proc = subprocess.Popen(
            [exe, "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(6379)
    yield "redis://127.0.0.1:6379/0"
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible endpoint with test credentials in the environment."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    given = os.environ.get("CDLC_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_bucket(endpoint: str) -> str:
    """A fresh bucket on the endpoint (boto3, synchronous)."""
    import boto3

    name = f"cdlc-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


class ServerProcess:
    """A server this test started and owns (so it may stop, hang or kill it):
    ``pause()`` is SIGSTOP (a hung server: connections accepted by the kernel,
    never answered), ``resume()`` SIGCONT, ``kill()`` SIGKILL."""

    def __init__(self, args: list[str], port: int, url: str) -> None:
        self.args, self.port, self.url = args, port, url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def pause(self) -> None:
        import signal

        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        import signal

        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def own_moto(port: int = 0) -> ServerProcess:
    """A moto S3 server of the caller's own on 127.0.0.1 (a free port unless
    given: restart one on its old port to bring it back). Credentials as for
    s3_endpoint."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = port or free_port()
    exe = Path(sys.executable).parent / "moto_server"
    return ServerProcess([str(exe), "-H", "127.0.0.1", "-p", str(port)], port,
                         f"http://127.0.0.1:{port}")


def own_redis(port: int = 0) -> ServerProcess:
    """A redis-server of the caller's own on 127.0.0.1 (no persistence)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (Makefile APT_PACKAGES)")
    port = port or free_port()
    return ServerProcess([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], port, f"redis://127.0.0.1:{port}/0")


@pytest.fixture
def redis_server() -> Iterator[ServerProcess]:
    """A redis-server of this test's own (own_redis), to hang or kill; stopped after."""
    server = own_redis().start()
    yield server
    server.stop()


class Relay:
    """A TCP relay on a free 127.0.0.1 port in front of a server of the test's own
    (``start()`` it): it counts the bytes the server sends back (``sent``), and
    while ``cut_after`` is set it cuts every response after that many bytes (both
    sockets closed: a connection that drops mid-body, on every reconnection too).
    With ``refuse``, once a response was cut, every new connection is closed at once
    (the server gone for good mid-read). While ``hung`` is set, bytes either way are
    read and held, not passed on (a server that takes connections and answers
    nothing, as under SIGSTOP); cleared, what was held goes on in order."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.cut_after: int | None = None
        self.refuse = False
        self.hung = False
        self.cuts = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        threading.Thread(target=self._accept, daemon=True).start()
        wait_port(self.port)
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.refuse and self.cuts:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, None, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.cut_after, True),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None,
              count: bool) -> None:
        relayed = 0
        try:
            while data := src.recv(65536):
                while self.hung:
                    time.sleep(0.02)
                if limit is not None and relayed + len(data) >= limit:
                    dst.sendall(data[:max(0, limit - relayed)])
                    self.cuts += 1
                    break
                dst.sendall(data)
                relayed += len(data)
                if count:
                    with self._lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._server.close()
