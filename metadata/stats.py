"""The stats read model: per asset and per hour (UTC, by each session's first
event), what viewers did, folded from the event log.

``StatsModel.apply(entries)`` folds log entries in log order; ``rebuild(log)``
reads the whole retained log from its start (what a process does at start, so
the stats survive a restart); ``follow(log)`` keeps folding what others append.
Every entry is applied once: the model remembers the cursor it has reached and
``apply`` skips what it has seen (a process's own appends are applied at once and
then met again by its follower).

How each figure is counted, per session (one ``session_id``):

- watch seconds: for each pair of consecutive events a -> b of the session, the
  position advance ``b.position - a.position`` when it is > 0, capped by the
  wall time between them (+0.25 s of slack) and not counted when b is a
  ``seek`` (a jump is not watching); the beacon sends a heartbeat at the old
  position before each seek. Attributed to a's rendition (b's when a names none):
  "seconds per rendition".
- startup: ``first_frame.time - start.time`` of the session (the first of each).
- rebuffering: ``stall_end.time - stall_start.time``; ``rebuffer_ratio`` is stalled
  seconds over stalled + watched seconds.
- completion: the share of sessions with an ``end`` event.
- errors: ``error`` events; stalls: ``stall_start`` events.

Delivered bytes (what the origin and the edge sent, metadata/event_log_delivery.py)
are not in the event log: ``stats`` and ``hours`` take them from the caller
(hour -> source -> bytes) and show them beside what players reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metadata.event_log import EventLog, LoggedEvent, WatchEvent, format_time

log = logging.getLogger(__name__)

# Position and time are read together by the beacon; this covers rounding and
# a player's position running a little ahead of the wall clock.
_CLOCK_SLACK = 0.25


@dataclass
class _Session:
    hour: int
    last: WatchEvent | None = None
    started_at: float | None = None
    startup: float | None = None
    stall_since: float | None = None
    ended: bool = False


@dataclass
class Bucket:
    """One asset's figures over one hour (or, merged, over all hours)."""

    sessions: set[str] = field(default_factory=set)
    viewers: set[str] = field(default_factory=set)
    watch_seconds: float = 0.0
    stall_seconds: float = 0.0
    completed: set[str] = field(default_factory=set)
    startups: list[float] = field(default_factory=list)
    renditions: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    stalls: int = 0
    events: int = 0

    def merge(self, other: Bucket) -> None:
        self.sessions |= other.sessions
        self.viewers |= other.viewers
        self.watch_seconds += other.watch_seconds
        self.stall_seconds += other.stall_seconds
        self.completed |= other.completed
        self.startups += other.startups
        for r, s in other.renditions.items():
            self.renditions[r] = self.renditions.get(r, 0.0) + s
        self.errors += other.errors
        self.stalls += other.stalls
        self.events += other.events


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class AssetStats:
    asset_id: str
    sessions: int
    viewers: int
    watch_seconds: float
    completion_rate: float
    startup_p50_seconds: float
    startup_p95_seconds: float
    rebuffer_ratio: float
    renditions: dict[str, float]
    errors: int
    stalls: int = 0           # stall_start events (not in the proto's AssetStats)
    # Body bytes of 200/206 playback answers, by the origin and by the edge.
    delivered_bytes_origin: int = 0
    delivered_bytes_edge: int = 0

    @classmethod
    def of(cls, asset_id: str, b: Bucket,
           delivered: Mapping[str, int] | None = None) -> AssetStats:
        sent = delivered or {}
        n = len(b.sessions)
        watched = b.watch_seconds + b.stall_seconds
        return cls(
            asset_id=asset_id, sessions=n, viewers=len(b.viewers - {""}),
            watch_seconds=round(b.watch_seconds, 3),
            completion_rate=len(b.completed) / n if n else 0.0,
            startup_p50_seconds=round(percentile(b.startups, 0.5), 4),
            startup_p95_seconds=round(percentile(b.startups, 0.95), 4),
            rebuffer_ratio=b.stall_seconds / watched if watched > 0 else 0.0,
            renditions={r: round(s, 3) for r, s in sorted(b.renditions.items())},
            errors=b.errors, stalls=b.stalls,
            delivered_bytes_origin=int(sent.get("origin", 0)),
            delivered_bytes_edge=int(sent.get("edge", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "asset_id": self.asset_id, "sessions": self.sessions, "viewers": self.viewers,
            "watch_seconds": self.watch_seconds, "completion_rate": self.completion_rate,
            "startup_p50_seconds": self.startup_p50_seconds,
            "startup_p95_seconds": self.startup_p95_seconds,
            "rebuffer_ratio": self.rebuffer_ratio, "renditions": self.renditions,
            "errors": self.errors, "stalls": self.stalls,
            "delivered_bytes_origin": self.delivered_bytes_origin,
            "delivered_bytes_edge": self.delivered_bytes_edge,
        }


class StatsModel:
    """The read model (module docstring)."""

    def __init__(self) -> None:
        self.cursor = ""          # the last log entry applied
        self._seq = -1            # comparable form of cursor, see _order
        self._buckets: dict[tuple[str, int], Bucket] = {}
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._follower: asyncio.Task[None] | None = None

    @staticmethod
    def _order(cursor: str) -> tuple[int, ...]:
        # SQLite "17", Kafka "17", Redis "1700000000000-3": numeric parts compare.
        return tuple(int(p) for p in cursor.split("-"))

    def apply(self, entries: Iterable[LoggedEvent]) -> int:
        """Fold entries newer than the cursor, in order; how many were new."""
        n = 0
        for entry in entries:
            if self.cursor and self._order(entry.cursor) <= self._order(self.cursor):
                continue
            self._fold(entry.event)
            self.cursor = entry.cursor
            n += 1
        return n

    def _fold(self, e: WatchEvent) -> None:
        key = (e.asset_id, e.session_id)
        s = self._sessions.get(key)
        if s is None:
            s = self._sessions[key] = _Session(hour=int(e.time // 3600))
        b = self._buckets.get((e.asset_id, s.hour))
        if b is None:
            b = self._buckets[(e.asset_id, s.hour)] = Bucket()
        b.events += 1
        b.sessions.add(e.session_id)
        b.viewers.add(e.viewer_id)
        a = s.last
        if a is not None and e.type != "seek":
            advance = e.position_seconds - a.position_seconds
            wall = e.time - a.time
            if advance > 0 and wall >= 0:
                played = min(advance, wall + _CLOCK_SLACK)
                b.watch_seconds += played
                rendition = a.rendition_id or e.rendition_id
                if rendition:
                    b.renditions[rendition] = b.renditions.get(rendition, 0.0) + played
        if e.type == "start" and s.started_at is None:
            s.started_at = e.time
        elif e.type == "first_frame" and s.startup is None and s.started_at is not None:
            s.startup = max(0.0, e.time - s.started_at)
            b.startups.append(s.startup)
        elif e.type == "stall_start" and s.stall_since is None:
            s.stall_since = e.time
            b.stalls += 1
        elif e.type == "stall_end" and s.stall_since is not None:
            b.stall_seconds += max(0.0, e.time - s.stall_since)
            s.stall_since = None
        elif e.type == "error":
            b.errors += 1
        elif e.type == "end":
            b.completed.add(e.session_id)
        if a is None or e.time >= a.time:
            s.last = e

    def stats(self, asset_id: str, hour: int | None = None,
              delivered: Mapping[int, Mapping[str, int]] | None = None) -> AssetStats:
        """The asset's figures over all hours, or over one (Unix hour number);
        ``delivered``: the asset's delivered bytes, hour -> source -> bytes."""
        total = Bucket()
        for (asset, h), b in self._buckets.items():
            if asset == asset_id and (hour is None or h == hour):
                total.merge(b)
        sent: dict[str, int] = {}
        for h, by_source in (delivered or {}).items():
            if hour is None or h == hour:
                for source, n in by_source.items():
                    sent[source] = sent.get(source, 0) + n
        return AssetStats.of(asset_id, total, sent)

    def hours(self, asset_id: str, delivered: Mapping[int, Mapping[str, int]] | None = None,
              ) -> list[dict[str, Any]]:
        """Per hour (with events or delivered bytes): the hour's start (RFC 3339)
        and its figures."""
        sent = delivered or {}
        mine = {h: b for (asset, h), b in self._buckets.items() if asset == asset_id}
        return [{"hour": format_time(h * 3600.0),
                 **AssetStats.of(asset_id, mine.get(h) or Bucket(), sent.get(h)).to_json()}
                for h in sorted(mine.keys() | sent.keys())]

    def totals(self) -> dict[str, AssetStats]:
        return {a: self.stats(a) for a in sorted({a for a, _h in self._buckets})}

    async def rebuild(self, source: EventLog, batch: int = 2000) -> int:
        """Fold everything the log holds after the cursor; how many entries."""
        n = 0
        while True:
            entries = await source.read(self.cursor, batch)
            if not entries:
                return n
            n += self.apply(entries)

    async def follow(self, source: EventLog, wait: float = 1.0) -> None:
        """Fold new entries as they come, until cancelled (a backend outage is
        logged and retried)."""
        while True:
            try:
                self.apply(await source.read(self.cursor, 2000, wait))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stats: reading the event log failed: %s", exc)
                await asyncio.sleep(wait)

    def start_following(self, source: EventLog) -> None:
        if self._follower is None:
            self._follower = asyncio.create_task(self.follow(source))

    async def stop_following(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
