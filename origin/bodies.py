"""Reading a body with a bound of our own.

``StreamReader.read(n)`` answers at most ``n`` bytes but often fewer: what has
arrived so far, one chunk. Taken as the whole body, a request past one chunk was
cut short (a 250 KB batch of watch events, under the 256 KiB limit, was refused
as not JSON). ``read_bounded`` reads until the end or past the bound."""

from __future__ import annotations

from aiohttp import StreamReader

__all__ = ["read_bounded"]


async def read_bounded(content: StreamReader, limit: int) -> bytes:
    """The whole body when it is at most ``limit`` bytes, else ``limit + 1`` of them
    (the caller refuses it as too large without reading the rest)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
