"""The first end-to-end slice (issue 2): master -> `cdlc ingest` -> `cdlc serve` ->
HLS and DASH that ffprobe and ffmpeg read over HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CdlcEnv, http_status
from tests.media import bigbuckbunny, decode_errors, ffprobe, make_master

LADDER = "1080:5000,720:3000,480:1500,360:800"


def ingest_json(env: CdlcEnv, master: Path, asset_id: str, *args: str) -> dict[str, Any]:
    proc = env.run("ingest", str(master), "--id", asset_id, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def media_duration(target: str | Path) -> float:
    return float(ffprobe(target, "-show_entries", "format=duration")["format"]["duration"])


def keyframe_times(url: str) -> list[float]:
    frames = ffprobe(url, "-select_streams", "v:0", "-skip_frame", "nokey",
                     "-show_entries", "frame=pts_time")["frames"]
    return [round(float(f["pts_time"]), 3) for f in frames]


@pytest.fixture(scope="module")
def synthetic(cdlc_env: CdlcEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    master = make_master(tmp_path_factory.mktemp("m") / "master.mp4", seconds=10,
                         width=1920, height=1080, fps="30")
    return ingest_json(cdlc_env, master, "synthetic", "--ladder", LADDER)


def test_ingest_json_reports_the_ladder(synthetic: dict[str, Any]) -> None:
    assert synthetic["asset"] == "synthetic"
    assert synthetic["state"] == "ready"
    assert abs(synthetic["duration"] - 10.0) < 0.05
    video = [r for r in synthetic["renditions"] if r["kind"] == "video"]
    assert [r["height"] for r in video] == [1080, 720, 480, 360]
    assert [r["bitrate"] for r in video] == [5_000_000, 3_000_000, 1_500_000, 800_000]
    assert all(r["codec"].startswith("avc1.") for r in video)
    audio = [r for r in synthetic["renditions"] if r["kind"] == "audio"]
    assert len(audio) == 1 and audio[0]["codec"].startswith("mp4a.40.")
    # 10 s in 4 s segments: 4 + 4 + 2; the storyboard: one sheet of 5 pictures
    assert {r["segments"] for r in synthetic["renditions"] if r["kind"] != "image"} == {3}
    (board,) = [r for r in synthetic["renditions"] if r["kind"] == "image"]
    assert (board["id"], board["tiles"], board["segments"]) == ("storyboard", "5x5", 1)


def test_hls_and_dash_play_over_http(synthetic: dict[str, Any], origin_url: str) -> None:
    base = f"{origin_url}/vod/synthetic"
    hls = ffprobe(f"{base}/master.m3u8", "-show_streams", "-show_programs")
    heights = sorted({s.get("height", 0) for s in hls["streams"] if s["codec_type"] == "video"})
    assert heights == [360, 480, 720, 1080]
    mpd = ffprobe(f"{base}/manifest.mpd", "-show_streams")
    assert sorted(s.get("height", 0) for s in mpd["streams"] if s["codec_type"] == "video") == \
        [360, 480, 720, 1080]
    assert any(s["codec_type"] == "audio" for s in mpd["streams"])


def test_every_rendition_decodes_aligned_and_full_length(
    synthetic: dict[str, Any], origin_url: str
) -> None:
    base = f"{origin_url}/vod/synthetic"
    keyframes = {}
    for r in (r for r in synthetic["renditions"] if r["kind"] != "image"):
        url = f"{base}/{r['id']}/media.m3u8"
        assert decode_errors(url) == "", r["id"]
        duration = media_duration(url)
        assert abs(duration - 10.0) <= 1 / 30 + 1e-3, (r["id"], duration)
        if r["kind"] == "video":
            keyframes[r["id"]] = keyframe_times(url)
    reference = keyframes["v1080"]
    assert reference[:5] == [0.0, 2.0, 4.0, 6.0, 8.0]
    for rid, times in keyframes.items():
        assert times == reference, rid


def test_real_master_big_buck_bunny(cdlc_env: CdlcEnv, origin_url: str) -> None:
    """720p25 H.264 with 5.1 AAC: default ladder (never upscaled), stereo audio."""
    result = ingest_json(cdlc_env, bigbuckbunny(), "bbb")
    video = [r for r in result["renditions"] if r["kind"] == "video"]
    assert max(r["height"] for r in video) == 720
    base = f"{origin_url}/vod/bbb"
    for r in (r for r in result["renditions"] if r["kind"] != "image"):
        assert decode_errors(f"{base}/{r['id']}/media.m3u8") == "", r["id"]
    audio = ffprobe(f"{base}/audio/media.m3u8", "-show_streams")["streams"]
    assert [s["channels"] for s in audio if s["codec_type"] == "audio"] == [2]
    source = media_duration(bigbuckbunny())
    got = media_duration(f"{base}/master.m3u8")
    assert abs(got - source) <= 1 / 25 + 0.05


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp / "noise.mp4"
    noise.write_bytes(os.urandom(256 * 1024))
    good = make_master(tmp / "good.mp4", seconds=2, width=320, height=240)
    truncated = tmp / "truncated.mp4"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    return {"empty": empty, "noise": noise, "truncated": truncated}


@pytest.mark.parametrize("kind", ["empty", "noise", "truncated"])
def test_bad_input_exits_2_with_one_line_and_publishes_nothing(
    kind: str, cdlc_env: CdlcEnv, origin_url: str, tmp_path: Path
) -> None:
    master = _bad_inputs(tmp_path)[kind]
    asset_id = f"bad-{kind}"
    proc = cdlc_env.run("ingest", str(master), "--id", asset_id)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(master.name) in lines[0]
    for path in ("master.m3u8", "manifest.mpd", "v240/init.mp4", "v240/1.m4s"):
        assert http_status(f"{origin_url}/vod/{asset_id}/{path}") == 404
    status = json.loads(cdlc_env.run("status", asset_id, "--json").stdout)
    assert status["state"] == "failed" and status["error"]
    assert not (cdlc_env.data_dir / "objects" / "media" / asset_id).exists()


def test_bad_ladder_spec_is_a_usage_error(cdlc_env: CdlcEnv, tmp_path: Path) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=1, width=320, height=240)
    proc = cdlc_env.run("ingest", str(master), "--ladder", "tall:fast")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "ladder" in proc.stderr.lower()


def _packets(target: str | Path, kind: str) -> list[tuple[float, bool, bytes]]:
    """(presentation time from the stream's first packet, keyframe, bytes); relative
    times, since FFmpeg shifts a track with negative composition offsets."""
    import av

    with av.open(str(target)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        tb = stream.time_base
        assert tb is not None
        packets = [(p.pts, p.is_keyframe, bytes(p)) for p in c.demux(stream)
                   if p.size and p.pts is not None]
        first = min(pts for pts, _, _ in packets)
        return [(round(float((pts - first) * tb), 3), key, data) for pts, key, data in packets]


def test_ingest_copy_publishes_the_masters_own_packets(
    cdlc_env: CdlcEnv, origin_url: str, tmp_path: Path
) -> None:
    """`cdlc ingest --copy` (issue 4's package-only path, whole command): no
    re-encode, the master's own keyframes cut the segments, the published
    renditions carry byte-identical packets, both manifests play over HTTP, and
    the job's work directory is consumed by the publish."""
    master = make_master(
        tmp_path / "ready.mp4", seconds=6, width=640, height=360, fps="30",
        vcodec=["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                "-x264-params", "keyint=30:min-keyint=30:scenecut=0:bframes=3"])
    out = ingest_json(cdlc_env, master, "copied", "--copy", "--segment-seconds", "2")
    assert out["state"] == "ready"
    video, audio, board = out["renditions"]
    assert (video["id"], video["height"], video["segments"]) == ("v360", 360, 3)
    assert board["kind"] == "image"  # from the master's keyframes: a copy decodes nothing
    assert video["codec"].startswith("avc1.64") and audio["codec"] == "mp4a.40.2"
    base = f"{origin_url}/vod/copied"
    assert _packets(f"{base}/v360/media.m3u8", "video") == _packets(master, "video")
    assert [p[2] for p in _packets(f"{base}/audio/media.m3u8", "audio")] == \
        [p[2] for p in _packets(master, "audio")]
    mpd = ffprobe(f"{base}/manifest.mpd", "-show_streams")
    assert sorted(s["codec_type"] for s in mpd["streams"]) == ["audio", "video"]
    assert abs(media_duration(f"{base}/master.m3u8") - 6.0) < 0.05
    assert list((cdlc_env.data_dir / "work").iterdir()) == []
    published = cdlc_env.data_dir / "objects" / "media" / "copied"
    assert sorted(p.name for p in (published / "v360").iterdir()) == \
        ["1.m4s", "2.m4s", "3.m4s", "init.mp4"]

    # The CLI starts the copy before the job checks the store: a refused job still
    # waits for it and leaves no output behind, and the served asset is untouched.
    again = cdlc_env.run("ingest", str(master), "--id", "copied", "--copy")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert list((cdlc_env.data_dir / "work").iterdir()) == []
    assert _packets(f"{base}/v360/media.m3u8", "video") == _packets(master, "video")


def test_ingest_copy_of_a_codec_it_cannot_copy_says_transcode(
    cdlc_env: CdlcEnv, origin_url: str, tmp_path: Path
) -> None:
    master = make_master(tmp_path / "vp9.mkv", seconds=1, width=320, height=240,
                         vcodec=["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
                         acodec=["-c:a", "libopus"])
    proc = cdlc_env.run("ingest", str(master), "--id", "vp9copy", "--copy")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "vp9" in line and "without re-encoding" in line
    assert http_status(f"{origin_url}/vod/vp9copy/master.m3u8") == 404
