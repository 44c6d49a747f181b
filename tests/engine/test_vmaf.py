"""VMAF of renditions against their master (engine/vmaf.py): real encodes by the
native core, measured by the libvmaf FFmpeg of the imageio-ffmpeg wheel."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

import native
from engine.chunks import PartRun, parts_of, split
from engine.config import Settings
from engine.ladder import plan_ladder
from engine.leases import Lease
from engine.pipeline import to_models
from engine.services import open_backends
from engine.vmaf import (
    MAX_SPANS,
    QualityError,
    Span,
    compare_clips,
    first_picture_time,
    measure_rendition,
    sample_spans,
    with_vmaf,
)
from metadata import open_store
from metadata.jobs import JobRequest, RequestError
from metadata.models import Asset, JobState, Rendition, Segment
from tests.conftest import make_env
from tests.engine.conftest import claimed_job
from tests.media import ffmpeg, ffprobe, joined, make_master


class Encoded:
    def __init__(self, master: Path, out: Path, renditions: list[Rendition],
                 segments: list[Segment]) -> None:
        self.master, self.out = master, out
        self.renditions, self.segments = renditions, segments

    def video(self, rid: str) -> Rendition:
        return next(r for r in self.renditions if r.id == rid)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    """A 6 s testsrc2 master in an MPEG-TS (its first picture is not at 0, and its
    audio starts before it) encoded to a generous and a starved 360p rung."""
    root = tmp_path_factory.mktemp("vmaf")
    master = make_master(root / "master.ts", seconds=6, width=640, height=360, fps="25")
    out = root / "out"
    result = native.Transcoder(master, out, [
        native.Rung(id="good", height=360, bitrate=1_500_000),
        native.Rung(id="starved", height=360, bitrate=40_000),
    ], preset="ultrafast").run()
    renditions, segments = to_models("a", result)
    return Encoded(master, out, renditions, segments)


def test_a_good_encode_scores_high_and_a_starved_one_low(encoded: Encoded) -> None:
    good = measure_rendition(encoded.master, encoded.out / "good", encoded.video("good"),
                             encoded.segments)
    starved = measure_rendition(encoded.master, encoded.out / "starved",
                                encoded.video("starved"), encoded.segments)
    assert good.mean > 80, good
    assert starved.mean < good.mean - 20, (good, starved)
    assert good.frames == 100  # one 4 s span at 25 fps


def test_spans_past_the_first_segment_stay_aligned(encoded: Encoded) -> None:
    """A span in the second segment pairs the right pictures: the same encode
    measured there scores as high, and the reference one picture late scores far
    lower (so the alignment is what the figure rests on)."""
    zero = first_picture_time(encoded.master)
    assert zero > 1.0  # MPEG-TS timestamps start at 1.4 s
    rend = encoded.video("good")
    later = measure_rendition(encoded.master, encoded.out / "good", rend, encoded.segments,
                              spans=[Span(4.0, 2.0)], first_picture=zero)
    assert later.spans[0][0] == Span(4.0, 2.0) and later.frames == 50
    assert later.mean > 80
    shifted = measure_rendition(encoded.master, encoded.out / "good", rend, encoded.segments,
                                spans=[Span(4.0, 2.0)], first_picture=zero + 0.04)
    assert shifted.mean < later.mean - 20, (later, shifted)


def test_with_vmaf_sets_video_renditions_only(encoded: Encoded) -> None:
    out = with_vmaf(encoded.master, encoded.out, encoded.renditions, encoded.segments)
    by_id = {r.id: r for r in out}
    assert by_id["good"].vmaf > 80 and 0 < by_id["starved"].vmaf < by_id["good"].vmaf
    assert by_id["audio"].vmaf == 0.0


def test_sampled_spans_are_bounded_and_inside_the_timeline() -> None:
    (only,) = sample_spans(5.3)  # centred
    assert only.start == pytest.approx(0.65) and only.duration == 4.0
    hour = sample_spans(3600.0)
    assert len(hour) == MAX_SPANS
    assert all(0 <= s.start and s.start + s.duration <= 3600.0 for s in hour)
    assert [round(s.start) for s in hour] == [298, 898, 1498, 2098, 2698, 3298]
    assert len(sample_spans(150.0)) == 3
    assert sample_spans(2.0) == [Span(0.0, 2.0)]
    assert sample_spans(0.0) == []


def _one_line(exc: pytest.ExceptionInfo[QualityError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_a_corrupt_rendition_is_one_line_naming_it(encoded: Encoded, tmp_path: Path) -> None:
    broken = tmp_path / "good"
    shutil.copytree(encoded.out / "good", broken)
    first = broken / "1.m4s"
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 3])
    with pytest.raises(QualityError) as exc:
        measure_rendition(encoded.master, broken, encoded.video("good"), encoded.segments)
    assert _one_line(exc).startswith("VMAF of good [0+4 s]: "), exc.value
    first.write_bytes(b"\0" * 4096)
    with pytest.raises(QualityError) as exc:
        measure_rendition(encoded.master, broken, encoded.video("good"), encoded.segments)
    assert _one_line(exc).startswith("VMAF of good [0+4 s]: ")
    (broken / "init.mp4").unlink()
    with pytest.raises(QualityError) as exc:
        measure_rendition(encoded.master, broken, encoded.video("good"), encoded.segments)
    assert _one_line(exc) == f"VMAF of good: {broken / 'init.mp4'} is missing"


def test_a_missing_reference_or_binary_is_one_line(encoded: Encoded, tmp_path: Path) -> None:
    with pytest.raises(QualityError) as exc:
        measure_rendition(tmp_path / "gone.mp4", encoded.out / "good", encoded.video("good"),
                          encoded.segments)
    assert _one_line(exc) == \
        f"VMAF of good: {tmp_path / 'gone.mp4'}: no such file (the reference for VMAF)"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(QualityError) as exc:
        measure_rendition(junk, encoded.out / "good", encoded.video("good"), encoded.segments)
    assert _one_line(exc).startswith(f"VMAF of good: {junk}: no video picture to measure")
    with pytest.raises(QualityError) as exc:
        measure_rendition(encoded.master, encoded.out / "good", encoded.video("good"),
                          encoded.segments, ffmpeg=str(tmp_path / "no-ffmpeg"))
    assert _one_line(exc) == (f"no FFmpeg with libvmaf to measure VMAF: "
                              f"{tmp_path / 'no-ffmpeg'} is not an executable file")
    with pytest.raises(QualityError, match="only video renditions have pictures, not audio"):
        measure_rendition(encoded.master, encoded.out / "audio", encoded.video("audio"),
                          encoded.segments)


def test_the_request_option() -> None:
    assert JobRequest().vmaf is False
    assert JobRequest.parse({"vmaf": "true"}).vmaf is True
    assert JobRequest.parse({"vmaf": False}).vmaf is False
    assert JobRequest.from_json(JobRequest(vmaf=True).to_json()).vmaf is True
    # records written before the option existed read back without it
    assert JobRequest.from_json('{"preset": "fast"}').vmaf is False
    with pytest.raises(RequestError, match="vmaf must be true or false"):
        JobRequest.parse({"vmaf": "maybe"})


async def test_the_figure_is_stored_and_old_files_are_migrated(tmp_path: Path) -> None:
    store = open_store("", tmp_path)
    rend = Rendition(asset_id="x", id="v360", kind="video", codec="h264",
                     codec_string="avc1.64001e", timescale=90000, bitrate=800_000,
                     width=640, height=360, vmaf=93.25)
    await store.put_asset(Asset(id="x"))
    await store.publish(Asset(id="x"), [rend], [Segment("x", "v360", 1, 0, 360000, 10)])
    assert (await store.get_renditions("x"))[0].vmaf == 93.25
    await store.close()
    # A file made before the column existed: the store adds it on open.
    db = tmp_path / "metadata.db"
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE renditions DROP COLUMN vmaf")
    store = open_store("", tmp_path)
    try:
        assert (await store.get_renditions("x"))[0].vmaf == 0.0
        await store.publish(Asset(id="x"), [replace(rend, vmaf=71.5)],
                            [Segment("x", "v360", 1, 0, 360000, 10)])
        assert (await store.get_renditions("x"))[0].vmaf == 71.5
    finally:
        await store.close()


def test_cli_ingest_with_vmaf(tmp_path: Path) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=3, width=480, height=270, fps="25")
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    proc = env.run("ingest", str(master), "--id", "q1", "--ladder", "270:900,180:60",
                   "--vmaf", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    video = {r["id"]: r["vmaf"] for r in doc["renditions"] if r["kind"] == "video"}
    assert video["v270"] > 80 and 0 < video["v180"] < video["v270"], video
    assert all(r["vmaf"] == 0 for r in doc["renditions"] if r["kind"] == "audio")
    # Without the option nothing is measured.
    proc = env.run("ingest", str(master), "--id", "q2", "--ladder", "180:300", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {r["vmaf"] for r in json.loads(proc.stdout)["renditions"]} == {0}
    # No measuring binary: the job fails in one line and nothing is published.
    env.env["IMAGEIO_FFMPEG_EXE"] = str(tmp_path / "no-ffmpeg")
    proc = env.run("ingest", str(master), "--id", "q3", "--ladder", "180:300", "--vmaf")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("cdlc: error: no FFmpeg with libvmaf to measure VMAF: "
                                   f"{tmp_path / 'no-ffmpeg'} is not an executable file")
    status = env.run("status", "q3", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "failed"
    assert json.loads(status.stdout)["renditions"] == []


def test_a_chunked_job_measures_its_stitched_renditions(tmp_path: Path) -> None:
    """Chunks are encoded apart and stitched; the VMAF is measured once, on the
    stitched renditions, against the whole master (its span, 2..6 s, crosses the
    chunk boundary at 4 s)."""
    master = make_master(tmp_path / "m.mp4", seconds=10, width=480, height=270, fps="25")
    settings = Settings(data_dir=tmp_path / "data", preset="ultrafast", segment_seconds=2,
                        chunk_seconds=4, lease_seconds=6)
    ladder = "270:900,180:60"

    async def run() -> None:
        backends = open_backends(settings)
        try:
            job = await claimed_job(backends, master, "ch", JobRequest(
                ladder=ladder, preset="ultrafast", segment_seconds=2, vmaf=True))
            info = native.probe(master)
            async with Lease(backends.store, job, 6) as lease:
                await split(backends, lease, plan_ladder(info, ladder), info.duration, 4, 9,
                            lambda j, n, c: None)
            stored = await backends.store.get_job(job.id)
            assert stored is not None
            names = list(parts_of(stored))
            assert len(names) == 4  # audio + three spans
            for name in names:
                assert await PartRun(backends, job.id, name, lambda j, n, c: None).run(
                    claim=False) == "done"
            done = await backends.store.get_job(job.id)
            assert done is not None and done.state == JobState.READY, done
            vmaf = {r.id: r.vmaf for r in await backends.store.get_renditions("ch")}
            assert vmaf["v270"] > 80 and 0 < vmaf["v180"] < vmaf["v270"], vmaf
        finally:
            await backends.close()

    asyncio.run(run())


def test_clips_compared_at_the_display_size_score_as_a_screen_shows_them(
        encoded: Encoded, tmp_path: Path) -> None:
    """compare_clips(compare_at=...): each clip upscaled to one display size against
    the master at that size (the per-title hull's scale). A 180p clip scores high
    against a 180p reference and far lower upscaled to 360p; a 360p clip scores
    the same either way."""
    out = tmp_path / "span"
    result = native.Transcoder(encoded.master, out, [
        native.Rung(id="full", height=360, width=640, bitrate=0, crf=18),
        native.Rung(id="small", height=180, width=320, bitrate=0, crf=18),
    ], preset="ultrafast", audio=False, segment_seconds=1.0, gop_seconds=1.0,
        start_seconds=2.0, end_seconds=3.0).run()
    clips = [(joined(out, r), r.track.width, r.track.height) for r in result.renditions]
    assert [c[1:] for c in clips] == [(640, 360), (320, 180)]
    start = first_picture_time(encoded.master) + 2.0
    own = compare_clips(encoded.master, start, clips, frames=25, fps=Fraction(25))
    shown = compare_clips(encoded.master, start, clips, frames=25, fps=Fraction(25),
                          compare_at=(640, 360))
    assert own[1] > 80 and shown[1] < own[1] - 10, (own, shown)
    assert shown[0] == pytest.approx(own[0], abs=0.5)


def test_an_mp4_master_is_entered_at_the_keyframe_before_the_span(tmp_path: Path) -> None:
    """An MP4 master is entered half a frame before the span (its sample table
    seeks exactly), not 2 s before: the pictures still pair, and scoring one in
    five (only those upscaled) gives what scoring all of them gives, within the
    spread of the pictures themselves."""
    master = make_master(tmp_path / "master.mp4", seconds=6, width=640, height=360, fps="25",
                         audio=False, extra=["-g", "25"])
    out = tmp_path / "span"
    result = native.Transcoder(master, out, [
        native.Rung(id="full", height=360, width=640, bitrate=0, crf=18),
        native.Rung(id="small", height=180, width=320, bitrate=0, crf=18),
    ], preset="ultrafast", audio=False, segment_seconds=1.0, gop_seconds=1.0,
        start_seconds=4.0, end_seconds=5.0).run()
    clips = [(joined(out, r), r.track.width, r.track.height) for r in result.renditions]
    start = first_picture_time(master) + 4.0
    every = compare_clips(master, start, clips, frames=25, fps=Fraction(25),
                          compare_at=(640, 360))
    fifth = compare_clips(master, start, clips, frames=25, fps=Fraction(25),
                          compare_at=(640, 360), subsample=5)
    assert every[0] > 80 and every[1] > 40, every
    assert fifth == pytest.approx(every, abs=2.0), (every, fifth)
    late = compare_clips(master, start + 0.04, clips, frames=25, fps=Fraction(25),
                         compare_at=(640, 360), subsample=5)
    assert late[0] < every[0] - 20, (every, late)  # the pairing is what the figure rests on


def _interlaced(path: Path) -> Path:
    """Combed 25i: testsrc2 at 50 fps, fields of neighbouring pictures woven."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=720x576:rate=50", "-t", "3", "-vf",
           "interlace", "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-b:v", "8M",
           "-f", "mpegts", str(path))
    return path


def _rgb(path: Path) -> Path:
    """FFV1 RGB, as a graphics tool exports it (its decoder says GBR, full range)."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "3", "-c:v", "ffv1",
           "-pix_fmt", "bgr0", str(path))
    return path


def _gray(path: Path) -> Path:
    """FFV1 monochrome (its decoder says full range)."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "3", "-c:v", "ffv1",
           "-pix_fmt", "gray", str(path))
    return path


@pytest.mark.parametrize("make", [_interlaced, _rgb, _gray], ids=["interlaced", "rgb", "gray"])
def test_a_master_the_core_normalises_scores_as_its_encode_deserves(
        make: Callable[[Path], Path], tmp_path: Path) -> None:
    """A generous encode of an interlaced master scored 71: it was measured against
    the combed fields the core had deinterlaced. One of an RGB master scored 65:
    its rendition said GBR and full range for the limited BT.601 YCbCr swscale made,
    and the measuring FFmpeg took it at its word; a monochrome one's (full range,
    made limited) scored 68. Now the reference is deinterlaced as the core does, and
    the rendition is tagged as it was converted."""
    master = make(tmp_path / ("m.ts" if make is _interlaced else "m.mkv"))
    out = tmp_path / "out"
    result = native.Transcoder(master, out, [
        native.Rung(id="good", height=360, bitrate=2_000_000)],
        preset="ultrafast", audio=False).run()
    renditions, segments = to_models("a", result)
    (rendition,) = renditions
    score = measure_rendition(master, out / "good", rendition, segments)
    assert score.mean > 90, score
    tags = ffprobe(joined(out, result.renditions[0]),
                   "-show_entries", "stream=color_space,color_range")["streams"][0]
    if make is _rgb:
        assert tags == {"color_space": "smpte170m", "color_range": "tv"}, tags
    elif make is _gray:
        assert tags.get("color_range", "tv") == "tv", tags  # limited, said or implied
