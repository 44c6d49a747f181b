"""The JSON form of a watch event: what is accepted (RFC 3339 or Unix time, a
missing optional field) and what is refused with a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metadata.event_log import EventError, WatchEvent, event_from_json, event_to_json

GOOD: dict[str, Any] = {
    "event_id": "e1", "session_id": "s1", "asset_id": "a1", "viewer_id": "u1",
    "type": "heartbeat", "time": "2026-12-01T08:00:00.250Z", "position_seconds": 4.5,
    "rendition_id": "v720", "bitrate": 3000000, "error": ""}


def test_a_well_formed_event_round_trips() -> None:
    e = event_from_json(GOOD)
    assert e == WatchEvent("e1", "s1", "a1", "u1", "heartbeat", 1796112000.25, 4.5, "v720",
                           3000000, "")
    assert event_to_json(e)["time"] == "2026-12-01T08:00:00.250Z"
    assert event_from_json(event_to_json(e)) == e
    assert WatchEvent.from_json(e.to_json()) == e
    # Unix seconds, an offset other than Z, optional fields left out.
    assert event_from_json({**GOOD, "time": 1796112000.25}).time == e.time
    assert event_from_json({**GOOD, "time": "2026-12-01T09:00:00.250+01:00"}).time == e.time
    slim = event_from_json({k: GOOD[k] for k in ("event_id", "session_id", "type", "time")})
    assert (slim.asset_id, slim.position_seconds, slim.bitrate) == ("", 0.0, 0)


@pytest.mark.parametrize(("change", "reason"), [
    ({"event_id": ""}, "event_id is required"),
    ({"session_id": 7}, "session_id must be a string"),
    ({"type": "rewind"}, "unknown event type"),
    ({"type": None}, "type is required"),
    ({"type": {"start": 1}}, "type must be a string"),     # not hashable: no TypeError
    ({"type": ["start"]}, "type must be a string"),
    ({"time": "yesterday"}, "is not RFC 3339"),
    ({"time": "2026-12-01T08:00:00"}, "needs a UTC offset"),
    ({"position_seconds": -1}, "position_seconds must be a finite number >= 0"),
    ({"position_seconds": float("nan")}, "position_seconds must be a finite number >= 0"),
    ({"position_seconds": True}, "position_seconds must be a number"),
    ({"bitrate": "fast"}, "bitrate must be a number"),
    ({"rendition_id": "v" * 200}, "rendition_id is longer than 128 characters"),
    # JSON integers have no size limit: past float's range they are refused, not
    # an OverflowError (a 500); times stay writable back as RFC 3339.
    ({"bitrate": 10**400}, "bitrate is out of range"),
    ({"position_seconds": 10**400}, "position_seconds is out of range"),
    ({"time": 10**400}, "time must be a Unix time from 1970 to 9999"),
    ({"time": 1e300}, "time must be a Unix time from 1970 to 9999"),
    ({"time": -1}, "time must be a Unix time from 1970 to 9999"),
    ({"time": "0001-01-01T00:00:00Z"}, "is before 1970"),
])
def test_a_malformed_event_is_refused_with_its_reason(change: dict[str, Any],
                                                      reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        event_from_json(json.loads(json.dumps({**GOOD, **change})))


def test_not_an_object() -> None:
    with pytest.raises(EventError, match="JSON object"):
        event_from_json(["e1"])


def test_to_json_is_the_text_json_writes() -> None:
    """The hand-built body is byte for byte what json.dumps writes of the event's
    fields, for awkward strings and numbers too, and reads back the same."""
    import dataclasses

    for e in (
        WatchEvent("e-1", "s", "a1", "", "start", 1_800_000_000.0),
        WatchEvent('q"\\/\n\t\x00', "sé🎬", "a_b-1", "viewer:1|x=1", "error",
                   1_796_119_200.123456, 1e-7, "v720", 2**62 - 1, "bad \u2028 line"),
        WatchEvent("e-2", "s", "a1", "u", "heartbeat", 1.5e16, 12345678.25, "", 0, ""),
    ):
        doc = dataclasses.asdict(e)
        assert e.to_json() == json.dumps(doc, separators=(",", ":"))
        assert WatchEvent.from_json(e.to_json()) == e
