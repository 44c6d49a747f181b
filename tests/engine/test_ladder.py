"""engine.ladder: ladder specs and default ladders from the source."""

from __future__ import annotations

from pathlib import Path

import pytest

import native
from engine.ladder import SourceDims, parse_ladder_spec, plan_ladder
from tests import media


def sizes(rungs: list[native.Rung]) -> list[tuple[str, int, int, int]]:
    return [(r.id, r.width, r.height, r.bitrate // 1000) for r in rungs]


def test_parse_spec() -> None:
    assert parse_ladder_spec("720:3000,1080:5000, 360:800") == [
        (1080, 5000), (720, 3000), (360, 800)]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "empty"),
        ("1080", "bad ladder item"),
        ("1080:abc", "bad ladder item"),
        ("1080:5000,,720:3000", "bad ladder item"),
        ("1081:5000", "even"),
        ("0:5000", "even"),
        ("720:0", "bitrate"),
        ("720:3000,720:2000", "twice"),
    ],
)
def test_bad_specs_are_clear_value_errors(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_ladder_spec(spec)


def test_default_ladder_1080p30() -> None:
    assert sizes(plan_ladder((1920, 1080))) == [
        ("v1080", 1920, 1080, 5000), ("v720", 1280, 720, 3000),
        ("v480", 854, 480, 1500), ("v360", 640, 360, 800)]


def test_high_frame_rate_gets_more_bits() -> None:
    rungs = plan_ladder(SourceDims(1280, 720, 59.94))
    assert sizes(rungs) == [("v720", 1280, 720, 4500), ("v480", 854, 480, 2250),
                            ("v360", 640, 360, 1200)]


def test_never_upscaled() -> None:
    assert [r.id for r in plan_ladder((1280, 720))] == ["v720", "v480", "v360"]
    assert [r.id for r in plan_ladder((1280, 720), "1080:5000,720:3000,360:800")] == [
        "v720", "v360"]
    # every spec rung too tall: one rung at the source's size, bitrate scaled down
    (only,) = plan_ladder((640, 360), "1080:5000,720:3000")
    assert (only.id, only.width, only.height) == ("v360", 640, 360)
    assert only.bitrate < 3_000_000


def test_portrait_sized_by_short_side() -> None:
    rungs = plan_ladder((1080, 1920), "1080:5000,720:3000")
    assert sizes(rungs) == [("v1080", 1080, 1920, 5000), ("v720", 720, 1280, 3000)]


def test_odd_sources_and_small_sources() -> None:
    # 4:3 SD gets a rung at its own size above the standard ones
    assert [r.id for r in plan_ladder((720, 576))] == ["v576", "v480", "v360"]
    (tiny,) = plan_ladder((321, 241))
    assert (tiny.width % 2, tiny.height % 2) == (0, 0) and tiny.height == 240
    assert all(r.width % 2 == 0 for r in plan_ladder((1998, 1080)))


def test_from_probed_media_info(tmp_path: Path) -> None:
    master = media.make_rotated_master(tmp_path / "rot.mp4")  # 320x180 coded, shown upright
    rungs = plan_ladder(native.probe(master), "180:300")
    assert sizes(rungs) == [("v180", 180, 320, 300)]


def test_audio_only_master_has_no_ladder(tmp_path: Path) -> None:
    path = tmp_path / "tone.m4a"
    media.ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path))
    with pytest.raises(ValueError, match="no video stream"):
        plan_ladder(native.probe(path))
