"""A catalogue title over real media: the native core packages a master with two
audio languages and a subtitle stream plus a sidecar SRT, the builders describe it,
and FFmpeg reads it back through the HLS master and the DASH MPD from disk: every
audio language and the subtitles arrive with their language tags.

`models` below is the mapping of native results onto metadata models that the
engine's to_models makes (name, presentation_offset, forced, characteristics)."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import native
from metadata.models import Asset, Rendition, Segment
from packager import (
    SDH_CHARACTERISTICS,
    build_master,
    build_media,
    build_mpd,
    codec_string,
)
from tests.media import decode_errors, ffmpeg, ffprobe
from tests.native import isobmff

KINDS = {native.TrackKind.VIDEO: "video", native.TrackKind.AUDIO: "audio",
         native.TrackKind.TEXT: "text"}


def models(asset_id: str, result: native.PipelineResult
           ) -> tuple[list[Rendition], dict[str, list[Segment]]]:
    renditions, segments = [], {}
    for r in result.renditions:
        t = r.track
        renditions.append(Rendition(
            asset_id=asset_id, id=r.id, kind=KINDS[t.kind], codec=t.codec,
            codec_string=codec_string(t.codec, t.extradata), timescale=t.timescale,
            bitrate=t.bitrate, width=t.width, height=t.height, sar=f"{t.sar_num}:{t.sar_den}",
            frame_rate=f"{t.frame_rate_num}/{t.frame_rate_den}" if t.frame_rate_num else "",
            sample_rate=t.sample_rate, channels=t.channels, language=t.language,
            name=t.name, forced=t.forced,
            characteristics=SDH_CHARACTERISTICS if t.sdh else "",
            presentation_offset=t.presentation_offset,
        ))
        segments[r.id] = [
            Segment(asset_id, r.id, s.number, s.start, s.duration, s.size, s.iframe_size)
            for s in r.segments
        ]
    return renditions, segments


@pytest.fixture(scope="module", params=["copy", "transcode"])
def published(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, list[Rendition]]:
    d = tmp_path_factory.mktemp("catalogue-real")
    srt = d / "en.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nHello\n\n"
                   "2\n00:00:02,500 --> 00:00:03,500\nWorld\n")
    fr_srt = d / "fr.srt"
    fr_srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nBonjour\n")
    master = d / "master.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
           "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000:duration=4",
           "-i", str(srt), "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-c:s", "srt", "-metadata:s:a:0", "language=eng",
           "-metadata:s:a:1", "language=fre", "-metadata:s:s:0", "language=eng", str(master))
    out = d / "asset"
    sidecar = [native.SubtitleSidecar(fr_srt, "fr", forced=True)]
    if request.param == "copy":
        result = native.package_copy(master, out, 2.0, subtitle_sidecars=sidecar)
    else:
        result = native.Transcoder(master, out, [native.Rung("v180", 180, 300_000)],
                                   segment_seconds=2.0, gop_seconds=1.0, preset="ultrafast",
                                   subtitle_sidecars=sidecar).run()
    renditions, segments = models("asset", result)
    (out / "master.m3u8").write_text(build_master(renditions, segments))
    for r in renditions:
        (out / r.id / "media.m3u8").write_text(build_media(r, segments[r.id]))
    (out / "manifest.mpd").write_text(build_mpd(Asset(id="asset"), renditions, segments))
    return out, renditions


def test_renditions(published: tuple[Path, list[Rendition]]) -> None:
    _, renditions = published
    assert [(r.id, r.kind, r.language) for r in renditions] == [
        ("v180", "video", "und"), ("audio", "audio", "eng"), ("audio_fra", "audio", "fra"),
        ("sub_eng", "text", "eng"), ("sub_fra_forced", "text", "fra")]


def test_hls_master_plays_every_language(published: tuple[Path, list[Rendition]]) -> None:
    out, _ = published
    master = out / "master.m3u8"
    assert decode_errors(master) == ""
    streams = ffprobe(master, "-show_streams")["streams"]
    found = sorted((s["codec_type"], s.get("tags", {}).get("language", ""))
                   for s in streams)
    # FFmpeg's HLS demuxer tags renditions with EXT-X-MEDIA's LANGUAGE (FFmpeg 5.1
    # does not open SUBTITLES groups: the subtitle playlists are read on their own).
    assert found == [("audio", "en"), ("audio", "fr"), ("video", "")]


def test_hls_subtitle_cues_keep_their_times(published: tuple[Path, list[Rendition]]) -> None:
    out, _ = published
    packets = ffprobe(out / "sub_eng" / "media.m3u8", "-show_entries",
                      "packet=pts_time,duration_time")["packets"]
    cues = sorted({(round(float(p["pts_time"]), 3), round(float(p["duration_time"]), 3))
                   for p in packets})
    assert cues == [(0.5, 1.0), (2.5, 1.0)]


def test_dash_manifest_plays_every_language(published: tuple[Path, list[Rendition]]) -> None:
    out, _ = published
    mpd = out / "manifest.mpd"
    # FFmpeg's DASH demuxer opens sidecar WebVTT only with its extension allowed.
    allow = ("-allowed_extensions", "ALL")
    assert decode_errors(mpd, *allow, "-sn") == ""
    streams = ffprobe(mpd, *allow, "-show_streams")["streams"]
    found = sorted((s["codec_type"], s.get("tags", {}).get("language", "")) for s in streams)
    assert found == [("audio", "en"), ("audio", "fr"), ("subtitle", "en"), ("subtitle", "fr"),
                     ("video", "")]


# ---- audio and video start together, as the players put them -----------------------
#
# Where a player puts a sample on its timeline is the browser's presentation time
# of the sample plus the SourceBuffer's timestampOffset the player sets:
# - the browser (Chromium's MP4 parser, track_run_iterator) presents a sample at
#   tfdt + its decode offset + its composition offset - the edit list's media_time;
# - dash.js (_calcMseTimeOffset) and Shaka (dash/segment_template.js) set
#   timestampOffset = Period@start - presentationTimeOffset / timescale;
# - hls.js shifts every track by the main (video) playlist's first tfdt, Shaka's
#   HLS each track by its own first tfdt: both 0 here, so the edit list alone acts.

FRAME = 1024 / 48000  # one AAC frame at 48 kHz, seconds
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", duration)
    assert match, duration
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _edit_media_time(init: bytes) -> int:
    """media_time of the init's one edit (ISO/IEC 14496-12 §8.6.6), 0 without edts."""
    trak = isobmff.root(init).find("moov/trak")
    try:
        elst = trak.find("edts/elst")
    except KeyError:
        return 0
    version, _ = isobmff.full_header(elst)
    fmt = ">Iqq" if version == 1 else ">Iii"
    count, _, media_time = struct.unpack_from(fmt, elst.payload, 4)
    assert count == 1
    return int(media_time)


def _default_duration(tfhd: isobmff.Box) -> int:
    """tfhd's default_sample_duration (§8.8.7), 0 when absent."""
    _, flags = isobmff.full_header(tfhd)
    off = 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
    return int(struct.unpack_from(">I", tfhd.payload, off)[0]) if flags & 0x8 else 0


def _browser_times(out: Path, rid: str) -> list[float]:
    """Presentation times (s) the browser gives the samples of segment 1, in order."""
    init = (out / rid / "init.mp4").read_bytes()
    timescale = _timescale(init)
    media_time = _edit_media_time(init)
    traf = isobmff.root((out / rid / "1.m4s").read_bytes()).find("moof/traf")
    dts = isobmff.tfdt(traf.find("tfdt"))
    default = _default_duration(traf.find("tfhd"))
    times = []
    for s in isobmff.trun(traf.find("trun")).samples:
        times.append((dts + s.composition_offset - media_time) / timescale)
        dts += s.duration or default
    return times


def _timescale(init: bytes) -> int:
    mdhd = isobmff.root(init).find("moov/trak/mdia/mdhd")
    version, _ = isobmff.full_header(mdhd)
    return int(struct.unpack_from(">I", mdhd.payload, 20 if version == 1 else 12)[0])


def _source_start(out: Path, rid: str) -> float:
    """Browser time of the first source sample: where the edit list starts the
    track (the AAC priming before it is not the master's sound)."""
    init = (out / rid / "init.mp4").read_bytes()
    first = min(_browser_times(out, rid))
    return max(first, 0.0) if _edit_media_time(init) else first


def _dash_offsets(out: Path) -> dict[str, float]:
    """Representation id -> the timestampOffset dash.js and Shaka set for it."""
    root = ET.fromstring((out / "manifest.mpd").read_text())
    offsets = {}
    for period in root.findall("d:Period", MPD_NS):
        start = _seconds(period.get("start", "PT0S"))
        for rep in period.findall("d:AdaptationSet/d:Representation", MPD_NS):
            template = rep.find("d:SegmentTemplate", MPD_NS)
            if template is None:
                continue  # sidecar WebVTT: no media timeline
            pto = int(template.get("presentationTimeOffset", "0"))
            offsets[str(rep.get("id"))] = start - pto / int(template.get("timescale", "1"))
    return offsets


@pytest.mark.parametrize("protocol", ["dash", "hls"])
def test_audio_and_video_start_within_one_audio_frame(
        published: tuple[Path, list[Rendition]], protocol: str) -> None:
    out, renditions = published
    video = next(r.id for r in renditions if r.kind == "video")
    audios = [r.id for r in renditions if r.kind == "audio"]
    # HLS: no per-track shift here (every first tfdt is 0, checked); DASH: the MPD's.
    if protocol == "hls":
        for rid in (video, *audios):
            traf = isobmff.root((out / rid / "1.m4s").read_bytes()).find("moof/traf")
            assert isobmff.tfdt(traf.find("tfdt")) == 0, rid
        offset = dict.fromkeys((video, *audios), 0.0)
    else:
        offset = _dash_offsets(out)
    picture = _source_start(out, video) + offset[video]
    assert picture == pytest.approx(0.0, abs=1e-9)
    for rid in audios:
        times = [t + offset[rid] for t in _browser_times(out, rid)]
        sound = _source_start(out, rid) + offset[rid]
        # The master's first sound plays with the first picture (less than one
        # AAC frame apart), and at most the one priming frame lies before it.
        assert abs(sound - picture) < FRAME, (rid, sound, picture)
        assert times[0] >= picture - FRAME - 1e-9, (rid, times[:3])
