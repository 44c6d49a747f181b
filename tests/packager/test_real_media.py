"""Manifests over real packaged media: package_copy writes the segments, the
builders describe them, and FFmpeg plays the result through the HLS master and
the DASH MPD from disk."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import m3u8
import pytest

import native
from metadata.models import Asset, Rendition, Segment
from packager import build_iframes, build_master, build_media, build_mpd, codec_string
from tests.media import decode_errors, ffprobe, make_master


def models(asset_id: str, result: native.PipelineResult
           ) -> tuple[list[Rendition], dict[str, list[Segment]]]:
    renditions, segments = [], {}
    for r in result.renditions:
        t = r.track
        video = t.kind == native.TrackKind.VIDEO
        renditions.append(Rendition(
            asset_id=asset_id, id=r.id, kind="video" if video else "audio", codec=t.codec,
            codec_string=codec_string(t.codec, t.extradata), timescale=t.timescale,
            bitrate=t.bitrate, width=t.width, height=t.height, sar=f"{t.sar_num}:{t.sar_den}",
            frame_rate=f"{t.frame_rate_num}/{t.frame_rate_den}" if t.frame_rate_num else "",
            sample_rate=t.sample_rate, channels=t.channels,
        ))
        segments[r.id] = [
            Segment(asset_id, r.id, s.number, s.start, s.duration, s.size, s.iframe_size)
            for s in r.segments
        ]
    return renditions, segments


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Rendition],
                                                                 dict[str, list[Segment]]]:
    d = tmp_path_factory.mktemp("published")
    master = make_master(
        d / "master.mp4", seconds=5, width=480, height=270, fps="25",
        vcodec=["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                "-x264-params", "keyint=25:min-keyint=25:scenecut=0"],
    )
    out = d / "asset"
    renditions, segments = models("asset", native.package_copy(master, out, 2.0))
    (out / "master.m3u8").write_text(build_master(renditions, segments))
    for r in renditions:
        (out / r.id / "media.m3u8").write_text(build_media(r, segments[r.id]))
        if r.kind == "video":
            (out / r.id / "iframes.m3u8").write_text(build_iframes(r, segments[r.id]))
    (out / "manifest.mpd").write_text(
        build_mpd(Asset(id="asset"), renditions, segments))
    return out, renditions, segments


def test_hls_master_plays(published: tuple[Path, list[Rendition], dict[str, list[Segment]]]
                          ) -> None:
    out, renditions, segments = published
    master = out / "master.m3u8"
    assert decode_errors(master) == ""
    info = ffprobe(master, "-show_streams", "-show_format")
    assert sorted(s["codec_type"] for s in info["streams"]) == ["audio", "video"]
    assert float(info["format"]["duration"]) == pytest.approx(5.0, abs=0.1)
    # BANDWIDTH from the sizes of the files on disk, not from our own records.
    pl = m3u8.loads(master.read_text())

    def file_peak(r: Rendition) -> int:
        return math.ceil(max(
            Fraction((out / r.id / f"{s.number}.m4s").stat().st_size * 8 * r.timescale,
                     s.duration)
            for s in segments[r.id]))

    video, audio = renditions
    assert pl.playlists[0].stream_info.bandwidth == file_peak(video) + file_peak(audio)
    assert pl.playlists[0].stream_info.codecs == f"{video.codec_string},mp4a.40.2"
    assert video.codec_string.startswith("avc1.64")


def test_iframe_playlist_byte_ranges_decode(
    published: tuple[Path, list[Rendition], dict[str, list[Segment]]]
) -> None:
    out, renditions, segments = published
    video = renditions[0]
    # Each byte range (init + first bytes of a segment) is a decodable I-frame.
    for s in segments[video.id]:
        data = (out / video.id / "init.mp4").read_bytes()
        data += (out / video.id / f"{s.number}.m4s").read_bytes()[: s.iframe_size]
        probe = out / f"iframe{s.number}.mp4"
        probe.write_bytes(data)
        frames = ffprobe(probe, "-count_frames", "-show_streams")["streams"][0]
        assert frames["nb_read_frames"] == "1"


def test_dash_manifest_plays(published: tuple[Path, list[Rendition], dict[str, list[Segment]]]
                             ) -> None:
    out, _, _ = published
    mpd = out / "manifest.mpd"
    assert decode_errors(mpd) == ""
    info = ffprobe(mpd, "-show_streams")
    assert sorted(s["codec_type"] for s in info["streams"]) == ["audio", "video"]
