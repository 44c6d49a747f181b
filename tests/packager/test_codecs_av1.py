"""AV1 codec strings (AV1-ISOBMFF "Codecs Parameter String") read from real av1C
records: the short form for default colour, the long form when the sequence
header says otherwise, every field matching the record it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from packager.codecs import codec_string
from tests import media


def _av1c(path: Path) -> bytes:
    data = path.read_bytes()
    at = data.find(b"av1C")
    assert at > 4
    size = int.from_bytes(data[at - 4:at], "big")
    return data[at + 4:at - 4 + size]


def _encode(path: Path, *args: str) -> bytes:
    media.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=0.2",
                 "-pix_fmt", "yuv420p", *args, "-c:v", "libsvtav1", "-preset", "12", str(path))
    return _av1c(path)


def test_default_colour_gives_the_short_form(tmp_path: Path) -> None:
    av1c = _encode(tmp_path / "plain.mp4")
    level = av1c[1] & 0x1F
    assert codec_string("av1", av1c) == f"av01.0.{level:02d}M.08"


def test_colour_description_and_full_range_give_the_long_form(tmp_path: Path) -> None:
    av1c = _encode(tmp_path / "pc.mp4", "-color_primaries", "bt709", "-color_trc", "bt709",
                   "-colorspace", "bt709", "-color_range", "pc")
    level = av1c[1] & 0x1F
    # mono 0, 4:2:0 with unknown sample position (110), BT.709 x3, full range 1
    assert codec_string("av1", av1c) == f"av01.0.{level:02d}M.08.0.110.01.01.01.1"
    av1c = _encode(tmp_path / "bt2020.mp4", "-color_primaries", "bt2020", "-color_trc",
                   "smpte2084", "-colorspace", "bt2020nc")
    assert codec_string("av1", av1c).endswith(".0.110.09.16.09.0")


@pytest.mark.parametrize(
    "record",
    [
        bytes([0x81, 0x08, 0x0C, 0x00, 0x0A, 0x0B]),  # sequence header cut short
        bytes([0x81, 0x08, 0x0C, 0x00, 0x0A]),        # OBU size missing
        bytes([0x01, 0x08, 0x0C, 0x00]),              # marker bit clear
    ],
)
def test_broken_av1c_raises_value_error(record: bytes) -> None:
    with pytest.raises(ValueError, match=r"AV1|av1C|truncated"):
        codec_string("av1", record)
