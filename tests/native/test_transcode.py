"""native.Transcoder: one-pass ABR ladder into CMAF renditions, judged by ffprobe/ffmpeg.

Masters are tiny (<= 640x576, a few seconds) so the whole module stays fast; each
is made once per session with the ffmpeg CLI (tests/media.py)."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import native
from engine.ladder import plan_ladder
from tests import media
from tests.conftest import tmpfs
from tests.media import joined

Transcode = Callable[..., tuple[native.PipelineResult, Path]]


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("masters")


@pytest.fixture()
def transcode(tmp_path: Path) -> Transcode:
    def run(master: Path, spec: str | None = "360:800,240:400", **kwargs: object
            ) -> tuple[native.PipelineResult, Path]:
        out = tmp_path / master.stem
        kwargs.setdefault("segment_seconds", 2.0)
        kwargs.setdefault("gop_seconds", 1.0)
        kwargs.setdefault("preset", "ultrafast")
        rungs = plan_ladder(native.probe(master), spec)
        result = native.Transcoder(master, out, rungs, **kwargs).run()  # type: ignore[arg-type]
        return result, out

    return run


def video(result: native.PipelineResult) -> list[native.RenditionResult]:
    return [r for r in result.renditions if r.track.kind == native.TrackKind.VIDEO]


def keyframe_times(path: Path) -> list[float]:
    frames = media.ffprobe(path, "-skip_frame", "nokey", "-select_streams", "v:0",
                           "-show_entries", "frame=pts_time")["frames"]
    return [float(f["pts_time"]) for f in frames]


def source_video_seconds(path: Path) -> float:
    """End of the last source video frame (pts + duration), from the start of the file."""
    info = media.ffprobe(path, "-select_streams", "v:0", "-show_entries",
                         "packet=pts_time,duration_time:format=start_time")
    start = float(info["format"].get("start_time", 0) or 0)
    ends = [float(p["pts_time"]) + float(p.get("duration_time") or 0)
            for p in info["packets"] if p.get("pts_time") not in (None, "N/A")]
    return max(ends) - start


def frame_count(path: Path) -> int:
    info = media.ffprobe(path, "-count_frames", "-select_streams", "v:0",
                         "-show_entries", "stream=nb_read_frames")
    return int(info["streams"][0]["nb_read_frames"])


def max_volume_db(path: Path) -> float:
    stderr = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(path), "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr
    return float(stderr.split("max_volume:")[1].split("dB")[0])


def check_ladder(master: Path, result: native.PipelineResult, out: Path,
                 gop_seconds: float = 1.0) -> None:
    """Every rendition decodes cleanly; every video rung lasts as long as the source
    video within one frame and has its planned size, square pixels; keyframes are
    the same instants on every rung, one per GOP."""
    src_seconds = source_video_seconds(master)
    keys = [keyframe_times(joined(out, r)) for r in video(result)]
    assert keys and all(k == keys[0] for k in keys), keys
    fps = video(result)[0].track.frame_rate_num / video(result)[0].track.frame_rate_den
    gaps = [b - a for a, b in zip(keys[0], keys[0][1:], strict=False)]
    assert all(abs(g - gop_seconds) <= 1 / fps + 1e-3 for g in gaps), gaps
    frames = frame_count(joined(out, video(result)[0]))
    assert len(keys[0]) == math.ceil(frames / round(gop_seconds * fps))  # one per GOP
    for rendition in result.renditions:
        path = joined(out, rendition)
        assert media.decode_errors(path) == "", rendition.id
        stream = media.ffprobe(path, "-show_entries", "stream=width,height,sample_aspect_ratio,"
                               "sample_rate,channels,codec_name")["streams"][0]
        if rendition.track.kind == native.TrackKind.AUDIO:
            assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == (
                "aac", 48000, 2)
            assert max_volume_db(path) > -30  # the tone survived resampling and downmix
            continue
        track = rendition.track
        fps = track.frame_rate_num / track.frame_rate_den
        assert (stream["codec_name"], stream["width"], stream["height"]) == (
            "h264", track.width, track.height)
        assert stream.get("sample_aspect_ratio", "1:1") in ("1:1", "0:1")
        assert track.width % 2 == 0 and track.height % 2 == 0
        out_seconds = frame_count(path) / fps
        assert abs(out_seconds - src_seconds) <= 1 / fps + 1e-6, (rendition.id, out_seconds,
                                                                   src_seconds)
        listed = sum(s.duration for s in rendition.segments) / track.timescale
        assert abs(listed - out_seconds) <= 1e-6


# --- the ladder itself -----------------------------------------------------------

@pytest.fixture(scope="module")
def scene_cut_master(masters: Path) -> Path:
    """640x360 30 fps, 4 s, with a hard cut (the picture negated) at 1.5 s: a
    scene-cut detector would put an extra keyframe there."""
    path = masters / "cut.mp4"
    media.ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=4,"
        "negate=enable='gte(t,1.5)'",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", str(path),
    )
    return path


@pytest.mark.slow
def test_keyframes_exactly_at_gop_boundaries_on_every_rung(
    scene_cut_master: Path, transcode: Transcode
) -> None:
    result, out = transcode(scene_cut_master, "360:800,240:400,180:250", preset="veryfast")
    rungs = video(result)
    assert [r.id for r in rungs] == ["v360", "v240", "v180"]
    times = [keyframe_times(joined(out, r)) for r in rungs]
    # identical across rungs, one per second, nothing at the cut (1.5 s)
    assert all(t == times[0] for t in times)
    assert [round(t - times[0][0], 3) for t in times[0]] == [0.0, 1.0, 2.0, 3.0]
    for rendition in rungs:
        ts = rendition.track.timescale
        assert [s.start / ts for s in rendition.segments] == [0.0, 2.0]
        assert [s.duration / ts for s in rendition.segments] == [2.0, 2.0]
    check_ladder(scene_cut_master, result, out)


def test_rung_sizes_bitrates_and_audio(scene_cut_master: Path, transcode: Transcode) -> None:
    result, out = transcode(scene_cut_master, "360:600", preset="veryfast")
    (rung,) = video(result)
    assert (rung.track.width, rung.track.height, rung.track.bitrate) == (640, 360, 600_000)
    assert rung.track.codec == "h264" and rung.track.extradata[0] == 1  # avcC version 1
    size = sum(s.size for s in rung.segments)
    kbps = size * 8 / 4.0 / 1000
    assert 0.6 * 600 < kbps < 1.35 * 600  # capped VBR lands near its target
    audio = [r for r in result.renditions if r.id == "audio"]
    assert len(audio) == 1 and audio[0].track.codec == "aac"
    assert audio[0].track.sample_rate == 48000 and audio[0].track.channels == 2
    assert (out / "audio" / "init.mp4").exists() and (out / "v360" / "1.m4s").exists()
    assert result.source_frames == 120 and result.duration_seconds == pytest.approx(4.0)


def test_silent_master_gives_video_only_ladder(masters: Path, transcode: Transcode) -> None:
    master = media.make_master(masters / "silent.mp4", seconds=2, width=320, height=240,
                               audio=False)
    result, out = transcode(master, "240:300")
    assert [r.id for r in result.renditions] == ["v240"]
    check_ladder(master, result, out)


def test_crf_rung(scene_cut_master: Path, tmp_path: Path) -> None:
    rung = native.Rung(id="v240", height=240, bitrate=0, crf=30, maxrate=500_000,
                       bufsize=1_000_000)
    result = native.Transcoder(scene_cut_master, tmp_path, [rung], audio=False,
                               segment_seconds=2, gop_seconds=1, preset="ultrafast").run()
    assert [r.id for r in result.renditions] == ["v240"]
    assert media.decode_errors(joined(tmp_path, result.renditions[0])) == ""


def _psnr(path: Path, source: Path, width: int, height: int) -> float:
    """Average PSNR (dB) of ``path`` against the source scaled (bicubic) to its size."""
    stderr = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(path), "-i", str(source), "-lavfi",
         f"[1:v]scale={width}:{height}:flags=bicubic[ref];[0:v][ref]psnr", "-f", "null", "-"],
        capture_output=True, text=True, check=True).stderr
    return float(stderr.split("average:")[1].split()[0])


def test_rungs_take_the_scaled_pictures_of_a_rung_of_their_size_or_twice_it(
        scene_cut_master: Path, tmp_path: Path) -> None:
    # 640x360 master: v320 scales it; a CRF rung of the same size and the 160x90 rung
    # (half of 320x180) take v320's pictures; 240x136 (3:2 of nothing here) and the 1:1
    # rung come from the master itself.
    rungs = [native.Rung(id="v360", height=360, width=640, bitrate=800_000),
             native.Rung(id="v180", height=180, width=320, bitrate=300_000),
             native.Rung(id="v180crf", height=180, width=320, bitrate=0, crf=30,
                         maxrate=400_000, bufsize=800_000),
             native.Rung(id="v136", height=136, width=240, bitrate=200_000),
             native.Rung(id="v90", height=90, width=160, bitrate=100_000)]
    # One x264 thread per rung, so that the byte comparison below rests on the
    # pictures alone: with frame threads it once differed by a few bytes a segment
    # (1 run in 10, beside other tests).
    kwargs: dict[str, object] = {"segment_seconds": 2.0, "gop_seconds": 1.0,
                                 "preset": "veryfast", "encoder_threads": 1}
    result = native.Transcoder(scene_cut_master, tmp_path / "chained", rungs,
                               **kwargs).run()  # type: ignore[arg-type]
    assert {r.id: r.scaled_from for r in video(result)} == {
        "v360": "", "v180": "", "v180crf": "v180", "v136": "", "v90": "v180"}
    check_ladder(scene_cut_master, result, tmp_path / "chained")
    # The chained 2:1 rung is as good as one scaled from the master on its own.
    alone = native.Transcoder(scene_cut_master, tmp_path / "alone", [rungs[-1]],
                              **kwargs).run()  # type: ignore[arg-type]
    assert alone.renditions[0].scaled_from == ""
    chained_db = _psnr(joined(tmp_path / "chained", video(result)[-1]), scene_cut_master,
                       160, 90)
    alone_db = _psnr(joined(tmp_path / "alone", alone.renditions[0]), scene_cut_master,
                     160, 90)
    assert abs(chained_db - alone_db) < 0.2, (chained_db, alone_db)
    # A same-size rung sees exactly the pictures its own scaling would have made:
    # its CRF encode is the same as on its own.
    crf_alone = native.Transcoder(scene_cut_master, tmp_path / "crf", [rungs[2]],
                                  **kwargs).run()  # type: ignore[arg-type]
    assert [s.size for s in crf_alone.renditions[0].segments] == [
        s.size for s in video(result)[2].segments]


def test_a_full_disk_under_a_chained_rung_fails_the_run_in_one_line(
        scene_cut_master: Path, tmp_path: Path) -> None:
    """The disk fills while rungs feed each other: the run ends (no rung waits on
    a queue its failed neighbour no longer drains) with the write error."""
    with tmpfs(tmp_path / "tmpfs", "1m") as mount:
        rungs = [native.Rung(id="v180", height=180, width=320, bitrate=4_000_000),
                 native.Rung(id="v180b", height=180, width=320, bitrate=0, crf=0),
                 native.Rung(id="v90", height=90, width=160, bitrate=0, crf=0)]
        outcome: dict[str, BaseException] = {}

        def work() -> None:
            try:
                native.Transcoder(scene_cut_master, mount / "out", rungs, audio=False,
                                  segment_seconds=1.0, gop_seconds=1.0,
                                  preset="ultrafast").run()
            except BaseException as exc:  # judged below
                outcome["error"] = exc

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the run hung on a full disk"
        error = outcome.get("error")
        assert isinstance(error, native.NativeIOError), error
        assert "\n" not in str(error) and "No space left" in str(error), str(error)


# --- masters as they come ----------------------------------------------------------

MAKERS: dict[str, Callable[[Path], Path]] = {
    "rotated": lambda d: media.make_rotated_master(d / "rotated.mp4"),
    "interlaced": lambda d: media.make_interlaced_ts(d / "interlaced.ts"),
    "vfr": lambda d: media.make_vfr_master(d / "vfr.mp4"),
    "hevc10": lambda d: media.make_hevc10_mkv(d / "hevc10.mkv"),
    "prores51": lambda d: media.make_prores_51(d / "prores51.mov"),
    "odd23976": lambda d: media.make_odd_size_23976(d / "odd23976.mkv"),
    "vp9-webm": lambda d: media.make_master(
        d / "vp9.webm", seconds=2, width=320, height=240, fps="25",
        vcodec=["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
        acodec=["-c:a", "libopus"]),
    "av1-mkv": lambda d: media.make_master(
        d / "av1.mkv", seconds=2, width=320, height=240, fps="25",
        vcodec=["-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "loglevel=0"]),
    "dnxhr-mov": lambda d: media.make_master(
        d / "dnxhr.mov", seconds=2, width=320, height=240, fps="25",
        vcodec=["-c:v", "dnxhd", "-profile:v", "dnxhr_lb", "-pix_fmt", "yuv422p"],
        acodec=["-c:a", "pcm_s16le"]),
    "h264-ts": lambda d: media.make_master(  # audio starts before video (AAC priming)
        d / "h264.ts", seconds=2, width=320, height=240, fps="25"),
    "bigbuckbunny": lambda d: media.bigbuckbunny(),  # real 720p25 H.264 + 5.1 AAC clip
}


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.slow) if k == "bigbuckbunny" else k for k in sorted(MAKERS)],
)
def test_masters_as_they_come_give_clean_ladders(
    kind: str, masters: Path, transcode: Transcode
) -> None:
    master = MAKERS[kind](masters)
    info = native.probe(master)
    (src,) = [s for s in info.streams if s.kind == "video"]
    result, out = transcode(master)
    check_ladder(master, result, out)
    rungs = video(result)
    assert rungs, "no video rung"
    top = rungs[0].track
    # display aspect ratio kept (SAR and rotation applied), within rounding to even
    assert top.width / top.height == pytest.approx(
        src.display_width / src.display_height, rel=0.02)
    if kind == "odd23976":
        assert (top.frame_rate_num, top.frame_rate_den) == (24000, 1001)
    if kind == "vfr":
        assert (top.frame_rate_num, top.frame_rate_den) == (30, 1)  # the capture's rate
    if kind == "interlaced":
        assert (top.width, top.height) == (640, 360)  # 720x576 at 16:9


def _gray(path: Path, width: int, height: int) -> np.ndarray:
    """First frame as 8-bit luma, through the ffmpeg CLI (which applies rotation)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1",
         "-vf", f"scale={width}:{height}", "-pix_fmt", "gray", "-f", "rawvideo", "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width)


def test_rotated_capture_comes_out_upright(masters: Path, transcode: Transcode) -> None:
    master = MAKERS["rotated"](masters)
    info = native.probe(master)
    (src,) = [s for s in info.streams if s.kind == "video"]
    assert src.rotation in (90, 270) and (src.display_width, src.display_height) == (180, 320)
    result, out = transcode(master, None)
    (rung,) = video(result)
    assert (rung.track.width, rung.track.height) == (180, 320)  # portrait, short side 180
    ours = _gray(joined(out, rung), 180, 320).astype(float)
    reference = _gray(master, 180, 320).astype(float)  # ffmpeg's autorotated view
    # The white half of the coded picture ends up on the same side as in ffmpeg's
    # upright view, and the pictures agree overall.
    left, right = ours[:, :90].mean(), ours[:, 90:].mean()
    ref_left, ref_right = reference[:, :90].mean(), reference[:, 90:].mean()
    assert abs(ref_left - ref_right) > 150
    assert np.sign(left - right) == np.sign(ref_left - ref_right)
    assert np.abs(ours - reference).mean() < 12


def _idet(path: Path) -> dict[str, int]:
    stderr = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(path), "-an", "-vf", "idet", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr
    line = next(x for x in stderr.splitlines() if "Multi frame detection" in x)
    words = line.split("Multi frame detection:")[1].replace(":", " ").split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def test_interlaced_master_is_deinterlaced(masters: Path, transcode: Transcode) -> None:
    master = MAKERS["interlaced"](masters)
    (src,) = [s for s in native.probe(master).streams if s.kind == "video"]
    assert src.interlaced
    result, out = transcode(master, "576:3000", audio=False)
    (rung,) = video(result)
    before, after = _idet(master), _idet(joined(out, rung))
    assert before["TFF"] > before["Progressive"]  # the master really is combed
    assert after["Progressive"] >= 0.8 * sum(after.values())


# --- failure paths -----------------------------------------------------------------

@pytest.fixture(scope="module")
def long_master(masters: Path) -> Path:
    return media.make_master(masters / "long.mp4", seconds=20, width=640, height=360)


def test_cancel_stops_within_a_second(long_master: Path, tmp_path: Path) -> None:
    # 120 is fed by 240's scaled pictures: the chain stops as fast as the rest.
    rungs = plan_ladder(native.probe(long_master), "360:800,240:400,120:150")
    transcoder = native.Transcoder(long_master, tmp_path, rungs, preset="medium")
    calls: list[float] = []
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            transcoder.run(lambda f: calls.append(time.monotonic()))
        except native.CancelledError as exc:
            outcome["cancelled"] = exc
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            outcome["other"] = exc
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), "finished before it could be cancelled: make the master longer"
    cancelled_at = time.monotonic()
    transcoder.cancel()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "cancelled" in outcome, outcome
    assert float(outcome["at"]) - cancelled_at < 1.0  # type: ignore[arg-type]
    # progress came, at most ~10 times a second
    assert calls and len(calls) <= 10 * (calls[-1] - calls[0]) + 2


def test_progress_callback_exception_is_reraised(long_master: Path, tmp_path: Path) -> None:
    rungs = plan_ladder(native.probe(long_master), "240:400")
    transcoder = native.Transcoder(long_master, tmp_path, rungs, preset="ultrafast")

    def progress(fraction: float) -> None:
        raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        transcoder.run(progress)


def test_corrupt_mid_stream_fails_with_the_decoders_reason(masters: Path, tmp_path: Path) -> None:
    good = media.make_master(masters / "good.mp4", seconds=4, width=320, height=240,
                             vcodec=["-c:v", "libx264", "-preset", "veryfast",
                                     "-pix_fmt", "yuv420p"])
    bad = media.corrupt_middle(good, masters / "corrupt.mp4", fraction=0.5, size=4096)
    assert media.decode_errors(bad) != ""  # the ffmpeg CLI sees the damage too
    rungs = plan_ladder(native.probe(bad), "240:400")
    with pytest.raises(native.InvalidDataError) as info:
        native.Transcoder(bad, tmp_path, rungs, preset="ultrafast").run()
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(bad) in message and "decode video failed" in message
    assert "NAL" in message or "Invalid data" in message


def test_bad_configuration_is_a_value_error(long_master: Path, tmp_path: Path) -> None:
    rung = native.Rung(id="v240", height=240, bitrate=400_000)
    with pytest.raises(ValueError, match="multiple of gop_seconds"):
        native.Transcoder(long_master, tmp_path, [rung], segment_seconds=3, gop_seconds=2).run()
    with pytest.raises(ValueError, match="duplicate rung id"):
        native.Transcoder(long_master, tmp_path, [rung, rung]).run()
    with pytest.raises(native.NotFoundError, match=r"missing\.mp4"):
        native.Transcoder(tmp_path / "missing.mp4", tmp_path, [rung]).run()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(native.NativeIOError, match="a-file") as info:
        native.Transcoder(long_master, blocker / "out", [rung]).run()
    assert isinstance(info.value, OSError)


def test_gpu_encoder_detection_is_safe_here(long_master: Path, tmp_path: Path) -> None:
    available = native.encoders_available()
    assert available[0] == "libx264"
    assert native.nvenc_available() == ("h264_nvenc" in available)
    if native.nvenc_available():  # pragma: no cover - only on NVENC machines
        rung = native.Rung(id="v240", height=240, bitrate=400_000, encoder="h264_nvenc")
        result = native.Transcoder(long_master, tmp_path, [rung], audio=False).run()
        assert media.decode_errors(joined(tmp_path, result.renditions[0])) == ""
    else:
        rung = native.Rung(id="v240", height=240, bitrate=400_000, encoder="h264_nvenc")
        with pytest.raises(native.NativeError, match="h264_nvenc"):
            native.Transcoder(long_master, tmp_path, [rung], audio=False).run()
