"""The typed job request: every front door's options checked in one place."""

from __future__ import annotations

import json

import pytest

from metadata.jobs import Job, JobRequest, RequestError, backoff_seconds, parse_ladder_spec


def test_form_fields_become_a_typed_request() -> None:
    defaults = JobRequest(preset="medium", segment_seconds=6.0)
    req = JobRequest.parse({"ladder": "720:3000", "copy": "false", "segment_seconds": "2"},
                           defaults)
    assert (req.ladder, req.copy, req.segment_seconds, req.preset) == \
        ("720:3000", False, 2.0, "medium")
    assert JobRequest.parse({"copy": "true"}).copy is True
    assert JobRequest.parse({"copy": True}).copy is True
    assert JobRequest.parse({}, defaults).segment_seconds == 6.0
    assert JobRequest.parse({"ladder": ""}).ladder is None
    assert JobRequest.parse({"segment_seconds": 6, "gop_seconds": 2.5}).gop == 2.0


@pytest.mark.parametrize(("raw", "says"), [
    ({"preset": "turbo"}, "unknown preset 'turbo'"),
    ({"segment_seconds": "nan"}, "segment_seconds must be a positive, finite number"),
    ({"segment_seconds": "inf"}, "segment_seconds must be a positive, finite number"),
    ({"segment_seconds": "-1"}, "segment_seconds must be a positive, finite number"),
    ({"segment_seconds": "0"}, "segment_seconds must be a positive, finite number"),
    ({"segment_seconds": "abc"}, "segment_seconds must be a number of seconds"),
    ({"segment_seconds": True}, "segment_seconds must be a number of seconds"),
    ({"segment_seconds": 3600}, "segment_seconds must be within"),
    ({"gop_seconds": float("nan")}, "gop_seconds must be a positive, finite number"),
    ({"copy": "maybe"}, "copy must be true or false"),
    ({"encoder": "tpu"}, "unknown encoder 'tpu'"),
    ({"ladder": "720"}, "bad ladder item '720'"),
    ({"ladder": "721:3000"}, "must be even"),
    ({"ladder": "720:3000,720:2000"}, "given twice"),
    ({"ladder": "720:3000", "copy": True}, "ladder and copy exclude each other"),
    ({"presett": "fast"}, "unknown job option 'presett'"),
    ({"preset": ["fast"]}, "preset must be text"),
    ({"source_name": "a\nb"}, "source_name must be at most"),
])
def test_bad_options_are_refused_with_the_field_named(raw: dict[str, object], says: str) -> None:
    with pytest.raises(RequestError, match=None) as err:
        JobRequest.parse(raw)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_request_round_trips_through_json() -> None:
    req = JobRequest.parse({"ladder": "480:1500", "preset": "fast", "segment_seconds": "6",
                            "source_name": "a.mov"})
    assert JobRequest.from_json(req.to_json()) == req
    assert json.loads(req.to_json())["segment_seconds"] == 6.0


def test_ladder_spec_is_tallest_first() -> None:
    assert parse_ladder_spec("360:800, 1080:5000,720:3000") == [(1080, 5000), (720, 3000),
                                                                 (360, 800)]


def test_claimable_and_backoff() -> None:
    job = Job(id="j", asset_id="a", request=JobRequest())
    assert job.claimable(now=100.0)
    job.lease_holder, job.lease_expires = "h:1:x", 150.0
    assert not job.claimable(now=100.0) and job.claimable(now=151.0)
    job.lease_holder, job.not_before = None, 200.0
    assert not job.claimable(now=151.0)
    assert [backoff_seconds(a) for a in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(30) == 300.0
