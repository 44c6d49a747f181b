"""A catalogue title over real media: the native core packages a master with two
audio languages and a subtitle stream plus a sidecar SRT, the builders describe it,
and FFmpeg reads it back through the HLS master and the DASH MPD from disk: every
audio language and the subtitles arrive with their language tags.

`models` below is the mapping of native results onto metadata models that the
engine's to_models makes (name, presentation_offset, forced, characteristics)."""

from __future__ import annotations

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
