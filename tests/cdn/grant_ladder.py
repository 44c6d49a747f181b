"""A ladder asset for the height-limit tests (cdn/tokens.py version 2, MAXH):
the origin fixtures' real CMAF clip (tests/origin/conftest.py ``media``) under
the rendition ids of a four-rung ladder, v1080 v720 v480 v360, plus its audio.

Every video rung carries the same small 320x240 files (what is under test is
which renditions a token may reach, not the pictures); the rendition rows say
the rung's size, as an ingest of that ladder would record it. The parsers read
back which renditions a master playlist (m3u8) and an MPD (mpegdash) list."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import m3u8
from mpegdash.parser import MPEGDASHParser

from tests.origin.conftest import Media

LADDER = (1080, 720, 480, 360)
VIDEO_IDS = tuple(f"v{label}" for label in LADDER)


def ladder_media(media: Media, root: Path) -> Media:
    """A Media under ``root`` with v1080..v360 (copies of the clip's v240) and
    the clip's audio; publish it with tests.origin.conftest.publish_fake."""
    source = next(r for r in media.renditions if r.kind == "video")
    audio = next(r for r in media.renditions if r.kind == "audio")
    out = Media(root)
    for label in LADDER:
        rid = f"v{label}"
        shutil.copytree(media.root / source.id, root / rid)
        width = round(label * 16 / 9 / 2) * 2
        out.renditions.append(dataclasses.replace(
            source, id=rid, width=width, height=label, bitrate=label * 4000))
        out.segments[rid] = [dataclasses.replace(s, rendition_id=rid)
                             for s in media.segments[source.id]]
    shutil.copytree(media.root / audio.id, root / audio.id)
    out.renditions.append(audio)
    out.segments[audio.id] = list(media.segments[audio.id])
    return out


def hls_renditions(text: str) -> tuple[set[str], set[int], set[str]]:
    """(video rendition ids, their heights, audio ids) a master playlist lists,
    variants and I-frame variants both."""
    pl = m3u8.loads(text)
    uris = [p.uri for p in pl.playlists] + [p.uri for p in pl.iframe_playlists]
    heights = {p.stream_info.resolution[1] for p in pl.playlists}
    heights |= {p.iframe_stream_info.resolution[1] for p in pl.iframe_playlists}
    audio = {m.uri.split("/")[0] for m in pl.media if m.type == "AUDIO"}
    return {u.split("/")[0] for u in uris}, heights, audio


def dash_renditions(text: str) -> tuple[set[str], set[int], set[str]]:
    """(video representation ids, their heights, audio ids) of an MPD."""
    mpd = MPEGDASHParser.parse(text)
    video: set[str] = set()
    heights: set[int] = set()
    audio: set[str] = set()
    for aset in mpd.periods[0].adaptation_sets:
        for rep in aset.representations:
            if aset.content_type == "video":
                video.add(rep.id)
                heights.add(int(rep.height))
            elif aset.content_type == "audio":
                audio.add(rep.id)
    return video, heights, audio
