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
    ({"time": "yesterday"}, "is not RFC 3339"),
    ({"time": "2026-12-01T08:00:00"}, "needs a UTC offset"),
    ({"position_seconds": -1}, "position_seconds must be a finite number >= 0"),
    ({"position_seconds": float("nan")}, "position_seconds must be a finite number >= 0"),
    ({"position_seconds": True}, "position_seconds must be a number"),
    ({"bitrate": "fast"}, "bitrate must be a number"),
    ({"rendition_id": "v" * 200}, "rendition_id is longer than 128 characters"),
])
def test_a_malformed_event_is_refused_with_its_reason(change: dict[str, Any],
                                                      reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        event_from_json(json.loads(json.dumps({**GOOD, **change})))


def test_not_an_object() -> None:
    with pytest.raises(EventError, match="JSON object"):
        event_from_json(["e1"])
