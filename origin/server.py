"""Run the origin: N worker processes sharing one port.

Each worker is a forked child that builds its own app through the factory (its
own event loop, store connections, cache and metrics) and binds its own listening
socket with SO_REUSEPORT, so the kernel spreads connections across workers
(socket(7)); there is no shared accept lock and no thundering herd. The parent
only supervises: it restarts a worker that dies, and on SIGTERM/SIGINT passes
SIGTERM on and waits. A worker stops gracefully: it stops accepting, lets
in-flight requests finish (up to ``GRACE`` seconds), closes its backends.

Access logging is off (a log line per segment request costs more than serving a
cache hit); metrics are at /metrics, aggregated over workers through
prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

GRACE = 10.0
AppFactory = Callable[[], Awaitable[web.Application]]


def _new_loop() -> asyncio.AbstractEventLoop:
    """CDLC_EVENT_LOOP=asyncio (default) | uvloop (when installed).

    The stock loop is the default: its loop.sendfile() is zero-copy sendfile(2),
    which FileResponse uses for every segment; uvloop has no sendfile, so aiohttp
    falls back to reading 256 KiB chunks through a thread and copying them (about
    half the segment throughput measured in bench/origin.py), while its gain on
    small responses is modest because aiohttp's HTTP parser is C already."""
    choice = os.environ.get("CDLC_EVENT_LOOP", "asyncio")
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


async def _serve(app_factory: AppFactory, host: str, port: int, reuse_port: bool) -> None:
    app = await app_factory()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=GRACE)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=2048)
        await site.start()
        # Long-lived startup objects (modules, app, routes) leave the GC's view, so
        # full collections stay short: fewer latency spikes at p99.
        gc.collect()
        gc.freeze()
        await stop.wait()
    finally:
        await runner.cleanup()


def _serve_forever(app_factory: AppFactory, host: str, port: int, reuse_port: bool) -> None:
    loop = _new_loop()
    try:
        loop.run_until_complete(_serve(app_factory, host, port, reuse_port))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _spawn(app_factory: AppFactory, host: str, port: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The child: default signal dispositions, its own loop, never returns.
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _serve_forever(app_factory, host, port, reuse_port=True)
    except BaseException:
        log.exception("origin worker %d failed", os.getpid())
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _enable_multiprocess_metrics() -> str | None:
    """Point prometheus_client at a shared directory before the workers exist."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="cdlc-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from prometheus_client import values

    # The value class is chosen when prometheus_client is imported; choose again.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


# A worker that exits this soon after it was started died at start.
FAST_EXIT_S = 2.0
# Workers killed by a signal at start, one after another, before the server stops.
MAX_FAST_DEATHS = 3


def run(app_factory: AppFactory, host: str, port: int, workers: int) -> None:
    """Serve until SIGTERM/SIGINT with ``workers`` processes on ``host:port``
    (``port`` 0: a free port, printed on stderr)."""
    workers = max(1, int(workers))
    if port == 0:
        port = _free_port(host)
    print(f"origin: http://{host}:{port}/ ({workers} worker(s))", file=sys.stderr, flush=True)
    if workers == 1:
        _serve_forever(app_factory, host, port, reuse_port=False)
        return

    metrics_dir = _enable_multiprocess_metrics()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children: dict[int, float] = {}
    fast_deaths = 0
    failed = False
    try:
        for _ in range(workers):
            children[_spawn(app_factory, host, port)] = time.monotonic()
        while children and not stopping:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:  # polling: a blocking waitpid would outlive SIGTERM (PEP 475)
                time.sleep(0.1)
                continue
            started = children.pop(pid, None)
            if started is None or stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if time.monotonic() - started < FAST_EXIT_S:
                fast_deaths += 1
                # Failing at start by its own hand (port taken, bad configuration):
                # restarting would loop. Killed by a signal (the OOM killer, an
                # operator's kill -9) is no fault of its start: restarted, unless
                # that too repeats.
                if code >= 0 or fast_deaths >= MAX_FAST_DEATHS:
                    log.error("origin worker %d exited at start (%d); stopping", pid, code)
                    stopping = failed = True
                    break
            else:
                fast_deaths = 0
            log.warning("origin worker %d exited (%d); starting another", pid, code)
            children[_spawn(app_factory, host, port)] = time.monotonic()
    finally:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE + 5
        while children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            children.pop(pid, None)
        for pid in list(children):  # past the grace period
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for s, handler in old.items():
            signal.signal(s, handler)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if failed:  # the server never stood: its command fails, the log says why
        raise SystemExit(1)
