"""The storyboard rendition in manifests: the WebVTT thumbnails track and the DASH
image AdaptationSet (DASH-IF thumbnail tiles), against golden files, parsed by
mpegdash and checked against the rules directly: cues cover the whole title
without gaps and every tile lies inside its sprite sheet."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

import pytest
from mpegdash.parser import MPEGDASHParser

from metadata.models import Rendition, Segment
from packager import build_master, build_mpd
from packager.storyboard import build_vtt, grid, interval
from tests.packager import fixtures
from tests.packager.test_manifests import QUERY, golden

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})")
TARGET = re.compile(r"storyboard/(\d+)\.jpg(\?[^#]*)?#xywh=(\d+),(\d+),(\d+),(\d+)")


def board(duration_ms: int = 14_014, interval_s: int = 2) -> tuple[Rendition, list[Segment]]:
    """A 5x5 storyboard of 160x90 tiles, one every ``interval_s`` s."""
    r = Rendition(asset_id=fixtures.ASSET.id, id="storyboard", kind="image", codec="jpeg",
                  codec_string="jpeg", timescale=1000, bitrate=20_000, width=800, height=450,
                  frame_rate=f"1/{interval_s}", tiles="5x5")
    sheet = 25 * interval_s * 1000
    segs = [Segment(r.asset_id, r.id, n, start, min(sheet, duration_ms - start), 30_000 + n)
            for n, start in enumerate(range(0, duration_ms, sheet), start=1)]
    return r, segs


def _ms(groups: tuple[str, ...]) -> int:
    h, m, s, ms = (int(g) for g in groups)
    return ((h * 60 + m) * 60 + s) * 1000 + ms


def cues(text: str) -> list[tuple[int, int, str]]:
    lines = text.split("\n")
    assert lines[0] == "WEBVTT"
    out = []
    for i, line in enumerate(lines):
        m = CUE.fullmatch(line)
        if m:
            out.append((_ms(m.groups()[:4]), _ms(m.groups()[4:]), lines[i + 1]))
    return out


@pytest.mark.parametrize("query", ["", QUERY])
def test_thumbnails_track(query: str) -> None:
    r, segs = board()
    text = build_vtt(r, segs, query)
    golden("storyboard_token.vtt" if query else "storyboard.vtt", text)
    found = cues(text)
    assert len(found) == 8  # ceil(14.014 / 2)
    assert found[0][0] == 0 and found[-1][1] == 14_014
    for (_, end, _), (start, _, _) in itertools.pairwise(found):
        assert end == start  # no gaps, no overlaps
    for i, (_, _, target) in enumerate(found):
        m = TARGET.fullmatch(target)
        assert m is not None, target
        number, q, x, y, w, h = m.groups()
        assert int(number) == 1 and (q or "") == (f"?{query}" if query else "")
        assert (int(w), int(h)) == (160, 90)
        assert 0 <= int(x) and int(x) + int(w) <= r.width
        assert 0 <= int(y) and int(y) + int(h) <= r.height
        assert (int(x) // 160, int(y) // 90) == (i % 5, i // 5)  # row by row


def test_long_title_spans_sheets() -> None:
    """A 2-hour title at 20 s a picture: 360 pictures on 15 sheets, the last cue
    ending at the end of the title."""
    r, segs = board(duration_ms=7_200_000, interval_s=20)
    found = cues(build_vtt(r, segs))
    assert len(found) == 360 and found[-1][1] == 7_200_000
    sheets = [int(TARGET.fullmatch(t).group(1)) for _, _, t in found]  # type: ignore[union-attr]
    assert sheets == [n for n in range(1, 16) for _ in range(25)][:360]


@pytest.mark.parametrize("query", ["", QUERY])
def test_mpd_has_a_thumbnail_tile_adaptation_set(query: str) -> None:
    r, segs = board()
    renditions = [*fixtures.renditions(), r]
    segments = {**fixtures.segments(), r.id: segs}
    text = build_mpd(fixtures.ASSET, renditions, segments, query)
    golden("manifest_storyboard_token.mpd" if query else "manifest_storyboard.mpd", text)
    MPEGDASHParser.parse(text)  # schema-shaped enough for the library
    root = ET.fromstring(text)
    images = [a for a in root.iter(f"{{{NS['d']}}}AdaptationSet")
              if a.get("contentType") == "image"]
    assert len(images) == 1
    aset = images[0]
    assert aset.get("mimeType") == "image/jpeg"
    rep = aset.find("d:Representation", NS)
    assert rep is not None and (rep.get("width"), rep.get("height")) == ("800", "450")
    prop = rep.find("d:EssentialProperty", NS)
    assert prop is not None and prop.get("schemeIdUri") == "http://dashif.org/thumbnail_tile"
    assert prop.get("value") == "5x5"
    tmpl = rep.find("d:SegmentTemplate", NS)
    assert tmpl is not None and tmpl.get("duration") == "50000" and tmpl.get("timescale") == "1000"
    assert tmpl.get("media") == ("$RepresentationID$/$Number$.jpg" + (f"?{query}" if query else ""))
    # The sheets' 50 s spans are not media time: the presentation and buffer are
    # those of the audio and video alone.
    plain = ET.fromstring(build_mpd(fixtures.ASSET, fixtures.renditions(), fixtures.segments()))
    for attr in ("mediaPresentationDuration", "minBufferTime"):
        assert root.get(attr) == plain.get(attr)


def test_hls_master_ignores_the_storyboard() -> None:
    r, segs = board()
    with_board = build_master([*fixtures.renditions(), r], {**fixtures.segments(), r.id: segs})
    assert with_board == build_master(fixtures.renditions(), fixtures.segments())


@pytest.mark.parametrize("tiles,rate", [("", "1/2"), ("5", "1/2"), ("0x5", "1/2"),
                                        ("5x5", ""), ("5x5", "0"), ("5x5", "x")])
def test_bad_storyboard_rendition_is_a_value_error(tiles: str, rate: str) -> None:
    r, segs = board()
    r.tiles, r.frame_rate = tiles, rate
    with pytest.raises(ValueError):
        grid(r)
        interval(r)
    with pytest.raises(ValueError):
        build_vtt(r, segs)
