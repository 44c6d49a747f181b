"""Posters and storyboards: the stills the transcode took become files.

The native core hands over one small RGB picture per interval of the output
timeline and the best-scored one again at poster size (native.Transcoder's
``thumbnail_interval``); a package-only job, which decodes nothing, takes its
stills from the master's keyframes here (PyAV, keyframes only). Either way this
module lays them out as the origin serves them:

- ``storyboard/N.jpg``: sprite sheets of ``COLUMNS x ROWS`` tiles, filled row by
  row, every sheet the full grid size so a DASH image Representation (DASH-IF
  thumbnail tiles) has one size; each sheet is a "segment" of the storyboard
  rendition (kind ``image``) in the segment index;
- ``storyboard/poster.jpg``: the poster, served as ``/vod/{asset}/poster.jpg``;
- the WebVTT thumbnails track is not a file: the origin builds
  ``storyboard.vtt`` from the segment index (packager.storyboard).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import native
from metadata.faults import message_line
from metadata.models import Rendition, Segment
from packager.storyboard import COLUMNS, ROWS, STORYBOARD_ID, tiles_text

__all__ = ["POSTER_NAME", "Still", "Stills", "interval_for", "keyframe_stills", "settle",
           "stills_of", "write_storyboard"]

WARNINGS = logging.getLogger("cdlc.warnings")

if TYPE_CHECKING:  # PyAV and numpy cost ~0.2 s to import: only when a job makes stills
    import av
    import numpy as np

POSTER_NAME = "poster.jpg"
THUMBNAIL_LONG = 160
POSTER_LONG = 1280
# Whole-second intervals a viewer's scrub bar can use, finest first: the first
# that keeps a title at or under MAX_TILES pictures is taken.
_INTERVALS = (2, 4, 5, 10, 15, 20, 30, 60, 120)
MAX_TILES = 400
MAX_COPY_TILES = 20  # each costs a full-size keyframe decode (~10 ms at 1080p here)
_SHEET_QUALITY = 5     # mjpeg qscale (2 best .. 31): tiles are small and many
_POSTER_QUALITY = 3


@dataclass(frozen=True)
class Still:
    """A picture of the title at ``time`` seconds: RGB rows, ``(height, width, 3)``."""

    time: float
    pixels: np.ndarray
    score: float = 0.0


@dataclass(frozen=True)
class Stills:
    """What a storyboard is made of: pictures about every ``interval`` seconds and
    the poster (None: the best-scored picture)."""

    pictures: list[Still]
    poster: Still | None
    interval: float


def interval_for(duration: float, max_tiles: int = MAX_TILES) -> int:
    """Seconds between storyboard tiles for a title of ``duration`` seconds. A chunked
    job's spans start on a whole-second grid, so every part takes the same marks."""
    for seconds in _INTERVALS:
        if duration / seconds <= max_tiles:
            return seconds
    return _INTERVALS[-1]


def from_native(picture: native.Picture) -> Still:
    import numpy as np
    pixels = np.frombuffer(picture.rgb, np.uint8).reshape(picture.height, picture.width, 3)
    return Still(picture.time, pixels, picture.score)


def stills_of(result: native.PipelineResult, interval: float) -> Stills | None:
    """The stills a transcode took (native.Transcoder ``thumbnail_interval``)."""
    pictures = [from_native(p) for p in result.thumbnails]
    if not pictures:
        return None
    poster = from_native(result.poster) if result.poster.width > 0 else None
    return Stills(pictures, poster, interval)


async def settle(task: asyncio.Future[Stills | None], master: Path,
                 shown: str) -> Stills | None:
    """The result of a keyframe read beside a copy; a master PyAV cannot read costs
    the storyboard only, said in one line naming the master as ``shown`` (never
    its server path)."""
    try:
        return await task
    except Exception as exc:
        WARNINGS.warning("%s: no storyboard or poster (%s)", shown,
                         message_line(exc).replace(str(master), shown))
        return None


def jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG of RGB pixels (libavcodec's mjpeg, full-range 4:2:0)."""
    import av
    import numpy as np
    height, width = pixels.shape[:2]
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 1)
    codec.qscale = True
    codec.global_quality = quality * 118  # FF_QP2LAMBDA: a qscale in lambda units
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
    packets = codec.encode(frame.reformat(format="yuvj420p")) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_storyboard(
    out_dir: Path, asset_id: str, stills: Stills | None, duration: float,
) -> tuple[Rendition, list[Segment]] | None:
    """Sheets and poster under ``out_dir/storyboard``; the storyboard rendition and
    its segments (one per sheet, times in ms). None when there is no still."""
    import numpy as np
    if stills is None or not stills.pictures or duration <= 0:
        return None
    interval = stills.interval
    poster = stills.poster
    pictures = sorted(stills.pictures, key=lambda s: s.time)
    tile_h, tile_w = pictures[0].pixels.shape[:2]
    count = max(1, math.ceil(duration / interval - 1e-6))
    # One tile per mark, each the latest still at or before it (a keyframe-only
    # decode has fewer stills than marks; a transcode has exactly one per mark).
    marks = []
    j = 0
    for k in range(count):
        t = k * interval
        while j + 1 < len(pictures) and pictures[j + 1].time <= t + 1e-6:
            j += 1
        marks.append(pictures[j])
    folder = out_dir / STORYBOARD_ID
    folder.mkdir(parents=True, exist_ok=True)
    per_sheet = COLUMNS * ROWS
    sheet_ms = round(per_sheet * interval * 1000)
    segments = []
    for number, first in enumerate(range(0, count, per_sheet), start=1):
        sheet = np.zeros((tile_h * ROWS, tile_w * COLUMNS, 3), np.uint8)
        for i, still in enumerate(marks[first:first + per_sheet]):
            row, col = divmod(i, COLUMNS)
            pixels = still.pixels
            if pixels.shape[:2] != (tile_h, tile_w):  # a mid-title size change
                pixels = _fit(pixels, tile_w, tile_h)
            sheet[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w] = pixels
        data = jpeg(sheet, _SHEET_QUALITY)
        (folder / f"{number}.jpg").write_bytes(data)
        start = round(first * interval * 1000)
        end = min(start + sheet_ms, round(duration * 1000))
        segments.append(Segment(asset_id=asset_id, rendition_id=STORYBOARD_ID, number=number,
                                start=start, duration=max(1, end - start), size=len(data)))
    best = poster or max(pictures, key=lambda s: s.score)
    (folder / POSTER_NAME).write_bytes(jpeg(best.pixels, _POSTER_QUALITY))
    total = sum(s.size for s in segments)
    bitrate = round(total * 8 / duration)
    rendition = Rendition(
        asset_id=asset_id, id=STORYBOARD_ID, kind="image", codec="jpeg", codec_string="jpeg",
        timescale=1000, bitrate=bitrate, avg_bitrate=bitrate,
        peak_bitrate=max(round(s.size * 8000 / s.duration) for s in segments),
        width=tile_w * COLUMNS, height=tile_h * ROWS, frame_rate=f"1/{interval:g}",
        tiles=tiles_text(COLUMNS, ROWS),
    )
    return rendition, segments


def _fit(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    import av
    import numpy as np
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
    return frame.reformat(width=width, height=height).to_ndarray()


def keyframe_stills(master: Path) -> Stills | None:
    """Stills of a master without a transcode (a package-only job decodes nothing
    else): for each mark, the keyframe at or before it, found by a seek and decoded
    alone; upright with square pixels; the best-scored at poster size. Each costs
    a full-size keyframe decode, so a copy's storyboard is coarser than a
    transcode's (at most MAX_COPY_TILES pictures). None without a video stream.
    Raises av.error.FFmpegError for media PyAV cannot read."""
    import av
    pictures: list[Still] = []
    best: tuple[float, av.VideoFrame, float] | None = None
    with av.open(str(master)) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        duration = (container.duration or 0) / 1_000_000
        interval = interval_for(duration, MAX_COPY_TILES)
        sar = stream.sample_aspect_ratio or Fraction(1, 1)
        tb = stream.time_base or Fraction(1, 90000)
        start = stream.start_time or 0
        last_pts: int | None = None
        for k in range(max(1, math.ceil(duration / interval - 1e-6))):
            container.seek(start + int(k * interval / tb), stream=stream, backward=True)
            frame = next((f for f in container.decode(stream) if f.pts is not None), None)
            if frame is None or frame.pts == last_pts:
                if pictures:  # the same keyframe again (a GOP longer than the interval)
                    pictures.append(Still(k * interval, pictures[-1].pixels,
                                          pictures[-1].score))
                continue
            last_pts = frame.pts
            dar = frame.width * float(sar) / frame.height if frame.height else 1.0
            tw, th = _box(dar, THUMBNAIL_LONG)
            pixels = _upright(frame.reformat(width=tw, height=th, format="rgb24").to_ndarray(),
                              frame)
            score = picture_score(pixels)
            pictures.append(Still(k * interval, pixels, score))
            if best is None or score > best[2]:
                best = (k * interval, frame, score)
    if best is None:
        return None
    t, frame, score = best
    dar = frame.width * float(sar) / frame.height
    long_side = min(POSTER_LONG, max(frame.height, round(frame.height * dar)))
    pw, ph = _box(dar, long_side)
    poster = _upright(frame.reformat(width=pw, height=ph, format="rgb24").to_ndarray(), frame)
    return Stills(pictures, Still(t, poster, score), interval)


def _upright(pixels: np.ndarray, frame: av.VideoFrame) -> np.ndarray:
    """Turned as the display matrix says (a phone's portrait clip is stored
    sideways), as players show it."""
    import numpy as np
    turns = (round(-getattr(frame, "rotation", 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def _box(dar: float, long_side: int) -> tuple[int, int]:
    def even(v: float) -> int:
        return max(2, round(v / 2) * 2)
    return (even(long_side), even(long_side / dar)) if dar >= 1 else (even(long_side * dar),
                                                                      even(long_side))


def picture_score(pixels: np.ndarray) -> float:
    """The native core's poster score (luma spread, damped near black and white)."""
    y = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
    mean = float(y.mean())
    dark = min(max((mean - 16.0) / 48.0, 0.0), 1.0)
    bright = min(max((240.0 - mean) / 48.0, 0.0), 1.0)
    return float(y.std()) * dark * bright


# -- chunked jobs: each span's stills travel through the object store ----------------------
STILLS_DIR = "_stills"
_THUMBS_FILE, _POSTER_FILE = "thumbs.rgb", "poster.rgb"


def save_stills(folder: Path, stills: Stills) -> dict[str, Any]:
    """A span's stills as two raw RGB files under ``folder`` (uploaded with the
    part) and the facts to read them back, kept in the part's record."""
    import numpy as np
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / _THUMBS_FILE).open("wb") as fh:
        for p in stills.pictures:
            fh.write(np.ascontiguousarray(p.pixels).tobytes())
    meta: dict[str, Any] = {
        "interval": stills.interval,
        "pictures": [[p.time, p.score, p.pixels.shape[1], p.pixels.shape[0]]
                     for p in stills.pictures],
        "poster": None,
    }
    if stills.poster is not None:
        (folder / _POSTER_FILE).write_bytes(np.ascontiguousarray(stills.poster.pixels).tobytes())
        p = stills.poster
        meta["poster"] = [p.time, p.score, p.pixels.shape[1], p.pixels.shape[0]]
    return meta


def stills_files(meta: dict[str, Any]) -> list[str]:
    """The file names save_stills wrote for ``meta``."""
    return [_THUMBS_FILE] + ([_POSTER_FILE] if meta.get("poster") else [])


def load_stills(folder: Path, meta: dict[str, Any]) -> Stills:
    """What save_stills wrote. Raises ValueError when the files do not match."""
    import numpy as np
    raw = (folder / _THUMBS_FILE).read_bytes()
    pictures, offset = [], 0
    for t, score, w, h in meta["pictures"]:
        n = int(w) * int(h) * 3
        if offset + n > len(raw):
            raise ValueError(f"stills in {folder.name} are shorter than their record")
        pixels = np.frombuffer(raw, np.uint8, n, offset).reshape(int(h), int(w), 3)
        pictures.append(Still(float(t), pixels, float(score)))
        offset += n
    poster = None
    if meta.get("poster"):
        t, score, w, h = meta["poster"]
        pixels = np.frombuffer((folder / _POSTER_FILE).read_bytes(), np.uint8)
        poster = Still(float(t), pixels.reshape(int(h), int(w), 3), float(score))
    return Stills(pictures, poster, float(meta["interval"]))


def merge_stills(spans: Sequence[Stills]) -> Stills | None:
    """The spans' stills as one title's: pictures in time order, the best poster."""
    if not spans:
        return None
    pictures = sorted((p for s in spans for p in s.pictures), key=lambda p: p.time)
    posters = [s.poster for s in spans if s.poster is not None]
    poster = max(posters, key=lambda p: p.score) if posters else None
    return Stills(pictures, poster, spans[0].interval)
