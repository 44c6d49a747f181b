"""Processes the edge and player tests start: the real origin (tests/e2e/
origin_main.py) and the nginx edge (cdn.edge.NginxEdge)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from cdn.edge import free_port, wait_port
from tests.conftest import kill_group

ROOT = Path(__file__).resolve().parents[2]


class OriginProcess:
    """The origin serving `data_dir` on 127.0.0.1:port (a free one if 0).

    cli=True runs the shipped command, `cdlc serve` (CDLC_DATA_DIR and
    CDLC_SIGNING_KEY from here); cli=False runs tests/e2e/origin_main.py, the same
    origin app without the engine's executor."""

    def __init__(self, data_dir: Path, *, signing_key: bytes | None = None, port: int = 0,
                 workers: int = 1, cli: bool = False, edges: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.edges = list(edges)
        self.signing_key = signing_key
        self.port = port or free_port()
        self.workers = workers
        self.cli = cli
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "origin.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> OriginProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.cli:
            args = [str(Path(sys.executable).parent / "cdlc"), "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", str(self.workers)]
            env["CDLC_DATA_DIR"] = str(self.data_dir)
            # Settings.signing_key is text; its UTF-8 bytes are the HMAC key.
            env["CDLC_SIGNING_KEY"] = self.signing_key.decode() if self.signing_key else ""
            env["CDLC_EDGES"] = ",".join(self.edges)  # purged on admin DELETE
        else:
            args = [sys.executable, "-m", "tests.e2e.origin_main", "--data-dir",
                    str(self.data_dir), "--port", str(self.port), "--workers",
                    str(self.workers)]
            if self.signing_key:
                args += ["--signing-key-hex", self.signing_key.hex()]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # Its own process group: a kill reaches every worker it forked.
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        try:
            wait_port("127.0.0.1", self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"origin did not start: {self.log_path.read_text()[-2000:]}") from None
        return self

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """SIGTERM (graceful) or SIGKILL (an origin that dies) and wait."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            kill_group(proc.pid)  # a worker of a master that died first
            return
        sig = signal.SIGKILL if kill else signal.SIGTERM
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()
        # Workers of a killed master, or one that outlived a graceful stop: none
        # stays behind to serve (or take jobs) in a later test.
        kill_group(proc.pid)

    def __enter__(self) -> OriginProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
