"""Real servers for the backend tests: Redis (the one at 127.0.0.1:6379, started
here when none runs) and an S3-compatible server (moto in server mode on a free
127.0.0.1 port, or the one named by CDLC_TEST_S3_ENDPOINT)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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
