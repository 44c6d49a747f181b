"""JobRequest.codecs: parsed from a form field or a JSON list, checked, kept
through to_json/from_json."""

from __future__ import annotations

import pytest

from metadata.jobs import JobRequest, RequestError


def test_codecs_from_text_and_lists_round_trip() -> None:
    assert JobRequest().codecs == ("h264",)
    assert JobRequest.parse({"codecs": "h264, AV1"}).codecs == ("h264", "av1")
    request = JobRequest.parse({"codecs": ["hevc", "h264"]})
    assert request.codecs == ("hevc", "h264")
    assert JobRequest.from_json(request.to_json()) == request
    assert JobRequest.parse({"codecs": ""}).codecs == ("h264",)  # unset: the default


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"codecs": "h264,vp9"}, r"^unknown codec 'vp9' in codecs; use h264, hevc, av1$"),
        ({"codecs": ","}, r"^unknown codec '' in codecs"),
        ({"codecs": []}, r"^codecs must name at least one of h264, hevc, av1$"),
        ({"codecs": "av1,av1"}, r"^codecs names a codec twice: av1,av1$"),
        ({"codecs": 7}, r"^codecs must be a list like h264,av1, got 7$"),
        ({"codecs": "h264,av1", "copy": True}, r"^codecs and copy exclude each other"),
        ({"codecs": "av1", "encryption": "cbcs"}, r"^AV1 renditions cannot be encrypted"),
    ],
)
def test_bad_codecs_are_one_clear_line(raw: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        JobRequest.parse(raw)
