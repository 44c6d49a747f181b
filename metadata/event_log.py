"""The watch-event log: what players reported, recorded once each, in order.

``EventLog`` is the interface every backend keeps (tests/events/test_log_contract.py
is its contract suite):

- ``append(events)`` records the events whose ``event_id`` it has not seen
  (within the dedupe window) and says how many were new and how many repeats;
  the new ones get a cursor, increasing in log order.
- ``read(after, limit, wait)`` returns up to ``limit`` entries after a cursor
  (``""``: from the oldest retained), waiting up to ``wait`` seconds when there
  are none yet. A reader that resumes after the last cursor it processed misses
  nothing and sees nothing twice; one that resumes after an earlier cursor sees
  again only what came after it (at least once).
- ``head()`` is the cursor of the newest entry (``""`` when empty): "from now".
- retention is bounded: oldest entries go past ``max_events`` (and, where the
  backend keeps time, past ``retention_seconds``); dedupe ids are kept for
  ``dedupe_seconds``.

Backends: metadata/event_log_sqlite.py (a table in metadata.db, the embedded
default), event_log_redis.py (Redis Streams), event_log_kafka.py (aiokafka).
``open_event_log(url, data_dir)`` picks one from ``CDLC_EVENTS``. Plain data and
I/O only; nothing of ours imported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, Protocol

# The event types of docs/analytics.md, in proto enum order
# (WatchEventType 1..9).
EVENT_TYPES = ("start", "first_frame", "heartbeat", "stall_start", "stall_end", "seek",
               "rendition_change", "error", "end")

_STR = encode_basestring_ascii
_OBJECT = ('{"event_id":%s,"session_id":%s,"asset_id":%s,"viewer_id":%s,"type":%s,'
           '"time":%r,"position_seconds":%r,"rendition_id":%s,"bitrate":%d,"error":%s}')
MAX_ID_CHARS = 128          # event, session, asset, viewer and rendition ids
MAX_TIME = 253_402_300_800.0  # 10000-01-01T00:00:00Z: times stay writable as RFC 3339
MAX_ERROR_CHARS = 1000


class EventError(ValueError):
    """An event that cannot be recorded (a missing id, an unknown type, ...)."""


# slots, not frozen: a frozen dataclass's __init__ costs ~3x (object.__setattr__
# per field), and the intake makes one per event. Treat it as immutable (replace()).
@dataclass(slots=True)
class WatchEvent:
    """One watch event; ``time`` is Unix seconds (RFC 3339 on the JSON side)."""

    event_id: str
    session_id: str
    asset_id: str
    viewer_id: str
    type: str
    time: float
    position_seconds: float = 0.0
    rendition_id: str = ""
    bitrate: int = 0
    error: str = ""

    def to_json(self) -> str:
        # By hand: this runs per event appended. The same text json.dumps(...,
        # separators=(",", ":")) writes of the dict (strings by json's own C
        # escaper, floats by repr as json does), at a third of its cost: no dict,
        # no encoder walk. Numbers are finite (event_from_json, event_from_proto).
        return _OBJECT % (
            _STR(self.event_id), _STR(self.session_id), _STR(self.asset_id),
            _STR(self.viewer_id), _STR(self.type), self.time, self.position_seconds,
            _STR(self.rendition_id), self.bitrate, _STR(self.error))

    @classmethod
    def from_json(cls, text: str | bytes) -> WatchEvent:
        doc = json.loads(text)
        return cls(**doc)

    def replace(self, **changes: Any) -> WatchEvent:
        doc = asdict(self)
        doc.update(changes)
        return WatchEvent(**doc)


@dataclass(frozen=True)
class LoggedEvent:
    """An event as the log holds it: ``cursor`` resumes a read after it."""

    cursor: str
    event: WatchEvent


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int
    # The entries this call added, in log order (for the stats and the metrics).
    added: tuple[LoggedEvent, ...] = ()


def _text(doc: Mapping[str, Any], name: str, limit: int = MAX_ID_CHARS,
          required: bool = False) -> str:
    value = doc.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise EventError(f"{name} must be a string")
    if required and not value:
        raise EventError(f"{name} is required")
    if len(value) > limit:
        raise EventError(f"{name} is longer than {limit} characters")
    return value


def _number(doc: Mapping[str, Any], name: str) -> float:
    value = doc.get(name, 0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"{name} must be a number")
    try:
        value = float(value)
    except OverflowError:  # an integer past float's range (JSON allows any)
        raise EventError(f"{name} is out of range") from None
    if not math.isfinite(value) or value < 0:
        raise EventError(f"{name} must be a finite number >= 0")
    return value


def parse_time(value: Any) -> float:
    """RFC 3339 text (or Unix seconds) to Unix seconds."""
    if isinstance(value, bool):
        raise EventError("time must be RFC 3339 text")
    if isinstance(value, int | float):
        # Up to the end of year 9999: what RFC 3339 (and datetime) can write back.
        if not 0 <= value < MAX_TIME:
            raise EventError("time must be a Unix time from 1970 to 9999")
        return float(value)
    if not isinstance(value, str) or not value:
        raise EventError("time is required (RFC 3339)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise EventError(f"time {value[:40]!r} is not RFC 3339") from exc
    if moment.tzinfo is None:
        raise EventError("time needs a UTC offset (RFC 3339 §5.6)")
    seconds = moment.timestamp()
    if not 0 <= seconds < MAX_TIME:
        raise EventError(f"time {value[:40]!r} is before 1970")
    return seconds


def format_time(seconds: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


_TYPE_SET = frozenset(EVENT_TYPES)
# Below it an int converts to float (JSON numbers may be integers of any size).
_FLOAT_MAX = 1.7e308
_NUM = (int, float)


def event_from_json(doc: Any) -> WatchEvent:
    """A WatchEvent from its JSON object (docs/analytics.md); EventError
    when a field is missing or of the wrong kind."""
    # The fast path: a well-formed event (what every beacon sends) is checked in
    # one expression; anything else goes the slow way, which says what is wrong.
    if type(doc) is dict:
        get = doc.get
        t: Any = get("time")
        eid, sid, kind = get("event_id"), get("session_id"), get("type")
        asset, viewer = get("asset_id") or "", get("viewer_id") or ""
        rendition, error = get("rendition_id") or "", get("error") or ""
        pos, bitrate = get("position_seconds") or 0, get("bitrate") or 0
        if (type(eid) is str and 0 < len(eid) <= MAX_ID_CHARS
                and type(sid) is str and 0 < len(sid) <= MAX_ID_CHARS
                and type(kind) is str and kind in _TYPE_SET
                and type(asset) is str and len(asset) <= MAX_ID_CHARS
                and type(viewer) is str and len(viewer) <= 1366
                and type(rendition) is str and len(rendition) <= MAX_ID_CHARS
                and type(error) is str and len(error) <= MAX_ERROR_CHARS
                and type(pos) in _NUM and 0 <= pos < _FLOAT_MAX
                and type(bitrate) in _NUM and 0 <= bitrate < 2**62
                and (type(t) is str or (type(t) in _NUM and 0 <= t < MAX_TIME))):
            return WatchEvent(eid, sid, asset, viewer, kind,
                              parse_time(t) if type(t) is str else float(t), float(pos),
                              rendition, int(bitrate), error)
    if not isinstance(doc, dict):
        raise EventError("an event must be a JSON object")
    kind = _text(doc, "type", required=True)
    if kind not in EVENT_TYPES:
        raise EventError(f"unknown event type {kind[:40]!r}")
    bitrate = _number(doc, "bitrate")
    return WatchEvent(
        event_id=_text(doc, "event_id", required=True),
        session_id=_text(doc, "session_id", required=True),
        asset_id=_text(doc, "asset_id"),
        viewer_id=_text(doc, "viewer_id", limit=1366),
        type=kind,
        time=parse_time(doc.get("time")),
        position_seconds=_number(doc, "position_seconds"),
        rendition_id=_text(doc, "rendition_id"),
        bitrate=int(min(bitrate, 2**62)),
        error=_text(doc, "error", limit=MAX_ERROR_CHARS),
    )


def event_to_json(event: WatchEvent) -> dict[str, Any]:
    doc = asdict(event)
    doc["time"] = format_time(event.time)
    return doc


class EventLog(Protocol):
    """The log's contract (module docstring)."""

    async def append(self, events: Sequence[WatchEvent]) -> AppendResult: ...

    async def read(self, after: str, limit: int = 500, wait: float = 0.0,
                   ) -> list[LoggedEvent]: ...

    async def head(self) -> str: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Retention:
    max_events: int = 1_000_000
    retention_seconds: float = 30 * 86400.0
    dedupe_seconds: float = 86400.0


def open_event_log(url: str, data_dir: Path, *, retention: Retention | None = None,
                   ) -> EventLog:
    """The event log named by ``CDLC_EVENTS``: ``""`` or ``sqlite`` (a table in
    ``data_dir/metadata.db``), ``sqlite:///path.db``, ``redis://host:port/db``
    (Redis Streams; ``?prefix=`` names the keys), ``kafka://host:port/topic``."""
    keep = retention or Retention()
    kind = event_log_kind(url)
    if kind == "sqlite":
        from metadata.event_log_sqlite import SQLiteEventLog

        path = Path(data_dir) / "metadata.db"
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite://"):])
        return SQLiteEventLog(path, retention=keep)
    if kind == "redis":
        from metadata.event_log_redis import RedisEventLog

        return RedisEventLog.from_url(url, retention=keep)
    from metadata.event_log_kafka import KafkaEventLog

    return KafkaEventLog.from_url(url, retention=keep)


def event_log_kind(url: str) -> str:
    """"sqlite", "redis" or "kafka" for a ``CDLC_EVENTS`` URL; ValueError for any
    other (what `cdlc serve` checks before it starts, opening nothing)."""
    if url in ("", "sqlite") or url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    if url.startswith("kafka://"):
        return "kafka"
    raise ValueError(f"unknown event log URL {url!r} (sqlite, redis://, kafka://)")
