"""codec_string against FFmpeg's DASH muxer (its @codecs comes from the same
records), ffprobe's profile/level, and hand-built AudioSpecificConfigs."""

from __future__ import annotations

import re
from pathlib import Path

import av
import pytest

from packager import codec_string
from tests.media import ffmpeg, ffprobe, make_master


def extradata(path: Path, kind: str = "video") -> bytes:
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return bytes(stream.codec_context.extradata or b"")


def ffmpeg_dash_codecs(src: Path, tmp: Path) -> list[str]:
    mpd = tmp / "ff" / "manifest.mpd"
    mpd.parent.mkdir()
    ffmpeg("-i", str(src), "-c", "copy", "-f", "dash", str(mpd))
    return re.findall(r'codecs="([^"]+)"', mpd.read_text())


@pytest.mark.parametrize(
    ("x264", "expected_profile"),
    [
        (["-preset", "veryfast"], 0x64),                        # High
        (["-preset", "ultrafast", "-bf", "2"], 0x4D),           # Main
        (["-preset", "ultrafast", "-profile:v", "baseline"], 0x42),
    ],
)
def test_h264_and_aac_match_ffmpeg_dash_muxer(
    tmp_path: Path, x264: list[str], expected_profile: int
) -> None:
    src = make_master(tmp_path / "m.mp4", seconds=1, width=320, height=240,
                      vcodec=["-c:v", "libx264", *x264, "-pix_fmt", "yuv420p"])
    video = codec_string("h264", extradata(src))
    audio = codec_string("aac", extradata(src, "audio"))
    assert [c.lower() for c in ffmpeg_dash_codecs(src, tmp_path)] == [video.lower(), audio]
    assert video == f"avc1.{expected_profile:02X}{video[7:9]}{video[9:]}"
    assert audio == "mp4a.40.2"
    # The same stream in MPEG-TS: Annex B SPS instead of avcC, same string.
    ts = tmp_path / "m.ts"
    ffmpeg("-i", str(src), "-c", "copy", str(ts))
    assert codec_string("h264", extradata(ts)) == video


@pytest.mark.parametrize(("pix_fmt", "profile"), [("yuv420p", 1), ("yuv420p10le", 2)])
def test_hevc_from_hvcc_and_annexb(tmp_path: Path, pix_fmt: str, profile: int) -> None:
    ts = make_master(
        tmp_path / "h.ts", seconds=1, width=320, height=240, fps="25", audio=False,
        vcodec=["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", pix_fmt,
                "-x265-params", "log-level=error"],
    )
    mp4 = tmp_path / "h.mp4"
    ffmpeg("-i", str(ts), "-c", "copy", "-tag:v", "hvc1", str(mp4))
    info = ffprobe(mp4, "-show_streams")["streams"][0]
    assert info["profile"] == ("Main" if profile == 1 else "Main 10")
    string = codec_string("hevc", extradata(mp4))
    assert codec_string("hevc", extradata(ts)) == string
    # Annex E.3: profile, compatibility flags reversed (Main: bits 1,2 -> 0x6;
    # Main 10: bit 2 -> 0x4), tier + level_idc, constraint bytes without trailing zeros.
    compat = "6" if profile == 1 else "4"
    assert re.fullmatch(rf"hvc1\.{profile}\.{compat}\.L{info['level']}(\.[0-9A-F]{{2}})+", string)


def test_hevc_reference_strings() -> None:
    # hvcC headers for the strings in Apple's HLS authoring spec examples.
    main = bytes([1, 0x01, 0x60, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 93])
    assert codec_string("hevc", main + bytes(10)) == "hvc1.1.6.L93.B0"
    main10_high = bytes([1, 0x22, 0x20, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 153])
    assert codec_string("hevc", main10_high + bytes(10)) == "hvc1.2.4.H153.B0"


def asc(*fields: tuple[int, int]) -> bytes:
    """Pack (value, bits) pairs MSB first, zero-padded to whole bytes."""
    value = bits = 0
    for v, n in fields:
        value = (value << n) | v
        bits += n
    pad = -bits % 8
    return (value << pad).to_bytes((bits + pad) // 8, "big")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (asc((2, 5), (3, 4), (2, 4), (0, 3)), "mp4a.40.2"),                 # AAC LC 48k stereo
        (asc((5, 5), (6, 4), (2, 4), (3, 4), (2, 5)), "mp4a.40.5"),         # explicit SBR
        (asc((29, 5), (6, 4), (1, 4), (3, 4), (2, 5)), "mp4a.40.29"),       # explicit PS
        # Backward-compatible: LC + sync extension 0x2B7, SBR present (+ 0x548 PS).
        (asc((2, 5), (6, 4), (2, 4), (0, 3), (0x2B7, 11), (5, 5), (1, 1), (3, 4)), "mp4a.40.5"),
        (asc((2, 5), (6, 4), (1, 4), (0, 3), (0x2B7, 11), (5, 5), (1, 1), (3, 4),
             (0x548, 11), (1, 1)), "mp4a.40.29"),
        # FFmpeg's encoder: LC with an explicit "no SBR" extension.
        (bytes.fromhex("119056e500"), "mp4a.40.2"),
        (asc((31, 5), (3, 6), (3, 4), (2, 4)), "mp4a.40.35"),               # escape AOT
    ],
)
def test_aac_audio_specific_config(config: bytes, expected: str) -> None:
    assert codec_string("aac", config) == expected


def test_opus_and_av1() -> None:
    assert codec_string("opus", b"OpusHead\x01\x02") == "opus"
    # av1C: marker/version 0x81, profile 0 level 8 (4.0), Main tier, 8 bit.
    assert codec_string("av1", bytes([0x81, 0x08, 0x0C, 0x00])) == "av01.0.08M.08"
    assert codec_string("av1", bytes([0x81, 0x2D, 0xCC, 0x00])) == "av01.1.13H.10"


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        ("h264", b""), ("h264", b"\x01\x64"), ("h264", b"\x00\x00\x01\x68\xce"),
        ("h264", b"junk"), ("hevc", b"\x01" * 5), ("hevc", b"\x00\x00\x01\x42\x01"),
        ("hevc", b"\x00\x00\x01\x42\x01\x01"), ("aac", b""), ("aac", b"\x00\x00"),
        ("aac", b"\xf8"), ("av1", b"\x00\x00\x00\x00"), ("vp8", b""),
    ],
)
def test_garbage_raises_value_error(codec: str, data: bytes) -> None:
    with pytest.raises(ValueError):
        codec_string(codec, data)
