"""Per-title ladders (engine/pertitle.py): the analysis on real masters, encoded by
the native core and measured with libvmaf; the rung choice on its own; a chunked
job that analyses once and stitches renditions that carry the analysis."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import native
from engine.chunks import PartRun, maybe_split, parts_of
from engine.config import Settings
from engine.ladder import plan_ladder
from engine.pertitle import (
    MIN_STEP,
    PEAK,
    Candidate,
    analyse,
    analysis_spans,
    choose_rungs,
)
from engine.pipeline import analysed, to_models
from engine.services import open_backends
from engine.vmaf import Span, measure_rendition
from metadata.jobs import JobRequest, RequestError
from metadata.models import JobState
from tests.conftest import ROOT, make_env
from tests.engine.conftest import claimed_job
from tests.media import ffmpeg


def source(path: Path, graph: str, seconds: int = 4) -> Path:
    """A 25 fps mezzanine (x264 CRF 16, 2 s GOPs) of a lavfi graph."""
    ffmpeg("-f", "lavfi", "-i", graph, "-t", str(seconds), "-c:v", "libx264", "-preset",
           "veryfast", "-crf", "16", "-g", "50", "-pix_fmt", "yuv420p", str(path))
    return path


def encode(master: Path, rungs: list[native.Rung], out: Path,
           shown: tuple[int, int] | None = None) -> list[tuple[int, float]]:
    """(measured bit/s, VMAF over the whole clip) of each rendition, tallest first;
    VMAF at ``shown`` (every rendition upscaled to it) when given."""
    result = native.Transcoder(master, out, rungs, preset="veryfast", audio=False).run()
    renditions, segments = to_models("t", result)
    whole = [Span(0.0, result.duration_seconds)]
    return [(r.avg_bitrate, measure_rendition(master, out / r.id, r, segments, spans=whole,
                                              compare_at=shown).mean)
            for r in renditions]


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pertitle")
    return {
        # A still picture for the whole clip.
        "static": source(root / "static.mp4", "mandelbrot=size=854x480:rate=0.2,fps=25"),
        "noisy": source(root / "noisy.mp4",
                        "testsrc2=size=640x360:rate=25,noise=alls=40:allf=t+u", seconds=3),
    }


def test_a_static_source_gets_lower_bitrates_than_the_fixed_ladder(
        masters: dict[str, Path], tmp_path: Path) -> None:
    """A still: the analysis keeps the source's own size down the ladder (480p
    upscaled beats 360p there) at CRFs far below the fixed bitrates, and the
    measured renditions take fewer bits than the fixed ones at every rung, at no
    lower quality as a 480p screen shows them."""
    master = masters["static"]
    info = native.probe(master)
    fixed = plan_ladder(info)  # 480:1500, 360:800
    analysis = analyse(master, info, info.duration, tmp_path / "analysis")
    assert len(analysis.rungs) == len(fixed)
    assert all(r.height <= 480 and r.crf >= 0 for r in analysis.rungs), analysis.rungs
    for auto, base in zip(analysis.rungs, fixed, strict=True):
        assert auto.bitrate < base.bitrate / 2, (auto, base)
        assert auto.maxrate <= 1_500_000  # never above the fixed bitrate of its size
    got = encode(master, analysis.rungs, tmp_path / "auto", shown=(854, 480))
    want = encode(master, fixed, tmp_path / "fixed", shown=(854, 480))
    for (got_bits, got_vmaf), (want_bits, want_vmaf) in zip(got, want, strict=True):
        assert got_bits < want_bits, (got, want)
        assert got_vmaf > want_vmaf - 1.5, (got, want)
    top = analysis.records["v480"]
    assert top["choice"] == "crf" and len(top["candidates"]) == 8  # 2 sizes x 4 CRFs
    assert top["target_vmaf"] <= top["fixed_vmaf_expected"]
    bottom = analysis.records[analysis.rungs[-1].id]
    assert bottom["hull"]["480"] >= bottom["hull"].get("360", 0)


def test_a_noisy_source_keeps_its_quality(masters: dict[str, Path], tmp_path: Path) -> None:
    """Noise needs every bit the fixed rung has: the analysis keeps the fixed rung,
    so the quality is the fixed ladder's. Measured, up to x264's own run-to-run
    spread: two encodes of this source with one configuration differ (threads and
    VBV), by up to 3 VMAF points here on a loaded machine; a starved rung would lose
    far more."""
    master = masters["noisy"]
    info = native.probe(master)
    fixed = plan_ladder(info)
    analysis = analyse(master, info, info.duration, tmp_path / "analysis")
    assert analysis.rungs == fixed
    assert {r["choice"] for r in analysis.records.values()} == {"fixed"}
    record = analysis.records["v360"]
    # what it measured: CRF 25 already needs more than the fixed 800 kbit/s
    assert min(c["kbps"] for c in record["candidates"] if c["crf"] <= 25) > 800
    (got,), (want,) = encode(master, analysis.rungs, tmp_path / "auto"), \
        encode(master, fixed, tmp_path / "fixed")
    assert got[1] >= want[1] - 5.0, (got, want)
    assert abs(got[0] - want[0]) < 0.05 * want[0]


def _curve(label: int, *points: tuple[int, float, float]) -> list[Candidate]:
    return [Candidate(label, crf, kbps, vmaf) for crf, kbps, vmaf in points]


FIXED_720 = plan_ladder((1280, 720))  # 720:3000, 480:1500, 360:800


def _sizes_and_caps(rungs: list[native.Rung]) -> None:
    """What every per-title ladder keeps: no rung above the fixed ladder's bitrate
    for its size (nor its VBV cap), sizes never growing down the ladder, the fixed
    ladder's sizes only, rungs spaced for switching, ids unique."""
    cap = {r.height: r.bitrate for r in FIXED_720}
    assert all(r.height in cap and r.bitrate <= cap[r.height] for r in rungs), rungs
    assert all(0 < r.maxrate <= cap[r.height] for r in rungs if r.crf >= 0), rungs
    assert [r.height for r in rungs] == sorted((r.height for r in rungs), reverse=True)
    assert all(hi.bitrate >= MIN_STEP * lo.bitrate - 1000
               for hi, lo in itertools.pairwise(rungs)), rungs
    assert len({r.id for r in rungs}) == len(rungs)


def test_an_easy_title_keeps_its_large_size_at_every_rung() -> None:
    """VMAF at the display size: upscaled 480 and 360 lose to 720 at every bitrate
    (a slide deck), so all three rungs are 720p, at CRFs, far below the fixed
    bitrates; the bottom keeps the fixed ladder's ratio to the top."""
    easy = [*_curve(720, (13, 900, 98.0), (19, 450, 96.5), (25, 220, 92.0), (31, 110, 84.0)),
            *_curve(480, (13, 500, 84.0), (19, 260, 83.0), (25, 130, 80.0), (31, 65, 72.0)),
            *_curve(360, (13, 300, 76.0), (19, 160, 75.0), (25, 80, 72.0), (31, 40, 64.0))]
    rungs, records = choose_rungs(FIXED_720, easy)
    _sizes_and_caps(rungs)
    assert [r.height for r in rungs] == [720, 720, 720]
    assert rungs[0].id == "v720" and all(r.crf >= 0 for r in rungs)
    top = records["v720"]
    # the fixed 3000 is past the highest point (98.0): that point is a floor of what
    # the fixed rung gives, so it is the target itself
    assert top["target_vmaf"] == 98.0 and top["kbps"] == 900 and top["crf"] == 13
    kbps = [r.bitrate / 1000 for r in rungs]
    assert kbps[2] == pytest.approx(900 * 800 / 3000, rel=0.01)
    assert kbps[1] == pytest.approx((kbps[0] * kbps[2]) ** 0.5, rel=0.01)
    for r in rungs:
        record = records[r.id]
        assert record["choice"] == "crf" and record["size"] == 720
        assert record["hull"]["720"] > record["hull"]["480"] > record["hull"]["360"]
        assert len(record["candidates"]) == 12
    # the top may peak to the fixed bitrate of its size, the others fit their own
    assert rungs[0].maxrate == 3_000_000
    assert [r.maxrate for r in rungs[1:]] == [round(PEAK * r.bitrate) for r in rungs[1:]]


def test_a_starved_large_size_gives_way_to_a_smaller_one() -> None:
    """Where 720p at a lower rung's bitrate would be starved, the hull takes the
    smaller size that looks better upscaled; where the title needs every bit the
    fixed rung has, the rung is that fixed rung (ABR, as the fixed ladder)."""
    mid = [*_curve(720, (13, 12000, 97.0), (19, 6000, 93.0), (25, 2900, 88.0),
                   (31, 1400, 70.0)),
           *_curve(480, (13, 6000, 90.0), (19, 3000, 87.0), (25, 1450, 82.0),
                   (31, 700, 74.0)),
           *_curve(360, (13, 3300, 84.0), (19, 1700, 81.0), (25, 820, 76.0),
                   (31, 400, 68.0))]
    rungs, records = choose_rungs(FIXED_720, mid)
    _sizes_and_caps(rungs)
    assert [(r.id, r.height) for r in rungs] == [("v720", 720), ("v480", 480), ("v360", 360)]
    assert rungs == FIXED_720  # each lands on its fixed rung
    assert records["v480"]["hull"]["480"] > records["v480"]["hull"]["720"]
    assert {r["choice"] for r in records.values()} == {"fixed"}
    # Nothing reaches the fixed top's quality below its bitrate: the fixed ladder.
    hard = [c for label in (720, 480, 360) for c in _curve(
        label, (13, 40000, 99.0), (19, 15000, 95.0), (25, 6000, 80.0), (31, 3500, 70.0))]
    rungs, records = choose_rungs(FIXED_720, hard)
    assert rungs == FIXED_720
    assert json.loads(json.dumps(records))["v720"]["candidates"][0] == \
        {"size": 720, "crf": 13, "kbps": 40000, "vmaf": 99.0}


def test_a_lower_rung_of_the_large_size_gets_its_own_id() -> None:
    """testsrc2's case: 720p at half the bitrate still beats 480p upscaled, so the
    second rung is 720p too, with an id of its own and the bitrate in it."""
    curves = [*_curve(720, (13, 5000, 99.0), (19, 2600, 97.0), (25, 1300, 92.0),
                      (31, 650, 86.0)),
              *_curve(480, (13, 2200, 89.5), (19, 1100, 88.0), (25, 560, 85.0),
                      (31, 280, 80.0)),
              *_curve(360, (13, 1100, 85.0), (19, 560, 83.0), (25, 290, 79.0),
                      (31, 150, 72.0))]
    rungs, records = choose_rungs(FIXED_720, curves)
    _sizes_and_caps(rungs)
    assert rungs[0] == FIXED_720[0] and records["v720"]["choice"] == "fixed"
    second = rungs[1]
    assert second.height == 720 and second.id == f"v720_{round(second.bitrate / 1000)}k"
    assert records[second.id]["choice"] == "crf" and 19 <= second.crf <= 25
    # the bottom at the fixed 800: 720p there beats 480p and 360p upscaled
    assert rungs[2].height == 720 and rungs[2].bitrate == 800_000


def test_analysis_spans_sit_on_whole_spans_inside_the_master() -> None:
    # a short title samples a shorter span (a share of itself, at least half a second)
    assert analysis_spans(20.0) == [Span(10.0, 0.5)]
    assert analysis_spans(0.3) == [Span(0.0, 0.5)]
    assert analysis_spans(30.0) == [Span(15.0, 0.75)]
    assert analysis_spans(150.0) == [Span(25.0, 1.0), Span(75.0, 1.0), Span(125.0, 1.0)]
    spans = analysis_spans(3600.0)
    assert len(spans) == 6 and all(s.start.is_integer() and s.start + 1 <= 3600 for s in spans)
    assert analysis_spans(0.0) == []


def test_a_container_claiming_days_is_analysed_over_its_pictures(
        masters: dict[str, Path], tmp_path: Path) -> None:
    """The mvhd says 4,000,000 s, the video track 4 s (a broken muxer): the fixed
    ladder ingests it, and so must auto. Spans were planned from the container's
    duration, past the last picture, and the job was refused."""
    data = bytearray(masters["static"].read_bytes())
    at = data.find(b"mvhd")
    assert data[at + 4] == 0  # version 0: 32-bit times
    data[at + 20:at + 24] = (0xF0000000).to_bytes(4, "big")  # duration, in its timescale
    claimed = tmp_path / "claims-days.mp4"
    claimed.write_bytes(data)
    info = native.probe(claimed)
    assert info.duration > 1e6
    analysis = asyncio.run(analysed(claimed, info, tmp_path / "analysis",
                                    JobRequest(ladder="auto")))
    assert analysis is not None
    assert analysis.spans and all(s.start + s.duration <= 4.0 + 1e-6 for s in analysis.spans)
    assert analysis.rungs


def test_ladder_names_in_the_request() -> None:
    assert JobRequest.parse({"ladder": "AUTO"}).ladder == "auto"
    assert JobRequest.parse({"ladder": "fixed"}).ladder == "fixed"
    assert plan_ladder((1280, 720), "fixed") == plan_ladder((1280, 720))
    with pytest.raises(RequestError, match="ladder and copy exclude each other"):
        JobRequest.parse({"ladder": "auto", "copy": True})
    with pytest.raises(RequestError, match="bad ladder item 'best'"):
        JobRequest.parse({"ladder": "best"})


def test_a_chunked_job_analyses_once_and_keeps_the_analysis(
        masters: dict[str, Path], tmp_path: Path) -> None:
    """The coordinator analyses the master and puts the chosen rungs in the plan;
    every chunk encodes those rungs; the stitched renditions carry the analysis."""
    master = tmp_path / "still_with_sound.mp4"  # a chunked job has an audio part
    ffmpeg("-i", str(masters["static"]), "-f", "lavfi", "-i", "sine=duration=4",
           "-c:v", "copy", "-c:a", "aac", "-shortest", str(master))
    settings = Settings(data_dir=tmp_path / "data", preset="veryfast", segment_seconds=2,
                        chunk_seconds=2, lease_seconds=6)

    async def run() -> None:
        backends = open_backends(settings)
        try:
            job = await claimed_job(backends, master, "pt",
                                    JobRequest(ladder="auto", segment_seconds=2))
            assert await maybe_split(backends, job, 2.0, 9, lambda j, n, c: None) is None
            stored = await backends.store.get_job(job.id)
            assert stored is not None
            plan = stored.chunks["plan"]
            ids = [r["id"] for r in plan["rungs"]]
            assert sorted(plan["analysis"]) == sorted(ids) and ids[0] == "v480"
            assert len(ids) == 2 and all(r["crf"] >= 0 for r in plan["rungs"])
            for name in parts_of(stored):
                assert await PartRun(backends, job.id, name, lambda j, n, c: None).run(
                    claim=False) == "done"
            done = await backends.store.get_job(job.id)
            assert done is not None and done.state == JobState.READY, done
            rends = {r.id: r for r in await backends.store.get_renditions("pt")}
            for rid in ids:
                assert json.loads(rends[rid].analysis) == plan["analysis"][rid]
            assert rends["audio"].analysis == ""
        finally:
            await backends.close()

    asyncio.run(run())


def test_auto_is_the_default_ladder_where_it_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    """CDLC_LADDER (default auto) is the ladder of a request that names none; a copy
    has none and other codecs than H.264 get the fixed one, so neither is refused."""
    monkeypatch.delenv("CDLC_LADDER")  # the suite pins fixed (tests/conftest.py)
    from engine.application import request_defaults

    settings = Settings()
    assert settings.ladder == "auto"
    defaults = request_defaults(settings)
    assert JobRequest.parse({}, defaults).ladder == "auto"
    assert JobRequest.parse({"ladder": "fixed"}, defaults).ladder == "fixed"
    assert JobRequest.parse({"ladder": "360:800"}, defaults).ladder == "360:800"
    assert JobRequest.parse({"copy": True}, defaults).ladder is None
    assert JobRequest.parse({"codecs": "h264,av1"}, defaults).ladder is None
    fixed = request_defaults(Settings(ladder="FIXED"))
    assert JobRequest.parse({}, fixed).ladder is None  # the fixed ladder
    spec = request_defaults(Settings(ladder="480:1200"))
    assert JobRequest.parse({}, spec).ladder == "480:1200"
    assert JobRequest.parse({"copy": True}, spec).ladder is None
    with pytest.raises(ValueError, match="bad ladder item 'best'"):
        Settings(ladder="best")
    # On NVENC (known only when an in-process job runs) the default steps aside, an
    # auto the caller asked for stays; the job record keeps which it was.
    from engine.pipeline import ladder_on

    by_default = JobRequest.parse({}, defaults)
    asked = JobRequest.parse({"ladder": "auto"}, defaults)
    assert JobRequest.from_json(by_default.to_json()).ladder_default
    assert ladder_on(by_default, "h264_nvenc").ladder is None
    assert ladder_on(by_default, "libx264").ladder == "auto"
    assert ladder_on(asked, "h264_nvenc").ladder == "auto"
    # encoder gpu: the run is on NVENC, so the default steps aside (x264-measured).
    on_gpu = JobRequest.parse({"encoder": "gpu"}, defaults)
    assert ladder_on(on_gpu, "h264_nvenc").ladder is None
    assert ladder_on(JobRequest.parse({"encoder": "gpu", "ladder": "auto"}, defaults),
                     "h264_nvenc").ladder == "auto"


def test_an_ingest_that_names_no_ladder_is_per_title(masters: dict[str, Path],
                                                     tmp_path: Path) -> None:
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    env.env.pop("CDLC_LADDER")  # the deployment default
    proc = env.run("ingest", str(masters["static"]), "--id", "dflt", "--json")
    assert proc.returncode == 0, proc.stderr
    video = [r for r in json.loads(proc.stdout)["renditions"] if r["kind"] == "video"]
    assert video and all(r["analysis"]["mode"] == "auto" for r in video), video
    # Where auto does not apply the default steps aside, never a refusal.
    proc = env.run("ingest", str(masters["static"]), "--id", "dfcopy", "--copy", "--json")
    assert proc.returncode == 0, proc.stderr
    proc = env.run("ingest", str(masters["static"]), "--id", "dfhevc", "--codecs", "hevc",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert all("analysis" not in r for r in json.loads(proc.stdout)["renditions"])
    bad = make_env(tmp_path / "data", CDLC_LADDER="best").run(
        "ingest", str(masters["static"]), "--id", "dfbad")
    assert bad.returncode != 0
    assert bad.stderr.count("\n") == 1 and "CDLC_LADDER" in bad.stderr, bad.stderr


@pytest.mark.parametrize("graph,seconds,why", [
    ("testsrc2=size=320x240:rate=25", 0.2, "shorter than one 0.5 s span"),
    ("testsrc2=size=16x16:rate=25", 2, "below the 18 pixels a side"),
    ("testsrc2=size=640x360:rate=1", 3, "holds no video frame of the master"),
])
def test_a_master_the_analysis_cannot_measure_gets_the_fixed_ladder(
        tmp_path: Path, graph: str, seconds: float, why: str) -> None:
    """Too short, too small for libvmaf, or too few pictures a span: before, the
    job failed ("only 1 pictures compared", "no message from ffmpeg") where the
    fixed ladder encodes it. Now auto, asked for or the default, steps aside to the
    fixed ladder with one warning line."""
    master = tmp_path / "m.mp4"
    ffmpeg("-f", "lavfi", "-i", graph, "-t", str(seconds), "-pix_fmt", "yuv420p",
           str(master))
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    env.env.pop("CDLC_LADDER")  # the deployment default: auto
    fixed = env.run("ingest", str(master), "--id", "fx", "--ladder", "fixed", "--json")
    assert fixed.returncode == 0, fixed.stderr
    expected = [r["id"] for r in json.loads(fixed.stdout)["renditions"] if r["kind"] == "video"]
    for asset_id, args in (("dflt", ()), ("asked", ("--ladder", "auto"))):
        proc = env.run("ingest", str(master), "--id", asset_id, "--json", *args)
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if "auto cannot measure" in line]
        assert len(warnings) == 1 and why in warnings[0], proc.stderr
        assert str(master) not in proc.stderr
        video = [r for r in json.loads(proc.stdout)["renditions"] if r["kind"] == "video"]
        assert [r["id"] for r in video] == expected
        assert all("analysis" not in r for r in video)


def test_the_cli_shows_what_the_analysis_chose(masters: dict[str, Path],
                                               tmp_path: Path) -> None:
    env = make_env(tmp_path / "data", CDLC_PRESET="veryfast")
    proc = env.run("ingest", str(masters["static"]), "--id", "pt", "--ladder", "auto")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "auto: crf CRF" in line]
    assert len(lines) == 2 and lines[0].split()[0] == "v480", proc.stdout
    assert all(line.endswith("expected") for line in lines), proc.stdout
    status = env.run("status", "pt", "--json")
    assert status.returncode == 0, status.stderr
    video = [r for r in json.loads(status.stdout)["renditions"] if r["kind"] == "video"]
    assert len(video) == 2 and all(r["analysis"]["mode"] == "auto" and r["analysis"]["hull"]
                                   for r in video)
    fixed = env.run("ingest", str(masters["static"]), "--id", "fx", "--json")
    assert fixed.returncode == 0, fixed.stderr
    assert all("analysis" not in r for r in json.loads(fixed.stdout)["renditions"])


def test_faults_of_the_analysis_end_the_job_in_one_line(masters: dict[str, Path],
                                                        tmp_path: Path) -> None:
    """No FFmpeg to measure with: the per-title job fails in one line before any
    encode, nothing published. kill -9 of `cdlc ingest` while it analyses: the job
    ends failed (its holder died), the analysis scratch is swept, nothing served."""
    env = make_env(tmp_path / "data", CDLC_PRESET="medium")
    env.env["IMAGEIO_FFMPEG_EXE"] = str(tmp_path / "no-ffmpeg")
    proc = env.run("ingest", str(masters["static"]), "--id", "nq", "--ladder", "auto")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("cdlc: error: no FFmpeg with libvmaf to measure VMAF: "
                                   f"{tmp_path / 'no-ffmpeg'} is not an executable file")
    status = json.loads(env.run("status", "nq", "--json").stdout)
    assert status["state"] == "failed" and status["renditions"] == []
    del env.env["IMAGEIO_FFMPEG_EXE"]
    # A 1 s span of a 60 s master at the medium preset: seconds of analysis.
    long = source(tmp_path / "long.mp4", "testsrc2=size=640x360:rate=25", seconds=60)
    log = tmp_path / "ingest.log"
    with log.open("wb") as sink:
        dying = subprocess.Popen([sys.executable, "-m", "engine.cli", "ingest", str(long),
                                  "--id", "dead", "--ladder", "auto"], env=env.env, cwd=ROOT,
                                 stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a span's candidates being written
            if any((env.data_dir / "work").glob("*/analysis/span*/*/init.mp4")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(log.read_text())
    finally:
        dying.kill()
        dying.wait()
    listed = env.run("jobs", "--json", "--asset", "dead")
    assert listed.returncode == 0, listed.stderr
    (job,) = json.loads(listed.stdout)
    assert job["state"] == "failed" and "died" in str(job["error"]), job
    status = json.loads(env.run("status", "dead", "--json").stdout)
    assert status["state"] == "failed" and status["renditions"] == []
    assert list((env.data_dir / "work").iterdir()) == []
