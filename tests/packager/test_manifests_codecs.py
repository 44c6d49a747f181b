"""H.264, HEVC and AV1 renditions of one title in one multivariant playlist and
one MPD (golden files): every variant in the same audio group with its own
CODECS; one video AdaptationSet per codec family."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import m3u8
from mpegdash.parser import MPEGDASHParser

from metadata.models import Rendition, Segment
from packager import build_master, build_mpd
from tests.packager import fixtures

DATA = Path(__file__).parent / "data"
FAMILIES = {"hevc": "hvc1.1.6.L93.90", "av1": "av01.0.04M.08"}


def _golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("CDLC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


def _ladder() -> tuple[list[Rendition], dict[str, list[Segment]]]:
    renditions, segments = fixtures.renditions(), fixtures.segments()
    h264 = [r for r in renditions if r.kind == "video" and r.id in ("v720", "v360")]
    extra: list[Rendition] = []
    for family, codec_string in FAMILIES.items():
        for r in h264:
            rid = f"{r.id}_{family}"
            extra.append(replace(r, id=rid, codec=family, codec_string=codec_string))
            segments[rid] = [replace(s, rendition_id=rid, size=s.size * 6 // 10)
                             for s in segments[r.id]]
    return renditions + extra, segments


def test_master_lists_every_codec_with_the_same_audio() -> None:
    renditions, segments = _ladder()
    text = build_master(renditions, segments)
    _golden("master_codecs.m3u8", text)
    pl = m3u8.loads(text)
    codecs = {p.uri.split("/")[0]: p.stream_info.codecs for p in pl.playlists}
    assert codecs["v720_av1"] == "av01.0.04M.08,mp4a.40.2"
    assert codecs["v360_hevc"] == "hvc1.1.6.L93.90,mp4a.40.2"
    assert codecs["v1080"].startswith("avc1.")
    assert {p.stream_info.audio for p in pl.playlists} == {"audio"}


def test_mpd_has_one_adaptation_set_per_codec_family() -> None:
    renditions, segments = _ladder()
    text = build_mpd(fixtures.ASSET, renditions, segments)
    _golden("manifest_codecs.mpd", text)
    mpd = MPEGDASHParser.parse(text)
    sets = mpd.periods[0].adaptation_sets
    video = [a for a in sets if a.content_type == "video"]
    reps = [[(r.id, r.codecs) for r in a.representations] for a in video]
    assert [r[0][1].split(".")[0] for r in reps] == ["avc1", "hvc1", "av01"]
    assert [rid for rid, _ in reps[2]] == ["v720_av1", "v360_av1"]
    assert all(len({c for _, c in r}) == 1 for r in reps[1:])  # one codec per set
    ids = [a.id for a in sets]
    assert len(ids) == len(set(ids))  # audio moved past the video sets
    assert (video[2].max_width, video[2].max_height) == (1280, 720)


def test_single_codec_mpd_is_unchanged() -> None:
    text = build_mpd(fixtures.ASSET, fixtures.renditions(), fixtures.segments())
    assert text == (DATA / "manifest.mpd").read_text()
