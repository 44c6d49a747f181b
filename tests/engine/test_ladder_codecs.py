"""One rung set per codec family: ids, encoders and bitrates (HEVC 0.7x, AV1
0.6x of H.264 at the same size), and the worker's H.264 encoder choice leaving
the other families alone."""

from __future__ import annotations

import pytest

from engine.ladder import plan_ladder, with_h264_encoder


def test_one_rung_set_per_codec() -> None:
    rungs = plan_ladder((1920, 1080), "1080:5000,720:3000", ("h264", "av1", "hevc"))
    assert [(r.id, r.encoder, r.bitrate, r.width, r.height) for r in rungs] == [
        ("v1080", "libx264", 5_000_000, 1920, 1080),
        ("v720", "libx264", 3_000_000, 1280, 720),
        ("v1080_av1", "libsvtav1", 3_000_000, 1920, 1080),
        ("v720_av1", "libsvtav1", 1_800_000, 1280, 720),
        ("v1080_hevc", "libx265", 3_500_000, 1920, 1080),
        ("v720_hevc", "libx265", 2_100_000, 1280, 720),
    ]
    assert [r.id for r in plan_ladder((640, 360), None)] == ["v360"]  # default: H.264 only


def test_h264_encoder_choice_keeps_other_families() -> None:
    rungs = with_h264_encoder(plan_ladder((640, 360), "360:800", ("h264", "av1")), "h264_nvenc")
    assert [(r.id, r.encoder) for r in rungs] == [("v360", "h264_nvenc"),
                                                 ("v360_av1", "libsvtav1")]


def test_unknown_codec_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^unknown codec 'vp9'; use h264, hevc, av1$"):
        plan_ladder((640, 360), None, ("h264", "vp9"))


def test_a_codec_gets_no_rung_below_what_its_encoder_opens() -> None:
    """x265 opens pictures of 16 pixels a side and more, SVT-AV1 64: smaller rungs of
    those families are left out (H.264 keeps them), and a source too small for any
    is refused in one line (the encoder failed to open, a traceback retried)."""
    rungs = plan_ladder((640, 360), "360:800,48:60,12:30", ("h264", "hevc", "av1"))
    assert [r.id for r in rungs] == ["v360", "v48", "v12", "v360_hevc", "v48_hevc",
                                     "v360_av1"]
    with pytest.raises(ValueError, match=r"^av1 needs pictures of at least 64 pixels a side; "
                                         r"the source is 320x60: leave av1 out of --codecs$"):
        plan_ladder((320, 60), None, ("h264", "av1"))
    with pytest.raises(ValueError, match=r"^hevc needs .* 16 pixels .* 4000x10"):
        plan_ladder((4000, 10), None, ("hevc",))
    assert [r.id for r in plan_ladder((4000, 10), None)] == ["v10"]
