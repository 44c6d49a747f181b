"""EventLog on Redis Streams.

Keys (``prefix`` default ``cdlc:events``): the stream ``{prefix}:log`` and one
dedupe key ``{prefix}:seen:{event_id}`` per recorded event, with a TTL of
``dedupe_seconds``. One Lua script per append does, for each event, ``SET NX EX``
on its dedupe key and, only when that was new, ``XADD ... MAXLEN ~ max_events``:
the two happen atomically (a script runs alone on the server), so an event is
never marked seen without being logged, or logged twice.

The cursor is the stream entry id (``ms-seq``); ``read`` is ``XREAD BLOCK`` after
it. ``MAXLEN ~`` lets Redis trim whole macro nodes, so slightly more than
``max_events`` may be kept (https://redis.io/docs/latest/commands/xadd/#capped-streams).
Time-based retention is ``XTRIM MINID ~`` every few appends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis.asyncio as aioredis

from metadata.event_log import AppendResult, LoggedEvent, Retention, WatchEvent

# KEYS[1] = stream, ARGV = [prefix, ttl, maxlen, id1, body1, id2, body2, ...];
# returns one stream id (or false for a repeat) per event.
_APPEND = """
local out = {}
local prefix, ttl, maxlen = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  if redis.call('SET', prefix .. ':seen:' .. ARGV[i], '1', 'NX', 'EX', ttl) then
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i + 1])
  else
    out[#out + 1] = false
  end
end
return out
"""

_TRIM_EVERY = 1000
# A hung server (connections taken, never answered) fails a call after this
# long rather than holding a player's beacon or a stats page for ever; redis-py
# before 6 waited without bound by default.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


def redis_client(url: str, prefix: str | None, default_prefix: str,
                 ) -> tuple[aioredis.Redis[bytes], str]:
    """The client of ``url`` (its ``?prefix=`` taken out) with bounded calls, and the
    key prefix: ``prefix``, else the URL's, else ``default_prefix``."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    chosen = prefix or query.pop("prefix", [default_prefix])[0]
    rest = "&".join(f"{k}={v[0]}" for k, v in query.items())
    client = aioredis.Redis.from_url(urlunsplit(parts._replace(query=rest)),
                                     socket_timeout=SOCKET_TIMEOUT,
                                     socket_connect_timeout=CONNECT_TIMEOUT)
    return client, chosen


class RedisEventLog:
    """The Redis Streams EventLog (module docstring)."""

    def __init__(self, client: aioredis.Redis[bytes], *, prefix: str = "cdlc:events",
                 retention: Retention | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.stream = f"{prefix}:log"
        self.retention = retention or Retention()
        self._script = client.register_script(_APPEND)
        self._since_trim = 0
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, retention: Retention | None = None,
                 prefix: str | None = None) -> RedisEventLog:
        client, chosen = redis_client(url, prefix, "cdlc:events")
        return cls(client, prefix=chosen, retention=retention)

    async def append(self, events: Sequence[WatchEvent]) -> AppendResult:
        if not events:
            return AppendResult(0, 0)
        keep = self.retention
        args: list[Any] = [self.prefix, max(1, int(keep.dedupe_seconds)), keep.max_events]
        for event in events:
            args += [event.event_id, event.to_json()]
        ids = await self._script(keys=[self.stream], args=args)
        added = tuple(LoggedEvent(_text(i), e) for i, e in zip(ids, events, strict=True) if i)
        self._since_trim += len(added)
        if self._since_trim >= _TRIM_EVERY:
            self._since_trim = 0
            await self.trim()
        return AppendResult(len(added), len(events) - len(added), added)

    async def trim(self) -> None:
        oldest = int((time.time() - self.retention.retention_seconds) * 1000)
        await self.client.xtrim(self.stream, minid=f"{max(oldest, 0)}-0", approximate=True)

    async def read(self, after: str, limit: int = 500, wait: float = 0.0,
                   ) -> list[LoggedEvent]:
        # Under the socket timeout, or the wait itself would read as a hung server
        # (the contract allows an earlier empty answer).
        wait = min(wait, SOCKET_TIMEOUT - 1.0)
        block = int(wait * 1000) if wait > 0 else None
        answer = await self.client.xread({self.stream: after or "0-0"}, count=limit,
                                         block=block)
        out: list[LoggedEvent] = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                body = fields.get(b"e") or fields.get("e")
                out.append(LoggedEvent(_text(entry_id), WatchEvent.from_json(body)))
        return out

    async def head(self) -> str:
        last = await self.client.xrevrange(self.stream, count=1)
        return _text(last[0][0]) if last else ""

    async def count(self) -> int:
        return int(await self.client.xlen(self.stream))

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        """Close the connections (a second close does nothing)."""
        if self._closed:
            return
        self._closed = True
        # redis>=5 has aclose(); the types-redis stubs predate it.
        await self.client.aclose()  # type: ignore[attr-defined]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
