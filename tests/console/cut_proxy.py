"""A TCP proxy between Chromium and the origin that cuts or holds an upload on
purpose, for the console's resume tests.

It reads the HTTP/1.1 requests going up (request line, headers, then exactly
Content-Length body bytes) so it can count the bytes of PATCH bodies it forwards
across all connections. ``arm(at, action)`` makes it act when that count reaches
``at``, in the middle of a PATCH body:

- ``"cut"``: close that connection at once, as a dropped line does (the origin
  sees the body end early, the browser sees a reset);
- ``"hold"``: stop forwarding that body and wait; ``held`` is set, and the
  connection ends when the origin goes away (the test stops `cdlc serve`).

Acting also closes the gate: from then on requests are accepted but wait before
going up (the upstream connection is only opened once a request may go), so the
browser's retries queue here while the test looks at the server's offset or
restarts the origin; ``open_gate()`` lets them through. Responses come back byte
for byte, unparsed.

Runs its own asyncio loop in a thread: the tests drive Playwright's sync API in
the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

CHUNK = 64 * 1024


class CutProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        self.patch_bytes = 0            # PATCH body bytes forwarded so far
        self.cuts = 0                   # connections closed on purpose
        self.held = threading.Event()   # a PATCH is being held
        self._at: int | None = None
        self._action = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cut-proxy")
        self._started = threading.Event()
        self._gate: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- control (from the test's thread) ---------------------------------------

    def start(self) -> CutProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("the proxy did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def arm(self, at: int, action: str) -> None:
        """Cut or hold the PATCH body that crosses ``at`` forwarded PATCH bytes."""
        assert action in ("cut", "hold"), action
        self._call(lambda: self._set_arm(at, action))

    def open_gate(self) -> None:
        self._call(lambda: self._gate_event().set())

    def _set_arm(self, at: int, action: str) -> None:
        self._at, self._action = at, action
        self.held.clear()

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise TimeoutError("the proxy's loop did not answer")

    def _gate_event(self) -> asyncio.Event:
        assert self._gate is not None
        return self._gate

    # -- the proxy (on its loop) --------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            self._gate = asyncio.Event()
            self._gate.set()
            self._server = await asyncio.start_server(self._accept, self.host, 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self._loop.run_until_complete(listen())
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _accept(self, creader: asyncio.StreamReader,
                      cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        uwriter: asyncio.StreamWriter | None = None
        back: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    head = await creader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                await self._gate_event().wait()
                if uwriter is None:
                    try:
                        ureader, uwriter = await asyncio.open_connection(
                            self.host, self.upstream_port)
                    except OSError:
                        return  # the origin is down: the browser sees the line drop
                    back = asyncio.create_task(self._pump_back(ureader, cwriter, task))
                uwriter.write(head)
                method, length = _method_and_length(head)
                if not await self._forward_body(creader, uwriter, length, method == "PATCH"):
                    return
                await uwriter.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # Ended on purpose (the origin went, or stop()): end quietly, since
            # asyncio.start_server logs a client task that ends cancelled.
            return
        finally:
            if back is not None:
                back.cancel()
            for w in (cwriter, uwriter):
                if w is not None:
                    w.transport.abort()
            self._conns.discard(task)

    async def _forward_body(self, creader: asyncio.StreamReader,
                            uwriter: asyncio.StreamWriter, length: int, patch: bool) -> bool:
        """Forward ``length`` body bytes; False when the connection is to end."""
        left = length
        while left > 0:
            data = await creader.read(min(CHUNK, left))
            if not data:
                return False
            left -= len(data)
            if patch and self._at is not None and self.patch_bytes + len(data) >= self._at:
                part = self._at - self.patch_bytes
                uwriter.write(data[:part])
                self.patch_bytes += part
                await uwriter.drain()
                action, self._at = self._action, None
                self._gate_event().clear()  # the browser's retries wait from here
                if action == "cut":
                    self.cuts += 1
                    # Let the origin read what went up, then drop both sides.
                    uwriter.close()
                    with contextlib.suppress(ConnectionError):
                        await uwriter.wait_closed()
                    return False
                self.held.set()
                await asyncio.Event().wait()  # until the origin goes (cancelled then)
            if patch:
                self.patch_bytes += len(data)
            uwriter.write(data)
            await uwriter.drain()
        return True

    async def _pump_back(self, ureader: asyncio.StreamReader, cwriter: asyncio.StreamWriter,
                         conn: asyncio.Task[None]) -> None:
        try:
            while data := await ureader.read(CHUNK):
                cwriter.write(data)
                await cwriter.drain()
        except ConnectionError:
            pass
        # The origin closed (or died): so does this connection, both ways.
        conn.cancel()


def _method_and_length(head: bytes) -> tuple[str, int]:
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise ValueError("the proxy forwards Content-Length bodies only")
    return method, length
