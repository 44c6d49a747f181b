"""A loopback HTTP source that breaks the way real ones do, for the pulls of a
master from a URL (origin.fetch): each path is one fault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# the path's last part -> what the server writes before it closes (None: it
# stalls after the headers and ten bytes of the body). Any path ending so breaks
# alike, so it also stands in for an S3 endpoint (path-style /bucket/key).
FAULTS: dict[str, bytes | None] = {
    # Content-Length promises 100,000 bytes; the connection closes after 10.
    "/short.mp4": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10,
    # A chunked body whose second chunk size is not hexadecimal.
    "/chunks.mp4": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\nZZ\r\n"),
    # Not HTTP at all.
    "/garbage.mp4": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "/stall.mp4": None,
    # A redirect to a URL nobody can parse.
    "/moved.mp4": (b"HTTP/1.1 302 Found\r\nLocation: http://[::1/x\r\n"
                   b"Content-Length: 0\r\n\r\n"),
}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


@asynccontextmanager
async def broken_source() -> AsyncIterator[str]:
    """The base URL (http://127.0.0.1:PORT) of a server answering FAULTS."""
    handlers: set[asyncio.Task[None]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode().split("?", 1)[0]
            reply = FAULTS.get("/" + path.rsplit("/", 1)[-1], NOT_FOUND)
            if reply is None:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
                await writer.drain()
                await asyncio.sleep(3600)
            else:
                writer.write(reply)
                await writer.drain()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(handlers):  # a stalled answer ends with its connection
            task.cancel()
        await server.wait_closed()
