"""native.probe(): facts the planner needs, and clear errors for what is not media."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import native
from tests import media


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe-masters")


def only(info: native.MediaInfo, kind: str) -> native.StreamInfo:
    (stream,) = [s for s in info.streams if s.kind == kind]
    return stream


def test_plain_master(masters: Path) -> None:
    path = media.make_master(masters / "plain.mp4", seconds=2, width=640, height=360, fps="25")
    info = native.probe(path)
    assert info.path == str(path) and "mp4" in info.format
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.size == path.stat().st_size and info.bit_rate > 0
    v, a = only(info, "video"), only(info, "audio")
    assert (v.codec, v.width, v.height, v.display_width, v.display_height) == (
        "h264", 640, 360, 640, 360)
    assert v.frame_rate == pytest.approx(25.0) and not v.variable_frame_rate
    assert (v.pix_fmt, v.bit_depth, v.rotation, v.interlaced) == ("yuv420p", 8, 0, False)
    assert (a.codec, a.sample_rate, a.channels, a.channel_layout) == ("aac", 48000, 2, "stereo")


def test_rotation_and_display_size(masters: Path) -> None:
    v = only(native.probe(media.make_rotated_master(masters / "rot.mp4")), "video")
    assert (v.width, v.height) == (320, 180)
    assert v.rotation in (90, 270)
    assert (v.display_width, v.display_height) == (180, 320)


def test_interlaced_and_sar(masters: Path) -> None:
    v = only(native.probe(media.make_interlaced_ts(masters / "i.ts")), "video")
    assert v.interlaced and v.codec == "mpeg2video"
    assert (v.sar_num, v.sar_den) == (64, 45)
    assert (v.display_width, v.display_height) == (1024, 576)


def test_variable_frame_rate(masters: Path) -> None:
    info = native.probe(media.make_vfr_master(masters / "vfr.mp4"))
    v = only(info, "video")
    assert v.variable_frame_rate
    assert 10 < v.frame_rate < 25
    assert only(info, "audio").sample_rate == 44100


def test_ten_bit_and_multichannel(masters: Path) -> None:
    hevc = only(native.probe(media.make_hevc10_mkv(masters / "h.mkv")), "video")
    assert (hevc.codec, hevc.bit_depth, hevc.pix_fmt) == ("hevc", 10, "yuv420p10le")
    info = native.probe(media.make_prores_51(masters / "p.mov"))
    prores, pcm = only(info, "video"), only(info, "audio")
    assert (prores.codec, prores.bit_depth, prores.pix_fmt) == ("prores", 10, "yuv422p10le")
    assert (pcm.channels, pcm.channel_layout, pcm.sample_rate) == (6, "5.1", 44100)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(native.NotFoundError, match=r"nope\.mp4") as info:
        native.probe(missing)
    assert isinstance(info.value, LookupError)


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "text"])
def test_non_media_is_invalid_data(kind: str, masters: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(random.Random(3).randbytes(64 * 1024))
    elif kind == "text":
        path.write_text("this is not a video\n" * 100)
    else:
        # moov at the end (no faststart): the first half has ftyp + part of mdat only
        whole = media.make_master(masters / "whole.mp4", seconds=2, width=320, height=240)
        data = whole.read_bytes()
        assert data.find(b"moov") > len(data) // 2
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(native.InvalidDataError) as info:
        native.probe(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)
