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
