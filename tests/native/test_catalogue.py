"""Catalogue packaging in the native core, timing and audio: AAC priming behind an
edit list (ISO/IEC 14496-12 §8.6.6) so audio and video start together, no runt
final audio segment, HEVC sync samples only where playback can start, every audio
stream of a master (and sidecar audio files) as a rendition of its own with
language and name, and a list of what was skipped. Both paths (transcode and
package-only copy) are judged by ffprobe and by our ISO-BMFF reader."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import native
from tests.media import decode_errors, ffmpeg, ffprobe, have, joined
from tests.native import isobmff

SEGMENT = 2.0
RATE = 48000
FRAME = 1024 / RATE  # one AAC frame, seconds


def edit_media_time(init: bytes) -> int | None:
    """media_time of the one elst entry (version 0), None without an edts."""
    trak = isobmff.root(init).find("moov/trak")
    try:
        elst = trak.find("edts/elst")
    except KeyError:
        return None
    version, _ = isobmff.full_header(elst)
    assert version == 0
    count, duration, media_time, rate = struct.unpack_from(">IIiI", elst.payload, 4)
    assert (count, duration, rate) == (1, 0, 0x00010000)
    return int(media_time)


def first_presentation(out: Path, r: native.RenditionResult) -> float:
    """Seconds at which the rendition's first sample is presented, as the boxes say:
    tfdt + earliest composition offset of segment 1 - the edit list's media_time."""
    seg = isobmff.root((out / r.id / f"{r.segments[0].number}.m4s").read_bytes())
    traf = seg.find("moof/traf")
    tfdt = isobmff.tfdt(traf.find("tfdt"))
    run = isobmff.trun(traf.find("trun"))
    t, earliest = 0, None
    for s in run.samples:
        at = t + s.composition_offset
        earliest = at if earliest is None else min(earliest, at)
        t += s.duration
    media_time = edit_media_time((out / r.id / "init.mp4").read_bytes()) or 0
    return float(tfdt + (earliest or 0) - media_time) / float(r.track.timescale)


def stream_start(path: Path) -> float:
    (stream,) = ffprobe(path, "-show_entries", "stream=start_time")["streams"]
    return float(stream["start_time"])


def first_frame_at_or_after_zero(path: Path) -> float:
    """pts of the first decoded frame that ffmpeg presents at t >= 0 (priming frames
    of a fragmented file come out with negative times)."""
    frames = ffprobe(path, "-show_entries", "frame=pts_time")["frames"]
    times = [float(f["pts_time"]) for f in frames]
    return min(t for t in times if t >= -1e-6)


def by_id(result: native.PipelineResult) -> dict[str, native.RenditionResult]:
    return {r.id: r for r in result.renditions}


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 s 320x240 30 fps H.264 (1 s GOPs, no B-frames) with two AAC tracks that
    outlast the picture by 0.2 s (English, and French titled "Français"), a
    subrip track and a font attachment, in Matroska and in MP4 (audio only)."""
    d = tmp_path_factory.mktemp("catalogue")
    font = d / "font.ttf"
    font.write_bytes(b"\x00\x01\x00\x00" + bytes(60))
    srt = d / "in.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nHello\n\n2\n00:00:02,000 --> 00:00:03,250\n"
                   "<i>World</i>\n\n")
    mkv = d / "master.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=4",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={RATE}:duration=4.2",
           "-f", "lavfi", "-i", f"sine=frequency=660:sample_rate={RATE}:duration=4.2",
           "-i", str(srt),
           "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-c:s", "srt",
           "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fre",
           "-metadata:s:a:1", "title=Français", "-metadata:s:s:0", "language=eng",
           "-attach", str(font), "-metadata:s:t", "mimetype=application/x-truetype-font",
           str(mkv))
    mp4 = d / "master.mp4"
    ffmpeg("-i", str(mkv), "-map", "0:v", "-map", "0:a", "-c", "copy", str(mp4))
    dub = d / "dub.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=880:sample_rate=44100:duration=3", str(dub))
    dub_aac = d / "dub.m4a"
    ffmpeg("-i", str(dub), "-c:a", "aac", "-ar", str(RATE), str(dub_aac))
    return {"mkv": mkv, "mp4": mp4, "dub": dub, "dub_aac": dub_aac}


@pytest.fixture(scope="module")
def transcoded(masters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, native.PipelineResult]:
    out = tmp_path_factory.mktemp("transcoded")
    t = native.Transcoder(masters["mkv"], out, [native.Rung("v240", 240, 300_000)],
                          segment_seconds=SEGMENT, gop_seconds=1.0, preset="ultrafast",
                          audio_sidecars=[native.AudioSidecar(masters["dub"], "de", "Deutsch")])
    return out, t.run()


@pytest.fixture(scope="module")
def copied(masters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, native.PipelineResult]:
    out = tmp_path_factory.mktemp("copied")
    result = native.package_copy(
        masters["mkv"], out, SEGMENT,
        audio_sidecars=[native.AudioSidecar(masters["dub_aac"], "ger", "Deutsch")])
    return out, result


@pytest.fixture(params=["transcode", "copy"])
def packaged(request: pytest.FixtureRequest) -> tuple[Path, native.PipelineResult]:
    name = "transcoded" if request.param == "transcode" else "copied"
    value: tuple[Path, native.PipelineResult] = request.getfixturevalue(name)
    return value


# ---- timing -------------------------------------------------------------------

def test_priming_is_an_edit_list_and_av_start_together(
        packaged: tuple[Path, native.PipelineResult]) -> None:
    out, result = packaged
    r = by_id(result)
    video, audio = r["v240"], r["audio"]
    # FFmpeg's aac encoder primes 1024 samples; the master's own MP4/MKV priming
    # (copied) is the same 1024.
    assert audio.track.presentation_offset == 1024
    assert edit_media_time((out / "audio" / "init.mp4").read_bytes()) == 1024
    assert edit_media_time((out / "v240" / "init.mp4").read_bytes()) is None
    # Our reader: the picture starts at 0; the audio's first (priming) frame lies
    # one frame before 0, so its second frame, the first source sample, plays at 0.
    assert first_presentation(out, video) == pytest.approx(0.0, abs=1e-9)
    assert first_presentation(out, audio) == pytest.approx(-FRAME, abs=1e-9)
    # ffprobe applies the edit list: the priming frame sits before 0 (one frame),
    # the first frame it presents is at 0 together with the first picture.
    a, v = joined(out, audio), joined(out, video)
    assert stream_start(a) == pytest.approx(-FRAME, abs=1e-4)
    assert abs(stream_start(a) - stream_start(v)) <= FRAME + 1e-4
    assert first_frame_at_or_after_zero(a) == pytest.approx(0.0, abs=1e-4)
    assert stream_start(v) == pytest.approx(0.0, abs=1e-4)


def test_hls_playlists_start_audio_and_video_together(
        packaged: tuple[Path, native.PipelineResult]) -> None:
    """The same judgement over HLS: ffprobe reads a media playlist per rendition."""
    out, result = packaged
    starts = {}
    for rid in ("v240", "audio"):
        r = by_id(result)[rid]
        lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:3",
                 "#EXT-X-PLAYLIST-TYPE:VOD", '#EXT-X-MAP:URI="init.mp4"']
        for s in r.segments:
            lines += [f"#EXTINF:{s.duration / r.track.timescale:.6f},", f"{s.number}.m4s"]
        lines.append("#EXT-X-ENDLIST")
        playlist = out / rid / "media.m3u8"
        playlist.write_text("\n".join(lines) + "\n")
        starts[rid] = stream_start(playlist)
    assert abs(starts["audio"] - starts["v240"]) <= FRAME + 1e-4, starts


def test_no_runt_final_audio_segment(packaged: tuple[Path, native.PipelineResult]) -> None:
    """The audio outlasts the 4 s picture by ~0.2 s: that tail joins the last full
    segment instead of becoming a 0.2 s segment 3; the timeline stays contiguous."""
    _, result = packaged
    for rid in ("audio", "audio_fra"):
        r = by_id(result)[rid]
        durations = [s.duration / r.track.timescale for s in r.segments]
        assert len(durations) == 2, durations
        assert durations[-1] > SEGMENT + 0.15, durations
        for a, b in zip(r.segments, r.segments[1:], strict=False):
            assert b.start == a.start + a.duration
    video = by_id(result)["v240"]
    assert [s.duration / video.track.timescale for s in video.segments] == [SEGMENT, SEGMENT]


def test_segmenter_merges_only_a_short_tail(tmp_path: Path) -> None:
    """The rule itself, on the transcode path's own clock: a tail of half a segment
    or more stays a segment of its own."""
    master = tmp_path / "m.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=5",
           "-f", "lavfi", "-i", f"sine=sample_rate={RATE}:duration=5",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(master))
    result = native.Transcoder(master, tmp_path / "o", [native.Rung("v120", 120, 200_000)],
                               segment_seconds=SEGMENT, gop_seconds=1.0, preset="ultrafast").run()
    audio = by_id(result)["audio"]
    # 5 s: 2 + 2 + ~1 s; 1 s is half a segment, not less: kept.
    assert len(audio.segments) == 3
    assert audio.segments[-1].duration / RATE == pytest.approx(1.0, abs=2 * FRAME)


@pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")
def test_hevc_open_gop_cra_with_rasl_is_not_a_sync_sample(tmp_path: Path) -> None:
    """x265 with open GOPs starts GOPs with CRA pictures followed by RASL pictures
    (which reference the GOP before): those CRAs are not places to start playback,
    so the copy marks only IDRs and RASL-free CRAs as sync samples and cuts there."""
    master = tmp_path / "hevc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=6",
           "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-tag:v", "hvc1",
           "-x265-params",
           "open-gop=1:keyint=50:min-keyint=10:bframes=3:scenecut=0:log-level=error",
           str(master))
    # The source marks its CRAs as keyframes.
    src_keys = [p for p in ffprobe(master, "-select_streams", "v", "-show_entries",
                                   "packet=flags")["packets"] if "K" in p["flags"]]
    assert len(src_keys) > 1
    out = tmp_path / "out"
    result = native.package_copy(master, out, 1.0)
    (video,) = [r for r in result.renditions if r.track.kind == native.TrackKind.VIDEO]
    sync_types, demoted = [], 0
    for seg in video.segments:
        data = (out / video.id / f"{seg.number}.m4s").read_bytes()
        box = isobmff.root(data)
        moof = box.find("moof")
        run = isobmff.trun(moof.find("traf/trun"))
        pos = moof.offset + run.data_offset
        types = []
        for s in run.samples:
            sample = data[pos:pos + s.size]
            pos += s.size
            off = 0
            while off + 5 <= len(sample):
                n = int.from_bytes(sample[off:off + 4], "big")
                nal_type = (sample[off + 4] >> 1) & 0x3F
                if nal_type < 32:
                    types.append(nal_type)
                    break
                off += 4 + n
        assert run.samples[0].flags & 0x00010000 == 0, "a segment starts with a sync sample"
        for i, (s, t) in enumerate(zip(run.samples, types, strict=True)):
            nxt = types[i + 1] if i + 1 < len(types) else None
            sync = not s.flags & 0x00010000
            if sync:
                sync_types.append(t)
                assert t in (19, 20) or (t == 21 and nxt not in (8, 9)), (t, nxt)
            elif t == 21:
                assert nxt in (8, 9)
                demoted += 1
    assert demoted >= 1, "the source had CRAs with RASL pictures after them"
    assert 19 in sync_types or 20 in sync_types
    assert decode_errors(joined(out, video)) == ""


# ---- audio ----------------------------------------------------------------------

def test_every_audio_stream_is_a_rendition_with_language_and_name(
        packaged: tuple[Path, native.PipelineResult]) -> None:
    out, result = packaged
    r = by_id(result)
    labels = {rid: (r[rid].track.language, r[rid].track.name)
              for rid in ("audio", "audio_fra", "audio_deu")}
    assert labels == {"audio": ("eng", "English"), "audio_fra": ("fra", "Français"),
                      "audio_deu": ("deu", "Deutsch")}
    for rid in labels:
        info = ffprobe(joined(out, r[rid]), "-show_streams")["streams"][0]
        assert info["codec_name"] == "aac"
        assert info["tags"]["language"] == labels[rid][0]
        assert decode_errors(joined(out, r[rid])) == ""


def test_sidecar_audio_starts_at_time_zero(packaged: tuple[Path, native.PipelineResult]) -> None:
    out, result = packaged
    dub = by_id(result)["audio_deu"]
    # Its priming frame before 0, behind the edit list, like the master's audio.
    assert dub.track.presentation_offset == 1024
    assert first_presentation(out, dub) == pytest.approx(-FRAME, abs=1e-9)
    total = sum(s.duration for s in dub.segments) - dub.track.presentation_offset
    assert total / dub.track.timescale == pytest.approx(3.0, abs=3 * FRAME)
    # Its cuts follow the video's (copy) or the segment clock (transcode).
    assert dub.segments[0].duration / dub.track.timescale == pytest.approx(SEGMENT, abs=2 * FRAME)


def test_nothing_is_dropped_silently(packaged: tuple[Path, native.PipelineResult],
                                     masters: dict[str, Path]) -> None:
    _, result = packaged
    skipped = [(s.kind, s.codec, s.source) for s in result.skipped]
    assert ("attachment", "ttf", str(masters["mkv"])) in skipped, skipped
    assert all(s.reason for s in result.skipped)
    # The subrip track is not skipped: it became a text rendition.
    assert "sub_eng" in by_id(result)


def test_copy_lists_an_audio_codec_it_cannot_copy(masters: dict[str, Path], tmp_path: Path) -> None:
    master = tmp_path / "mixed.mkv"
    ffmpeg("-i", str(masters["mp4"]), "-map", "0:v", "-map", "0:a:0", "-map", "0:a:1",
           "-c:v", "copy", "-c:a:0", "copy", "-c:a:1", "ac3", str(master))
    result = native.package_copy(master, tmp_path / "o", SEGMENT)
    assert [r.id for r in result.renditions] == ["v240", "audio"]
    (skip,) = result.skipped
    assert (skip.kind, skip.codec, skip.index) == ("audio", "ac3", 2)
    assert "transcode" in skip.reason


def test_copy_refuses_a_sidecar_it_cannot_copy(masters: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(native.InvalidDataError, match=r"pcm_s16le.*dub\.wav.*transcode"):
        native.package_copy(masters["mp4"], tmp_path / "o", SEGMENT,
                            audio_sidecars=[native.AudioSidecar(masters["dub"], "de")])


def test_untagged_audio_is_und(tmp_path: Path) -> None:
    master = tmp_path / "m.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2",
           "-f", "lavfi", "-i", f"sine=sample_rate={RATE}:duration=2",
           "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate={RATE}:duration=2",
           "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", "-metadata:s:a:0", "language=und", "-metadata:s:a:1", "language=und",
           str(master))
    result = native.package_copy(master, tmp_path / "o", SEGMENT)
    labels = [(r.id, r.track.language, r.track.name) for r in result.renditions
              if r.track.kind == native.TrackKind.AUDIO]
    assert labels == [("audio", "und", "Unknown"), ("audio_2", "und", "Unknown")]
