"""package_copy: ready masters (MP4, MKV, MPEG-TS; H.264/HEVC + AAC) packaged into
CMAF without re-encoding, judged by FFmpeg (decode, packets) and our box reader."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

import native
from tests.media import (
    bigbuckbunny,
    decode_errors,
    ffmpeg,
    ffprobe,
    joined,
    make_master,
    make_rotated_master,
)
from tests.native import isobmff

SEGMENT_SECONDS = 2.0
Packaged = tuple[Path, native.PipelineResult]


@dataclass
class SourcePacket:
    pts: float          # seconds
    keyframe: bool
    data: bytes


@pytest.fixture(scope="session")
def copy_masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 s 640x360 H.264 (B-frames, 1.5 s GOPs) + stereo AAC in MP4, MKV and TS."""
    d = tmp_path_factory.mktemp("copy-masters")
    mp4 = make_master(
        d / "master.mp4", seconds=6, width=640, height=360, fps="30",
        vcodec=["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                "-x264-params", "keyint=45:min-keyint=45:scenecut=0:bframes=3"],
    )
    out = {"mp4": mp4}
    for ext, fmt in (("mkv", "matroska"), ("ts", "mpegts"), ("mov", "mov")):
        out[ext] = d / f"master.{ext}"
        ffmpeg("-i", str(mp4), "-c", "copy", "-f", fmt, str(out[ext]))
    return out


def source_packets(path: Path, kind: str) -> list[SourcePacket]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        assert stream.time_base is not None
        tb = stream.time_base
        return [
            SourcePacket(float(p.pts * tb), p.is_keyframe, bytes(p))
            for p in c.demux(stream) if p.size and p.pts is not None
        ]


def samples(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams[0]) if p.size]


def expected_cuts(keyframes: list[float], target: float) -> list[float]:
    """The segmenter's rule: a segment ends at the first keyframe at or after the
    next multiple of the target after its start."""
    cuts = [keyframes[0]]
    for k in keyframes[1:]:
        if k >= (math.floor(cuts[-1] / target + 1e-9) + 1) * target - 1e-9:
            cuts.append(k)
    return cuts


@pytest.fixture(scope="session")
def packaged(copy_masters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, tuple[Path, native.PipelineResult]]:
    out = {}
    for ext, master in copy_masters.items():
        d = tmp_path_factory.mktemp(f"copy-{ext}")
        out[ext] = (d, native.package_copy(master, d, SEGMENT_SECONDS))
    return out


@pytest.mark.parametrize("ext", ["mp4", "mkv", "ts", "mov"])
def test_package_copy_decodes_and_cuts_at_source_keyframes(
    ext: str, copy_masters: dict[str, Path], packaged: dict[str, Packaged], tmp_path: Path
) -> None:
    out, result = packaged[ext]
    assert [r.id for r in result.renditions] == ["v360", "audio"]
    video, audio = result.renditions
    assert (video.track.codec, video.track.width, video.track.height) == ("h264", 640, 360)
    assert (audio.track.codec, audio.track.sample_rate, audio.track.channels) == ("aac", 48000, 2)
    assert result.duration_seconds == pytest.approx(6.0, abs=0.1)

    src_video = source_packets(copy_masters["mp4"], "video")
    keyframes = [p.pts for p in src_video if p.keyframe]
    assert keyframes == pytest.approx([0.0, 1.5, 3.0, 4.5])
    cuts = expected_cuts(keyframes, SEGMENT_SECONDS)
    assert cuts == pytest.approx([0.0, 3.0, 4.5])
    # Every video segment starts at a source keyframe; the first picture is time 0
    # (the AAC priming before it sits behind the audio track's edit list).
    starts = [s.start / video.track.timescale for s in video.segments]
    assert starts[0] == 0
    assert starts == pytest.approx(cuts, abs=2e-3)
    assert audio.track.presentation_offset == 1024

    # Audio segments start at the first AAC frame presented at or after each video
    # cut (presentation time: media time less the edit list's media_time).
    frame = 1024 / 48000
    assert len(audio.segments) == len(video.segments)
    for v, a in zip(video.segments[1:], audio.segments[1:], strict=True):
        vt = v.start / video.track.timescale
        at = (a.start - audio.track.presentation_offset) / audio.track.timescale
        assert vt - 1e-6 <= at < vt + frame

    for rendition in (video, audio):
        path = joined(out, rendition, tmp_path / f"{rendition.id}.mp4")
        assert decode_errors(path) == ""
        end = None
        for seg in rendition.segments:
            data = (out / rendition.id / f"{seg.number}.m4s").read_bytes()
            assert len(data) == seg.size
            boxes = isobmff.parse(data)
            tfdt = isobmff.tfdt(boxes[2].find("traf/tfdt"))
            assert tfdt == seg.start
            assert end is None or tfdt == end
            end = seg.start + seg.duration


@pytest.mark.parametrize("ext", ["mp4", "mkv", "ts", "mov"])
def test_samples_are_the_source_samples(
    ext: str, copy_masters: dict[str, Path], packaged: dict[str, Packaged], tmp_path: Path
) -> None:
    """No re-encode: every container gives back exactly the MP4 master's access units
    (TS: Annex B converted, AUD and repeated SPS/PPS dropped; ADTS headers stripped)."""
    out, result = packaged[ext]
    video, audio = result.renditions
    v = samples(joined(out, video, tmp_path / "v.mp4"))
    a = samples(joined(out, audio, tmp_path / "a.mp4"))
    assert v == [p.data for p in source_packets(copy_masters["mp4"], "video")]
    assert a == [p.data for p in source_packets(copy_masters["mp4"], "audio")]
    with av.open(str(copy_masters["mp4"])) as c:
        asc = bytes(c.streams.audio[0].codec_context.extradata or b"")
        # From ADTS we rebuild the 2-byte AudioSpecificConfig (LC, 48 kHz, stereo);
        # FFmpeg's encoder appends an explicit "no SBR" sync extension after it.
        assert audio.track.extradata == (asc[:2] if ext == "ts" else asc)
        assert video.track.extradata == bytes(c.streams.video[0].codec_context.extradata or b"")


def test_ffprobe_reads_packaged_streams(
    packaged: dict[str, tuple[Path, native.PipelineResult]], tmp_path: Path
) -> None:
    out, result = packaged["ts"]
    video, audio = result.renditions
    v = ffprobe(joined(out, video, tmp_path / "v.mp4"), "-show_streams")["streams"][0]
    assert (v["codec_name"], v["profile"], v["width"], v["height"]) == ("h264", "High", 640, 360)
    assert v["r_frame_rate"] == "30/1"
    a = ffprobe(joined(out, audio, tmp_path / "a.mp4"), "-show_streams")["streams"][0]
    assert (a["codec_name"], a["profile"], a["channels"]) == ("aac", "LC", 2)


def test_hevc_copy(tmp_path: Path) -> None:
    ts = make_master(
        tmp_path / "hevc.ts", seconds=3, width=320, height=240, fps="25",
        vcodec=["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                "-x265-params", "keyint=25:min-keyint=25:log-level=error"],
        extra=["-f", "mpegts"],
    )
    mp4 = tmp_path / "hevc.mp4"
    ffmpeg("-i", str(ts), "-c", "copy", "-tag:v", "hvc1", str(mp4))
    results = {}
    for src in (ts, mp4):
        out = tmp_path / f"out-{src.suffix[1:]}"
        result = native.package_copy(src, out, 1.0)
        video = result.renditions[0]
        assert (video.id, video.track.codec) == ("v240", "hevc")
        assert len(video.segments) == 3
        path = joined(out, video, tmp_path / f"{src.suffix[1:]}.mp4")
        assert decode_errors(path) == ""
        results[src.suffix] = samples(path)
    # FFmpeg's TS -> MP4 copy keeps the in-band VPS/SPS/PPS (ours drops those that
    # repeat the hvcC) and a trailing 0x00 of each slice, which H.265 §7.4.2.4.4
    # says is not part of the NAL unit (it is the next start code's zero_byte).
    assert results[".ts"] == [drop_hevc_parameter_sets(s) for s in results[".mp4"]]
    assert results[".ts"] != results[".mp4"]


def drop_hevc_parameter_sets(sample: bytes) -> bytes:
    out, pos = [], 0
    while pos < len(sample):
        n = int.from_bytes(sample[pos : pos + 4], "big")
        if (sample[pos + 4] >> 1) & 0x3F not in (32, 33, 34, 35):
            nal = sample[pos + 4 : pos + 4 + n].rstrip(b"\x00")
            out.append(len(nal).to_bytes(4, "big") + nal)
        pos += 4 + n
    return b"".join(out)


def test_audio_only_master_cuts_on_its_own_clock(tmp_path: Path) -> None:
    m4a = tmp_path / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=5",
           "-c:a", "aac", "-b:a", "96k", str(m4a))
    result = native.package_copy(m4a, tmp_path / "out", 2.0)
    (audio,) = result.renditions
    assert audio.id == "audio" and audio.track.timescale == 44100
    starts = [s.start / 44100 for s in audio.segments]
    assert len(starts) == 3
    assert starts[1] == pytest.approx(2.0, abs=1024 / 44100)
    assert decode_errors(joined(tmp_path / "out", audio, tmp_path / "a.mp4")) == ""


def test_sar_and_display_size_are_kept(tmp_path: Path) -> None:
    src = make_master(tmp_path / "anamorphic.mp4", seconds=1, width=480, height=360, audio=False,
                      extra=["-vf", "setsar=4/3"])
    result = native.package_copy(src, tmp_path / "out", 2.0)
    video = result.renditions[0]
    assert (video.track.sar_num, video.track.sar_den) == (4, 3)
    s = ffprobe(joined(tmp_path / "out", video, tmp_path / "v.mp4"), "-show_streams")["streams"][0]
    assert s["sample_aspect_ratio"] == "4:3" and s["display_aspect_ratio"] == "16:9"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c:v", "mpeg2video", "-an"], "video codec 'mpeg2video'.*transcode"),
        (["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libmp3lame"],
         "audio codec 'mp3'.*transcode"),
    ],
)
def test_codecs_that_cannot_be_copied(tmp_path: Path, args: list[str], message: str) -> None:
    src = tmp_path / "master.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1", "-f", "lavfi",
           "-i", "sine=duration=1", *args, str(src))
    with pytest.raises(native.InvalidDataError, match=message):
        native.package_copy(src, tmp_path / "out", 2.0)
    assert not (tmp_path / "out").exists()


def _display_rotation(path: Path) -> float:
    """ffprobe's rotation of the first video stream's display matrix (0 without)."""
    doc = ffprobe(path, "-select_streams", "v:0", "-show_entries", "stream_side_data")
    for side in doc["streams"][0].get("side_data_list", []):
        if "rotation" in side:
            return float(side["rotation"])
    return 0.0


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_a_rotated_master_is_copied_with_its_matrix(tmp_path: Path, rotate: int) -> None:
    """A phone capture is stored sideways with a display matrix that turns it. The
    copy keeps the pictures as coded, so its tkhd carries the same quarter turn
    (it wrote a unity matrix, and the asset played sideways; then it was refused).
    The track reports the turn, the coded size stays; FFmpeg reads the output's
    rotation as the master's."""
    src = make_rotated_master(tmp_path / "rot.mp4", seconds=1.0, rotate=rotate)
    result = native.package_copy(src, tmp_path / "out", 2.0)
    [video] = [r for r in result.renditions if r.track.kind == native.TrackKind.VIDEO]
    master_turn = next(s.rotation for s in native.probe(src).streams if s.width)
    assert master_turn in (90, 180, 270)
    assert video.track.rotation == master_turn
    assert (video.track.width, video.track.height) == (320, 180)
    fragmented = joined(tmp_path / "out", video, tmp_path / "v.mp4")
    assert _display_rotation(fragmented) == _display_rotation(src) != 0.0


def test_missing_and_garbage_inputs(tmp_path: Path) -> None:
    with pytest.raises(native.NotFoundError):
        native.package_copy(tmp_path / "nope.mp4", tmp_path / "out", 2.0)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    with pytest.raises(ValueError):
        native.package_copy(garbage, tmp_path / "out", 2.0)
    with pytest.raises(ValueError, match="segment_seconds"):
        native.package_copy(garbage, tmp_path / "out", 0)


def test_faststart_and_truncated_mp4(copy_masters: dict[str, Path], tmp_path: Path) -> None:
    """The MP4 fast path (samples read by position from the source) with moov first,
    and a master cut off inside its mdat: an error naming the damage, not a crash
    and not silently short output."""
    faststart = tmp_path / "faststart.mp4"
    ffmpeg("-i", str(copy_masters["mp4"]), "-c", "copy", "-movflags", "+faststart", str(faststart))
    result = native.package_copy(faststart, tmp_path / "fs", SEGMENT_SECONDS)
    video = result.renditions[0]
    assert samples(joined(tmp_path / "fs", video, tmp_path / "v.mp4")) == [
        p.data for p in source_packets(copy_masters["mp4"], "video")]

    truncated = tmp_path / "truncated.mp4"
    data = faststart.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(native.InvalidDataError, match="truncated or damaged"):
        native.package_copy(truncated, tmp_path / "tr", SEGMENT_SECONDS)


def test_failed_segment_write_raises_in_the_caller(copy_masters: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """Segments are written on pool threads: a write that fails there (here a
    directory squats on 2.m4s) reaches the caller as an OSError naming the file."""
    out = tmp_path / "out"
    (out / "v360" / "2.m4s").mkdir(parents=True)
    with pytest.raises(OSError, match=r"v360/2\.m4s"):
        native.package_copy(copy_masters["mp4"], out, SEGMENT_SECONDS)
    # The same call into a clean directory still works: nothing was left wedged.
    assert native.package_copy(copy_masters["mp4"], tmp_path / "again", SEGMENT_SECONDS)


def shrink_script(copy_args: str = "") -> str:
    """A program that packages argv[1] into argv[2] (``copy_args`` added to the
    package_copy call) while a thread truncates the master under it; exit 3 with
    the error's text on stdout, 0 when the copy won the race."""
    return _SHRINK.replace("{copy_args}", copy_args)


_SHRINK = """
import os, sys, threading, time
from pathlib import Path
import native
master, out = Path(sys.argv[1]), Path(sys.argv[2])

def shrink() -> None:
    # As soon as the first segment exists the rest are being copied from the
    # mapped master: cut the file under them.
    deadline = time.monotonic() + 30
    while not any(out.glob("*/1.m4s")) and time.monotonic() < deadline:
        time.sleep(0.0005)
    os.truncate(master, 4096)

threading.Thread(target=shrink, daemon=True).start()
try:
    native.package_copy(master, out, 0.5{copy_args})
except (OSError, ValueError) as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_master_shrinking_during_the_copy_never_crashes(attempt: int, tmp_path: Path) -> None:
    """The fast path maps the master and hands the mapping to writev(2). A master
    truncated under it must give an error (or, when the copy won the race, a
    result), never SIGBUS: the process exits on its own."""
    import subprocess
    import sys

    master = make_master(tmp_path / "m.mp4", seconds=20, width=320, height=240, fps="25",
                         vcodec=["-c:v", "libx264", "-preset", "ultrafast", "-g", "12",
                                 "-b:v", "12M", "-pix_fmt", "yuv420p"])
    proc = subprocess.run([sys.executable, "-c", shrink_script(), str(master),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 3), (proc.returncode, proc.stderr)
    if proc.returncode == 3:
        assert "changed size" in proc.stdout or "truncated" in proc.stdout, proc.stdout


def test_opus_in_matroska(tmp_path: Path) -> None:
    src = make_master(tmp_path / "opus.mkv", seconds=2, width=320, height=240, fps="25",
                      channels=2, acodec=["-c:a", "libopus", "-b:a", "64k"])
    result = native.package_copy(src, tmp_path / "out", 1.0)
    audio = result.renditions[1]
    assert (audio.id, audio.track.codec, audio.track.timescale) == ("audio", "opus", 48000)
    path = joined(tmp_path / "out", audio, tmp_path / "a.mp4")
    assert decode_errors(path) == ""
    stream = ffprobe(path, "-show_streams")["streams"][0]
    assert (stream["codec_name"], stream["channels"]) == ("opus", 2)
    moov = isobmff.root((tmp_path / "out" / "audio" / "init.mp4").read_bytes()).find("moov")
    opus = moov.find("trak/mdia/minf/stbl/stsd/Opus")
    assert isobmff.parse(opus.payload, 28)[0].type == "dOps"


def test_raw_elementary_streams(copy_masters: dict[str, Path], tmp_path: Path) -> None:
    """Raw ADTS AAC packages (its config comes from the ADTS header); a raw H.264
    stream has no timestamps to copy and is refused with the reason."""
    aac = tmp_path / "tone.aac"
    ffmpeg("-i", str(copy_masters["mp4"]), "-map", "0:a", "-c", "copy", str(aac))
    (audio,) = native.package_copy(aac, tmp_path / "a", 2.0).renditions
    assert audio.track.extradata == b"\x11\x90"  # AAC LC, 48 kHz, stereo
    assert decode_errors(joined(tmp_path / "a", audio, tmp_path / "a.mp4")) == ""

    h264 = tmp_path / "video.h264"
    ffmpeg("-i", str(copy_masters["mp4"]), "-map", "0:v", "-c", "copy", str(h264))
    with pytest.raises(native.InvalidDataError, match="no timestamps"):
        native.package_copy(h264, tmp_path / "v", 2.0)


def test_real_clip(tmp_path: Path) -> None:
    """Big Buck Bunny (720p25 H.264 Main, 5.1 AAC, a single GOP): one video
    segment, and one audio segment, because audio follows the video's cuts rather
    than its own 2 s grid."""
    result = native.package_copy(bigbuckbunny(), tmp_path / "out", 2.0)
    video, audio = result.renditions
    assert (video.id, video.track.width, video.track.height) == ("v720", 1280, 720)
    assert (audio.track.channels, audio.track.sample_rate) == (6, 48000)
    assert len(video.segments) == len(audio.segments) == 1  # no keyframe after the first
    for r in (video, audio):
        path = joined(tmp_path / "out", r, tmp_path / f"{r.id}.mp4")
        assert decode_errors(path) == ""
    assert result.duration_seconds == pytest.approx(5.3, abs=0.05)
