"""Ladder planning: which renditions (size, bitrate) a master gets.

`plan_ladder(info, spec)` turns a probed master (or plain display dimensions) and
an optional `HEIGHT:KBPS[,HEIGHT:KBPS...]` spec into `native.Rung`s. Rules:

- A rung's label is the short side of the picture: a landscape 16:9 "720" rung is
  1280x720, a portrait 9:16 "720" rung is 720x1280. Ids are "v<label>".
- Sizes follow the display aspect ratio (SAR and rotation applied), rounded to even
  numbers for 4:2:0.
- Never upscaled: rungs above the source's short side are dropped; if none is
  left, a single rung at the source's own size is kept.
- Default bitrates (kbit/s, H.264, <= 30 fps) are those of common VOD ladders
  (Apple HLS Authoring Spec, Appendix 2 ballpark); sources above 30 fps get 1.5x.
- `codecs` plans one rung set per codec family: ids "v<label>" (H.264),
  "v<label>_hevc" (libx265), "v<label>_av1" (libsvtav1). HEVC gets 0.7x and AV1
  0.6x of the H.264 bitrate for the same size: the savings at equal quality that
  published comparisons report for VOD encodes (HEVC ~30-40% below H.264, AV1
  ~40-50%: Netflix and Bitmovin codec studies, the AOM/SVT-AV1 papers), taken at
  their cautious end so the lower rungs do not starve.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import native
from metadata.jobs import parse_ladder_spec

__all__ = ["CODEC_RUNGS", "DEFAULT_LADDER", "SourceDims", "default_ladder",
           "parse_ladder_spec", "plan_ladder", "source_dims", "with_h264_encoder"]

# label (short side) -> kbit/s at <= 30 fps
DEFAULT_LADDER: tuple[tuple[int, int], ...] = (
    (2160, 14000),
    (1440, 8000),
    (1080, 5000),
    (720, 3000),
    (480, 1500),
    (360, 800),
)
HIGH_FPS_FACTOR = 1.5
# codec family -> (rung id suffix, encoder, bitrate factor against H.264)
CODEC_RUNGS: dict[str, tuple[str, str, float]] = {
    "h264": ("", "libx264", 1.0),
    "hevc": ("_hevc", "libx265", 0.7),
    "av1": ("_av1", "libsvtav1", 0.6),
}
H264_ENCODERS = ("libx264", "h264_nvenc")
# The smallest picture side each family's encoder opens for (Debian 12's x265 3.5
# and SVT-AV1 1.4 refuse smaller ones; x264 takes any even size).
MIN_SIDE: dict[str, int] = {"h264": 2, "hevc": 16, "av1": 64}
# What a user should hear about their request (the CLI prints these as one
# "cdlc: warning:" line each; a server logs them).
WARNINGS = logging.getLogger("cdlc.warnings")


@dataclass(frozen=True)
class SourceDims:
    """What the planner needs of a master: its display size (after SAR and
    rotation) and frame rate."""

    width: int
    height: int
    fps: float = 30.0


def source_dims(info: native.MediaInfo | SourceDims | tuple[int, int]) -> SourceDims:
    """Display size and frame rate of the first video stream."""
    if isinstance(info, SourceDims):
        return info
    if isinstance(info, tuple):
        return SourceDims(int(info[0]), int(info[1]))
    for stream in info.streams:
        if stream.kind == "video":
            width = stream.display_width or stream.width
            height = stream.display_height or stream.height
            if width > 0 and height > 0:
                return SourceDims(width, height, stream.frame_rate or 30.0)
    raise ValueError(f"{info.path}: no video stream to plan a ladder for")


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _size(src: SourceDims, label: int) -> tuple[int, int]:
    """(width, height) of a rung whose short side is `label`."""
    if src.width >= src.height:
        return _even(label * src.width / src.height), label
    return label, _even(label * src.height / src.width)


def default_ladder(src: SourceDims) -> list[tuple[int, int]]:
    """(label, kbit/s) pairs for a source: the standard rungs at or below its short
    side, plus one at its own size when that is >= 1.2x the tallest of them."""
    short = min(src.width, src.height)
    factor = HIGH_FPS_FACTOR if src.fps > 30.5 else 1.0
    rungs = [(label, kbps) for label, kbps in DEFAULT_LADDER if label <= short]
    top = _even(short) if short % 2 else short
    if not rungs or top >= 1.2 * rungs[0][0]:
        # bitrate by pixel count from the nearest standard rung (sqrt-ish scaling is
        # what quality per bit does; linear in pixels overshoots at the top)
        ref_label, ref_kbps = (rungs or [DEFAULT_LADDER[-1]])[0]
        kbps = max(200, round(ref_kbps * (top / ref_label) ** 1.5 / 50) * 50)
        rungs.insert(0, (top, kbps))
    return [(label, _round_kbps(kbps * factor)) for label, kbps in rungs]


def _round_kbps(kbps: float) -> int:
    return max(50, round(kbps / 50) * 50)


def plan_ladder(
    info: native.MediaInfo | SourceDims | tuple[int, int], spec: str | None = None,
    codecs: tuple[str, ...] = ("h264",),
) -> list[native.Rung]:
    """The rungs to encode, tallest first, codec by codec in `codecs` order. ``spec``
    None or "fixed": the default ladder for the source's size. Raises ValueError for
    a bad spec, an unknown codec or a master without video ("auto" is planned by
    engine.pertitle, from the fixed ladder)."""
    unknown = [c for c in codecs if c not in CODEC_RUNGS]
    if unknown:
        raise ValueError(f"unknown codec {unknown[0]!r}; use {', '.join(CODEC_RUNGS)}")
    if spec == "fixed":
        spec = None
    elif spec == "auto":
        raise ValueError("the auto ladder is planned by measuring the master "
                         "(engine.pertitle.analyse)")
    src = source_dims(info)
    short = min(src.width, src.height)
    if spec is None:
        pairs = default_ladder(src)
    else:
        wanted = parse_ladder_spec(spec)
        pairs = [(label, kbps) for label, kbps in wanted if label <= short]
        dropped = [label for label, _ in wanted if label > short]
        if not pairs:  # every rung would upscale: keep one at the source's size
            label, kbps = min(wanted)
            top = short if short % 2 == 0 else short - 1
            pairs = [(top, _round_kbps(kbps * (top / label) ** 1.5))]
            WARNINGS.warning("ladder: every rung is above the source (%dx%d); one rung at "
                             "%dp, %d kbit/s, instead of %dp at %d kbit/s", src.width,
                             src.height, top, pairs[0][1], label, kbps)
        elif dropped:
            WARNINGS.warning("ladder: %s above the source (%dx%d), not encoded (never "
                             "upscaled)", ", ".join(f"{d}p" for d in dropped), src.width,
                             src.height)
    rungs = []
    for codec in codecs:
        suffix, encoder, factor = CODEC_RUNGS[codec]
        fits = [(label, kbps) for label, kbps in pairs if label >= MIN_SIDE[codec]]
        if not fits:
            raise ValueError(f"{codec} needs pictures of at least {MIN_SIDE[codec]} pixels "
                             f"a side; the source is {src.width}x{src.height}: leave "
                             f"{codec} out of --codecs")
        if len(fits) < len(pairs):
            WARNINGS.warning("ladder: %s below %d pixels a side, not encoded in %s", ", ".join(
                f"{label}p" for label, _ in pairs if label < MIN_SIDE[codec]),
                MIN_SIDE[codec], codec)
        for label, kbps in fits:
            width, height = _size(src, label)
            rate = kbps if factor == 1.0 else _round_kbps(kbps * factor)
            rungs.append(native.Rung(id=f"v{label}{suffix}", height=height, width=width,
                                     bitrate=rate * 1000, encoder=encoder))
    return rungs


def with_h264_encoder(rungs: list[native.Rung], encoder: str) -> list[native.Rung]:
    """The rungs with their H.264 ones on `encoder` (libx264 or h264_nvenc, the
    worker's choice); HEVC and AV1 rungs keep their own encoder."""
    return [native.Rung(**{**r.__dict__, "encoder": encoder}) if r.encoder in H264_ENCODERS
            else r for r in rungs]
