"""Run an nginx edge rendered by cdn/nginx.py as a child process (tests and
benchmarks). Production runs `nginx -c FILE` under its own supervisor instead.

This module imports nothing of ours except its sibling cdn/nginx.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from cdn.nginx import render_nginx_config

# Debian puts nginx in /usr/sbin, which is not on every user's PATH.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin") \
    or "nginx"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Return once something accepts TCP connections on host:port; TimeoutError if not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


class NginxEdge:
    """An nginx edge in front of `origin` on 127.0.0.1:`port` (a free one if 0),
    everything under `cache_dir`. Use as a context manager, or start()/stop().

    Extra keyword arguments go to render_nginx_config (signing_key, worker_processes,
    access_log...). Raises RuntimeError with nginx's own words if it will not start.
    """

    def __init__(
        self,
        origin: str,
        cache_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        signing_key: bytes | None = None,
        nginx: str = NGINX,
        **render_options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.cache_dir = cache_dir.resolve()
        self.conf_path = self.cache_dir / "nginx.conf"
        self.nginx = nginx
        self.text = render_nginx_config(
            origin, f"{host}:{self.port}", self.cache_dir, signing_key,
            daemon=False, **render_options,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The master process id (RuntimeError when not running)."""
        if self.proc is None:
            raise RuntimeError("nginx edge not started")
        return self.proc.pid

    @property
    def access_log(self) -> Path:
        return self.cache_dir / "access.log"

    @property
    def error_log(self) -> Path:
        return self.cache_dir / "error.log"

    def start(self, timeout: float = 10.0) -> NginxEdge:
        self.conf_path.write_text(self.text)
        os.chmod(self.conf_path, 0o600)  # it may hold the signing key
        test = subprocess.run([self.nginx, "-t", "-q", "-c", str(self.conf_path)],
                              capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t refused {self.conf_path}: {test.stderr.strip()}")
        self.proc = subprocess.Popen(
            [self.nginx, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err.strip()}")
            try:
                wait_port(self.host, self.port, timeout=0.2)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"nginx did not listen on {self.url} in {timeout}s") from None
                time.sleep(0.02)

    def reopen_logs(self) -> None:
        """Ask nginx to flush and reopen its logs (SIGUSR1)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM to the master, which stops its workers)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> NginxEdge:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
