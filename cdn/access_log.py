"""The edge's access log (format ``cdlc_edge`` of cdn/templates/edge.conf) read back
as delivered bytes per asset and hour: what `cdlc cdn ingest-log FILE` adds to the
stats.

A line, as nginx writes it (the query string, with its token, is never logged)::

    127.0.0.1 [01/Dec/2026:10:00:00 +0000] "GET /vod/a1/v360/1.m4s HTTP/1.1" 200 65536
    0.001 cache=HIT upstream=- ustatus=- utime=- asset=a1 t=1796119200.123

(one line). A delivery is a ``GET`` answered 200 or 206 for an asset (``asset=``
is the edge's ``$cdlc_asset``, ``-`` off the playback paths), counted by its body
bytes (``$body_bytes_sent``) in the hour of ``t=`` (``$msec``). Other requests
(health checks, refusals, 304s, HEADs) are read and not counted; a line that does
not parse is skipped and counted as bad.

Ingesting twice counts once: a file is known by a digest of its first line (which
holds a millisecond time stamp), and the sink remembers the byte offset up to
which it was read; the next ingest reads on from there (a file that grew adds
only its new lines). Only whole lines are read: a line still being written waits
for the next ingest. Offset and counts are committed together, and only when the
offset is still the one the read started from (``DeliverySink.ingest``).

This module imports nothing of ours: the sink is any object
with the two methods of ``DeliverySink`` (metadata/event_log_delivery.py has them).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

_LINE = re.compile(
    r'^\S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<uri>.*) [A-Z]+/[0-9.]+" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) \S+ cache=(?P<cache>\S*) .* "
    r"asset=(?P<asset>\S+) t=(?P<t>\d+(?:\.\d+)?)$")
_FIRST_LINE_MAX = 64 * 1024
_CHUNK = 1 << 20
ASSET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class DeliverySink(Protocol):
    async def offset(self, file_id: str) -> int: ...

    async def ingest(self, file_id: str, start: int, end: int,
                     counts: Mapping[tuple[str, int], int]) -> bool: ...


class LogUnreadable(OSError):
    """The file cannot be opened or read (the message names it and why)."""

    @classmethod
    def of(cls, name: object, exc: OSError) -> LogUnreadable:
        """``name: reason`` from the OSError that made it unreadable."""
        return cls(f"{name}: {exc.strerror or exc}")


@dataclass
class LogSlice:
    """What one read of a log found, from ``start`` to ``end`` (bytes)."""

    file_id: str
    start: int
    end: int
    lines: int = 0
    delivered_lines: int = 0
    bad_lines: int = 0
    # (asset id, Unix hour) -> body bytes
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    # body bytes by cache status (HIT, MISS, ...; "-" when the cache was not asked)
    by_cache: dict[str, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(self.counts.values())

    @property
    def assets(self) -> set[str]:
        return {a for a, _h in self.counts}


def parse_line(text: str) -> tuple[str, str, int, int, str, str, float] | None:
    """(method, asset, status, body bytes, cache status, uri, time) of a line, or
    None when it is not a ``cdlc_edge`` line."""
    m = _LINE.match(text)
    if m is None:
        return None
    return (m["method"], m["asset"], int(m["status"]), int(m["bytes"]), m["cache"],
            m["uri"], float(m["t"]))


def file_identity(f: BinaryIO) -> str | None:
    """A digest of the first line (None while the file has no whole line)."""
    f.seek(0)
    first = f.readline(_FIRST_LINE_MAX)
    if not first.endswith(b"\n"):
        return None
    return hashlib.sha256(first).hexdigest()


def read_slice(f: BinaryIO, file_id: str, start: int) -> LogSlice:
    """Parse the whole lines from byte ``start`` on."""
    out = LogSlice(file_id, start, start)
    f.seek(start)
    pos, rest = start, b""
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        for raw in data[:cut].splitlines():
            _add(out, raw)
        pos += cut
        rest = data[cut:]
    out.end = pos
    return out


def _add(out: LogSlice, raw: bytes) -> None:
    out.lines += 1
    try:
        parsed = parse_line(raw.decode("utf-8").rstrip("\r"))
    except UnicodeDecodeError:
        parsed = None
    if parsed is None:
        out.bad_lines += 1
        return
    method, asset, status, nbytes, cache, _uri, t = parsed
    if asset == "-" or method != "GET" or status not in (200, 206):
        return
    if not ASSET_ID.fullmatch(asset):
        out.bad_lines += 1
        return
    out.delivered_lines += 1
    key = (asset, int(t // 3600))
    out.counts[key] = out.counts.get(key, 0) + nbytes
    out.by_cache[cache] = out.by_cache.get(cache, 0) + nbytes


async def ingest(path: Path, sink: DeliverySink, *, attempts: int = 5) -> LogSlice:
    """Read what ``path`` gained since its last ingest and add it to ``sink``;
    the slice read (``lines == 0``: nothing new). LogUnreadable when the file
    cannot be read."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise LogUnreadable.of(path, exc) from exc
    with f:
        return await ingest_file(f, sink, name=str(path), attempts=attempts)


async def ingest_file(f: BinaryIO, sink: DeliverySink, *, name: str,
                      attempts: int = 5) -> LogSlice:
    """``ingest`` of a file already open (``name`` for messages): a follower keeps
    the file it read last open, so a rotated-away log can still be read to its end."""
    for _ in range(attempts):
        try:
            file_id = file_identity(f)
            if file_id is None:
                return LogSlice("", 0, 0)
            start = await sink.offset(file_id)
            size = f.seek(0, 2)
            if start > size:  # shorter than what was read of it: nothing new
                return LogSlice(file_id, start, start)
            got = read_slice(f, file_id, start)
        except OSError as exc:
            raise LogUnreadable.of(name, exc) from exc
        if got.end == start or await sink.ingest(file_id, start, got.end, got.counts):
            return got
        # Another ingest moved the offset meanwhile: read on from where it is now.
    raise LogUnreadable(f"{name}: the offset kept moving under {attempts} attempts "
                        "(another ingest of this file is running)")


class LogFollower:
    """Ingests one log path again and again (``step``), across rotation.

    It keeps the file it read last open. When the path names another file (a
    rename and nginx's reopen on USR1, as logrotate does it), the held file is
    read once more to its end, which holds what nginx wrote there until it
    reopened, and then let go; the new file is read from its start. While the
    path names nothing (renamed, not yet reopened), the held file is still read:
    nginx writes there until it reopens. A log truncated in place (copytruncate)
    is a new identity and is read from its start; what was written to it between
    the last step and the truncation is lost, as with any reader of such a log."""

    def __init__(self, path: Path, sink: DeliverySink) -> None:
        self.path, self.sink = path, sink
        self._held: BinaryIO | None = None
        self._held_key: tuple[int, int] | None = None

    async def step(self) -> list[LogSlice]:
        """The slices ingested by this step (those with new lines). LogUnreadable
        when the path cannot be read, except while it is missing and a held file
        is read instead; errors of the sink pass through (the next step retries:
        offsets move only with their counts)."""
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError as exc:
            if self._held is None:
                raise LogUnreadable.of(self.path, exc) from exc
            current = None
        except OSError as exc:
            raise LogUnreadable.of(self.path, exc) from exc
        out: list[LogSlice] = []
        if self._held is not None and current != self._held_key:
            out.append(await ingest_file(self._held, self.sink, name=f"{self.path} (rotated)"))
            if current is not None:  # reopened: the old file is done
                self._release()
        if current is not None:
            if self._held is None:
                if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open
                    raise LogUnreadable(f"{self.path}: not a regular file")
                try:
                    f = open(self.path, "rb")
                except OSError as exc:
                    raise LogUnreadable.of(self.path, exc) from exc
                st = os.fstat(f.fileno())
                self._held, self._held_key = f, (st.st_dev, st.st_ino)
            out.append(await ingest_file(self._held, self.sink, name=str(self.path)))
        return [s for s in out if s.lines]

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
        self._held = self._held_key = None

    def close(self) -> None:
        self._release()
