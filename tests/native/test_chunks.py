"""Span ("chunk") encoding: native.Transcoder(start_seconds=, end_seconds=, video=).

A long master is encoded in pieces on many machines and stitched by merging segment
indexes, so a span must be exactly the part of the one-piece encode that lies in
[start, end): same segment numbers and times, same keyframes, an init.mp4 that
serves every chunk, and stitched segments that decode like the one-piece output.
Each claim is checked against a real one-piece run of the same master; ffprobe and
ffmpeg's psnr filter judge the decoded result, tests/native/isobmff.py reads the boxes.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

import native
from tests import media
from tests.native import isobmff

SEGMENT = 4.0
GOP = 2.0
# superfast keeps B-frames (decode times before presentation times), so the span's
# first decode-time shift has to match the one-piece run's too.
ENCODE = {"segment_seconds": SEGMENT, "gop_seconds": GOP, "preset": "superfast"}
RUNGS = [native.Rung("v360", 360, 800_000), native.Rung("v180", 180, 300_000)]
SPANS = [(0.0, 8.0), (8.0, 16.0), (16.0, 0.0)]


@dataclass
class Encode:
    result: native.PipelineResult
    out: Path
    progress: list[float]

    def rendition(self, rid: str) -> native.RenditionResult:
        return next(r for r in self.result.renditions if r.id == rid)


def encode(master: Path, out: Path, rungs: list[native.Rung] = RUNGS, **kwargs: object) -> Encode:
    progress: list[float] = []
    opts = {**ENCODE, **kwargs}
    result = native.Transcoder(master, out, rungs, **opts).run(progress.append)  # type: ignore[arg-type]
    return Encode(result, out, progress)


def index(rendition: native.RenditionResult) -> list[tuple[int, int, int]]:
    return [(s.number, s.start, s.duration) for s in rendition.segments]


def stitch(target: Path, init: Path, parts: list[tuple[Path, native.RenditionResult]]) -> Path:
    """init.mp4 + the segments of every part in order: one fMP4 file ffprobe reads."""
    with target.open("wb") as fh:
        fh.write(init.read_bytes())
        for folder, rendition in parts:
            for seg in rendition.segments:
                fh.write((folder / f"{seg.number}.m4s").read_bytes())
    return target


def sync_times(folder: Path, rendition: native.RenditionResult) -> list[int]:
    """Presentation times (track timescale) of every sync sample, read from the
    segments' tfdt and trun boxes."""
    times = []
    for seg in rendition.segments:
        moof = next(b for b in isobmff.parse((folder / f"{seg.number}.m4s").read_bytes())
                    if b.type == "moof")
        traf = moof.find("traf")
        decode = isobmff.tfdt(traf.find("tfdt"))
        assert decode == seg.start
        trun = isobmff.trun(traf.find("trun"), isobmff.tfhd_default_flags(traf.find("tfhd")) or 0)
        for sample in trun.samples:
            if not sample.flags & 0x10000:  # sample_is_non_sync_sample (14496-12 §8.8.3.1)
                times.append(decode + sample.composition_offset)
            decode += sample.duration
    return times


def avcc(init: Path) -> bytes:
    moov = next(b for b in isobmff.parse(init.read_bytes()) if b.type == "moov")
    avc1 = moov.find("trak/mdia/minf/stbl/stsd/avc1")
    box = isobmff.parse(avc1.payload, 78)[0]  # after the VisualSampleEntry fields
    assert box.type == "avcC"
    return box.payload


def frames(path: Path) -> list[tuple[str, int, str]]:
    """(pts_time, key_frame, pict_type) of every decoded video frame."""
    info = media.ffprobe(path, "-select_streams", "v:0", "-show_entries",
                         "frame=pts_time,key_frame,pict_type")
    return [(f["pts_time"], int(f["key_frame"]), f["pict_type"]) for f in info["frames"]]


def psnr(path: Path, source: Path, width: int, height: int) -> float:
    """Average PSNR (dB) of `path` against the source scaled to the rung's size."""
    stderr = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(path), "-i", str(source), "-lavfi",
         f"[1:v]scale={width}:{height}:flags=bicubic[ref];[0:v][ref]psnr", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr
    return float(stderr.split("average:")[1].split()[0])


def luma(path: Path) -> list[npt.NDArray[np.uint8]]:
    with av.open(str(path)) as container:
        return [np.asarray(f.to_ndarray(format="gray"), dtype=np.uint8)
                for f in container.decode(video=0)]


def frame_psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * float(np.log10(255**2 / max(mse, 1e-10)))


# --- fixtures: one master, its one-piece encode and three chunks, made once ---------

@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chunks")


@pytest.fixture(scope="module")
def master(work: Path) -> Path:
    """24 s 640x360 30 fps testsrc2 with a tone; keyframes every 2 s."""
    return media.make_master(work / "master.mp4", seconds=24, width=640, height=360,
                             vcodec=["-c:v", "libx264", "-preset", "ultrafast", "-g", "60",
                                     "-pix_fmt", "yuv420p"])


@pytest.fixture(scope="module")
def whole(master: Path, work: Path) -> Encode:
    return encode(master, work / "whole")


@pytest.fixture(scope="module")
def chunks(master: Path, work: Path) -> list[Encode]:
    # Video-only chunk tasks beside one audio-only task: what the engine plans.
    return [encode(master, work / f"chunk{int(a)}", start_seconds=a, end_seconds=b, audio=False)
            for a, b in SPANS]


# --- the segment index, keyframes and init.mp4 -----------------------------------

def test_spans_have_the_one_piece_segment_index(whole: Encode, chunks: list[Encode]) -> None:
    for rung in RUNGS:
        stitched = [seg for c in chunks for seg in index(c.rendition(rung.id))]
        assert stitched == index(whole.rendition(rung.id)), rung.id
        assert len(stitched) == 6
    for (start, _), chunk in zip(SPANS, chunks, strict=True):
        assert [r.id for r in chunk.result.renditions] == ["v360", "v180"]  # audio=False
        first = chunk.rendition("v360").segments[0]
        assert first.number == round(start / SEGMENT) + 1
        assert first.start == round(start * chunk.rendition("v360").track.timescale)
        assert chunk.result.duration_seconds == pytest.approx(8.0)
        # progress is the fraction of the span (a third of the master), ending at 1
        assert chunk.progress and chunk.progress[-1] == 1.0
        assert chunk.progress == sorted(chunk.progress) and all(0 <= p <= 1 for p in chunk.progress)
        partial = [p for p in chunk.progress if p < 1.0]
        if len(partial) >= 3:
            assert max(partial) > 1 / 3, chunk.progress
    assert whole.result.duration_seconds == pytest.approx(24.0)


def test_spans_put_keyframes_where_the_one_piece_run_does(whole: Encode,
                                                         chunks: list[Encode]) -> None:
    for rung in RUNGS:
        expected = sync_times(whole.out / rung.id, whole.rendition(rung.id))
        timescale = whole.rendition(rung.id).track.timescale
        assert expected == [round(k * GOP * timescale) for k in range(12)]
        got = [t for c in chunks for t in sync_times(c.out / rung.id, c.rendition(rung.id))]
        assert got == expected, rung.id


def test_every_chunk_has_the_same_init_segment(whole: Encode, chunks: list[Encode]) -> None:
    for rung in RUNGS:
        configs = {avcc(c.out / rung.id / "init.mp4") for c in chunks}
        assert configs == {avcc(whole.out / rung.id / "init.mp4")}, rung.id
        inits = {(c.out / rung.id / "init.mp4").read_bytes() for c in chunks}
        assert len(inits) == 1, rung.id


# --- stitched chunks decode like the one-piece output ------------------------------

def test_stitched_chunks_decode_like_the_one_piece_output(
    master: Path, whole: Encode, chunks: list[Encode], work: Path
) -> None:
    for rung in RUNGS:
        one = stitch(work / f"one-{rung.id}.mp4", whole.out / rung.id / "init.mp4",
                     [(whole.out / rung.id, whole.rendition(rung.id))])
        # init.mp4 of the middle chunk serves them all
        joined = stitch(work / f"stitched-{rung.id}.mp4", chunks[1].out / rung.id / "init.mp4",
                        [(c.out / rung.id, c.rendition(rung.id)) for c in chunks])
        assert media.decode_errors(joined) == ""
        expected, got = frames(one), frames(joined)
        assert len(got) == len(expected) == 720
        assert [f[:2] for f in got] == [f[:2] for f in expected]  # timestamps, keyframes
        track = whole.rendition(rung.id).track
        one_db = psnr(one, master, track.width, track.height)
        stitched_db = psnr(joined, master, track.width, track.height)
        assert one_db > 30, rung.id  # the encode is sane at all
        assert abs(stitched_db - one_db) <= 0.2, (rung.id, one_db, stitched_db)


# --- masters whose keyframes are not at the span start ------------------------------

@pytest.fixture(scope="module")
def long_gop_master(work: Path) -> Path:
    """24 s, keyframes every 250 frames (0, 8.33, 16.67 s), B-frames: a span at 12 s
    starts mid-GOP, and its sync samples present after they decode."""
    return media.make_master(work / "longgop.mp4", seconds=24, width=320, height=180,
                             vcodec=["-c:v", "libx264", "-preset", "veryfast", "-g", "250",
                                     "-bf", "3", "-pix_fmt", "yuv420p"])


def test_span_starting_mid_gop_of_the_master_starts_with_an_idr(
    long_gop_master: Path, work: Path
) -> None:
    rungs = [native.Rung("v180", 180, 300_000)]
    keys = media.ffprobe(long_gop_master, "-select_streams", "v:0", "-skip_frame", "nokey",
                         "-show_entries", "frame=pts_time")["frames"]
    assert [round(float(k["pts_time"]), 2) for k in keys] == [0.0, 8.33, 16.67]
    whole = encode(long_gop_master, work / "lg-whole", rungs, audio=False)
    chunk = encode(long_gop_master, work / "lg-chunk", rungs, start_seconds=12.0,
                   end_seconds=20.0, audio=False)
    rendition = chunk.rendition("v180")
    assert index(rendition) == index(whole.rendition("v180"))[3:5]
    assert rendition.segments[0].number == 4
    assert rendition.segments[0].start == 12 * rendition.track.timescale
    timescale = rendition.track.timescale
    assert sync_times(chunk.out / "v180", rendition) == [t * timescale for t in (12, 14, 16, 18)]
    joined = stitch(work / "lg-chunk.mp4", chunk.out / "v180" / "init.mp4",
                    [(chunk.out / "v180", rendition)])
    one = stitch(work / "lg-whole.mp4", whole.out / "v180" / "init.mp4",
                 [(whole.out / "v180", whole.rendition("v180"))])
    decoded = frames(joined)
    assert decoded[0][1:] == (1, "I")  # the span opens with a keyframe...
    # ...and holds exactly the one-piece run's frames 360..599 (12 s to 20 s at 30 fps)
    assert [f[:2] for f in decoded] == [f[:2] for f in frames(one)[360:600]]


@pytest.fixture(scope="module")
def late_key_ts(work: Path) -> Path:
    """MPEG-TS with B-frames and a keyframe one frame after each 4 s mark: the one
    nearest a span start decodes before it but presents after it, and TS seeks by
    decode time, so the first seek lands too late and has to go back."""
    keys = ",".join(f"{t + 1 / 30:.4f}" for t in (0, 4, 8))
    return media.make_master(work / "latekey.ts", seconds=12, width=320, height=180, audio=False,
                             vcodec=["-c:v", "libx264", "-preset", "veryfast", "-bf", "3",
                                     "-g", "1000", "-sc_threshold", "0",
                                     "-force_key_frames", "0," + keys, "-pix_fmt", "yuv420p"])


def assert_span_4_to_8_is_the_one_piece_run(master: Path, work: Path, name: str) -> None:
    """The 4-8 s span of a 30 fps ``master`` (one 180p rung, 4 s segments) is the
    one-piece run's second segment, and every picture is the one-piece run's at
    the same instant (two encodes of the same source frame), not a neighbour or a
    concealed mid-GOP decode."""
    rungs = [native.Rung("v180", 180, 300_000)]
    whole = encode(master, work / f"{name}-whole", rungs, audio=False)
    chunk = encode(master, work / f"{name}-chunk", rungs, start_seconds=4.0, end_seconds=8.0,
                   audio=False)
    assert index(chunk.rendition("v180")) == index(whole.rendition("v180"))[1:2]
    one = luma(stitch(work / f"{name}-whole.mp4", whole.out / "v180" / "init.mp4",
                      [(whole.out / "v180", whole.rendition("v180"))]))
    part = luma(stitch(work / f"{name}-chunk.mp4", chunk.out / "v180" / "init.mp4",
                       [(chunk.out / "v180", chunk.rendition("v180"))]))
    assert len(part) == 120
    same = [frame_psnr(a, b) for a, b in zip(part, one[120:240], strict=True)]
    assert min(same) > 30, same[:5]


def test_span_seek_goes_back_when_the_keyframe_presents_late(late_key_ts: Path,
                                                              work: Path) -> None:
    assert_span_4_to_8_is_the_one_piece_run(late_key_ts, work, "late")


def test_a_span_of_a_ts_master_with_one_keyframe_goes_back_to_it(work: Path) -> None:
    """MPEG-TS seeks by bytes: in a master whose only keyframe is its first picture
    every seek lands inside that one GOP, and no clean picture follows before the
    end. The span goes back to the keyframe (as a chunk or the per-title analysis
    needs) instead of being called past the end."""
    master = media.make_master(work / "onegop.ts", seconds=8, width=320, height=180,
                               audio=False, vcodec=["-c:v", "libx264", "-preset", "veryfast",
                                                    "-g", "1000", "-pix_fmt", "yuv420p"])
    assert_span_4_to_8_is_the_one_piece_run(master, work, "onegop")


def test_span_end_past_the_master_means_to_the_end(whole: Encode, master: Path,
                                                   work: Path) -> None:
    tail = encode(master, work / "tail", [RUNGS[1]], start_seconds=20.0, end_seconds=40.0,
                  audio=False)
    assert index(tail.rendition("v180")) == index(whole.rendition("v180"))[5:]
    assert tail.result.duration_seconds == pytest.approx(4.0)


# --- audio ---------------------------------------------------------------------------

def test_audio_only_task_gives_the_one_piece_audio(master: Path, whole: Encode,
                                                   work: Path) -> None:
    audio = encode(master, work / "audio-only", [], video=False)
    assert [r.id for r in audio.result.renditions] == ["audio"]
    got, expected = audio.rendition("audio"), whole.rendition("audio")
    assert index(got) == index(expected) and len(got.segments) >= 6
    # the AAC encoder is deterministic: the same bytes, init.mp4 and every segment
    for name in ["init.mp4", *(f"{seg.number}.m4s" for seg in expected.segments)]:
        assert (audio.out / "audio" / name).read_bytes() == (
            whole.out / "audio" / name).read_bytes(), name
    assert audio.result.duration_seconds == pytest.approx(24.0, abs=0.05)
    assert audio.progress[-1] == 1.0


def test_audio_in_a_span_is_cut_at_its_packets(master: Path, whole: Encode, work: Path) -> None:
    """Nice-to-have (the engine uses the audio-only task): a span's own audio starts
    at the span start on the one-piece timeline and ends within one AAC frame past
    its end."""
    chunk = encode(master, work / "audio-span", [RUNGS[1]], start_seconds=8.0, end_seconds=16.0)
    audio = chunk.rendition("audio")
    rate = audio.track.timescale
    assert audio.segments[0].number == 3 and audio.segments[0].start == 8 * rate
    end = audio.segments[-1].start + audio.segments[-1].duration
    assert 16 * rate <= end < 16 * rate + 1024
    # 8 s at 48 kHz is a whole number of AAC frames: the one-piece segments there match
    assert index(audio) == index(whole.rendition("audio"))[2:4]
    joined = stitch(work / "audio-span.mp4", chunk.out / "audio" / "init.mp4",
                    [(chunk.out / "audio", audio)])
    assert media.decode_errors(joined) == ""
    # an audio-only task over the same span cuts the same segments
    alone = encode(master, work / "audio-span-alone", [], video=False, start_seconds=8.0,
                   end_seconds=16.0)
    assert index(alone.rendition("audio")) == index(audio)
    assert alone.result.duration_seconds == pytest.approx(8.0, abs=1024 / rate)
    volume = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(joined), "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, check=True).stderr
    assert float(volume.split("mean_volume:")[1].split("dB")[0]) > -30  # the tone, not silence


# --- bad requests --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_seconds": 3.0}, "not a multiple of segment_seconds"),
        ({"start_seconds": 8.0, "end_seconds": 10.0}, "not a multiple of segment_seconds"),
        ({"start_seconds": 8.0, "end_seconds": 8.0}, "must be before its end"),
        ({"start_seconds": 16.0, "end_seconds": 8.0}, "must be before its end"),
        ({"start_seconds": -4.0}, ">= 0"),
        ({"start_seconds": float("nan")}, "finite"),
        ({"start_seconds": 24.0}, "past the end"),
        ({"start_seconds": 400.0, "end_seconds": 800.0}, "past the end"),
        ({"video": False, "audio": False}, "video and audio are both off"),
        ({"rungs": []}, "at least one rung"),
    ],
)
def test_bad_spans_are_value_errors(master: Path, tmp_path: Path, kwargs: dict[str, object],
                                    message: str) -> None:
    rungs = kwargs.pop("rungs", RUNGS)
    with pytest.raises(ValueError, match=message):
        native.Transcoder(master, tmp_path / "out", rungs, **{**ENCODE, **kwargs}).run()  # type: ignore[arg-type]
    assert not list(tmp_path.glob("out/*/*.m4s"))
