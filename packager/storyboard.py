"""The storyboard rendition in manifests: a WebVTT thumbnails track and a DASH
image AdaptationSet over the same sprite sheets.

A storyboard is a rendition of kind ``image`` (id ``storyboard``): its segments
are JPEG sprite sheets ``storyboard/N.jpg`` of ``tiles`` (``"5x5"``: columns x
rows) pictures, one picture per ``1/frame_rate`` seconds, filled row by row;
``width`` x ``height`` is a whole sheet. Players read it two ways:

- WebVTT thumbnails (the de-facto format of hover previews, read by Video.js,
  JW Player, Shaka's ``addThumbnailsTrack`` and most web players): one cue per
  picture whose text is ``storyboard/N.jpg#xywh=x,y,w,h`` (W3C Media Fragments
  spatial dimension), relative to ``/vod/{asset}/storyboard.vtt``;
- DASH-IF IOP §6.2.6 thumbnail tiles: an AdaptationSet with contentType image,
  one Representation per sheet size, an EssentialProperty
  ``http://dashif.org/thumbnail_tile`` whose value is the grid, and a
  SegmentTemplate whose every segment is one sheet (dash.js and Shaka show them).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from fractions import Fraction

from metadata.models import Rendition, Segment

__all__ = ["COLUMNS", "ROWS", "STORYBOARD_ID", "TILE_SCHEME", "adaptation_set", "build_vtt",
           "grid", "interval", "tiles_text"]

STORYBOARD_ID = "storyboard"
COLUMNS = 5
ROWS = 5
TILE_SCHEME = "http://dashif.org/thumbnail_tile"


def tiles_text(columns: int, rows: int) -> str:
    return f"{columns}x{rows}"


def grid(r: Rendition) -> tuple[int, int]:
    """(columns, rows) of a storyboard rendition. Raises ValueError when unset."""
    try:
        columns, rows = (int(v) for v in r.tiles.split("x"))
    except ValueError:
        raise ValueError(f"rendition {r.id} has no tile grid ({r.tiles!r})") from None
    if columns <= 0 or rows <= 0:
        raise ValueError(f"rendition {r.id} has a bad tile grid ({r.tiles!r})")
    return columns, rows


def interval(r: Rendition) -> Fraction:
    """Seconds between pictures: the inverse of the rendition's frame rate ("1/2")."""
    try:
        rate = Fraction(r.frame_rate)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"rendition {r.id} has no picture rate ({r.frame_rate!r})") from None
    if rate <= 0:
        raise ValueError(f"rendition {r.id} has a bad picture rate ({r.frame_rate!r})")
    return 1 / rate


def _timestamp(ms: int) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{milli:03d}"


def _cues(r: Rendition, segments: Sequence[Segment]) -> Iterator[tuple[int, int, int, int]]:
    """(start ms, end ms, sheet number, tile index) of every picture, up to the end of
    the last sheet's span."""
    columns, rows = grid(r)
    step = interval(r) * r.timescale
    per_sheet = columns * rows
    for seg in segments:
        end = seg.start + seg.duration
        for i in range(per_sheet):
            start = seg.start + round(step * i)
            if start >= end:
                break
            yield start, min(seg.start + round(step * (i + 1)), end), seg.number, i


def build_vtt(r: Rendition, segments: Sequence[Segment], query: str = "") -> str:
    """The WebVTT thumbnails track: cues cover [0, end of the last sheet) without
    gaps, each pointing at its tile inside its sheet."""
    columns, rows = grid(r)
    tile_w, tile_h = r.width // columns, r.height // rows
    suffix = f"?{query}" if query else ""
    scale = 1000 / r.timescale
    lines = ["WEBVTT", ""]
    for start, end, number, i in _cues(r, segments):
        row, col = divmod(i, columns)
        lines.append(f"{_timestamp(round(start * scale))} --> {_timestamp(round(end * scale))}")
        lines.append(f"{r.id}/{number}.jpg{suffix}"
                     f"#xywh={col * tile_w},{row * tile_h},{tile_w},{tile_h}")
        lines.append("")
    return "\n".join(lines)


def adaptation_set(period: ET.Element, aset_id: int, r: Rendition, bandwidth: int,
                   query: str) -> None:
    """The DASH-IF thumbnail-tile AdaptationSet of a storyboard rendition."""
    columns, rows = grid(r)
    aset = ET.SubElement(period, "AdaptationSet", {
        "id": str(aset_id), "contentType": "image", "mimeType": "image/jpeg"})
    per_sheet = Fraction(columns * rows) * interval(r) * r.timescale
    rep = ET.SubElement(aset, "Representation", {
        "id": r.id, "bandwidth": str(max(1, bandwidth)), "width": str(r.width),
        "height": str(r.height)})
    ET.SubElement(rep, "EssentialProperty", {"schemeIdUri": TILE_SCHEME,
                                             "value": tiles_text(columns, rows)})
    media = "$RepresentationID$/$Number$.jpg"
    ET.SubElement(rep, "SegmentTemplate", {
        "timescale": str(r.timescale),
        "media": f"{media}?{query.replace('$', '$$')}" if query else media,
        "duration": str(round(per_sheet)),
        "startNumber": "1",
    })
