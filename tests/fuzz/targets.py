"""Fuzz targets: every parser of untrusted bytes we own. A target may raise
ValueError (the documented rejection); anything else is a bug.

Run one by hand:  .venv/bin/python -m tests.fuzz.targets codec_h264 -max_total_time=60 DIR
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from packager.codecs import codec_string
    from tests.native import isobmff

import native


def _codec(codec: str) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        try:
            result = codec_string(codec, data)
        except ValueError:
            return
        assert result.isascii() and result and "," not in result, result

    return target


def box_reader(data: bytes) -> None:
    """Our test-side ISO-BMFF reader, plus the field parsers on whatever it finds."""
    try:
        boxes = isobmff.parse(data)
    except ValueError:
        return
    stack = list(boxes)
    while stack:
        box = stack.pop()
        stack.extend(box.children)
        parsers: dict[str, Callable[[isobmff.Box], object]] = {
            "tfdt": isobmff.tfdt, "trun": isobmff.trun, "sidx": isobmff.sidx,
            "tfhd": isobmff.tfhd_default_flags, "ftyp": isobmff.brands, "styp": isobmff.brands,
        }
        if box.type in parsers:
            try:
                parsers[box.type](box)
            except ValueError:
                pass


def _native(fn: Callable[[bytes], bytes]) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        try:
            fn(data)
        except ValueError:  # native.InvalidDataError is a ValueError
            return

    return target


def annexb(data: bytes) -> None:
    out = native.annexb_to_length_prefixed(data)
    if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        assert out == data


def _subtitles(fmt: str) -> Callable[[bytes], None]:
    """Our WebVTT / SRT readers (native/src/text): a refusal names the line; cues
    that come back are sorted, positive-length, and write back as WebVTT that the
    reader accepts again with the same times."""

    def target(data: bytes) -> None:
        try:
            cues = native.parse_subtitles(data, fmt, "fuzz")
        except ValueError as e:
            assert str(e).startswith("fuzz:"), e
            return
        assert all(0 <= c.start_ms < c.end_ms for c in cues)
        assert all(a.start_ms <= b.start_ms for a, b in itertools.pairwise(cues))
        assert all(c.text and "\n\n" not in c.text for c in cues)
        if fmt == "srt":
            text = "WEBVTT\n\n" + "".join(
                f"{_ts(c.start_ms)} --> {_ts(c.end_ms)}\n{c.text}\n\n" for c in cues)
            again = native.parse_subtitles(text.encode(), "webvtt", "again")
            assert [(c.start_ms, c.end_ms) for c in again] == [(c.start_ms, c.end_ms) for c in cues]

    return target


def _ts(ms: int) -> str:
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "subtitle_webvtt": _subtitles("webvtt"),
    "subtitle_srt": _subtitles("srt"),
    "codec_h264": _codec("h264"),
    "codec_hevc": _codec("hevc"),
    "codec_aac": _codec("aac"),
    "codec_av1": _codec("av1"),
    "box_reader": box_reader,
    "native_avcc": _native(native.avc_decoder_config),
    "native_hvcc": _native(native.hevc_decoder_config),
    "native_annexb": annexb,
}


def main() -> None:
    name = sys.argv[1]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
