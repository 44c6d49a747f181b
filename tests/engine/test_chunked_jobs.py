"""Celery at scale, with real brokers (Redis and RabbitMQ) and real worker
processes: masters split into chunks across workers and stitched into the same
segment index as a one-piece encode; kill -9 of a whole worker mid-chunk; a chunk
that runs twice; a worker that starts and finds an expired lease; routing by the
worker classes that are alive."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cdn.edge import free_port
from engine.chunks import PartRun, parts_of
from engine.config import Settings
from engine.services import open_backends
from metadata.jobs import Job, JobRequest, new_job_id
from metadata.models import Asset, JobState, Segment, master_key
from tests.conftest import ROOT, CdlcEnv, http_status, make_env
from tests.engine.conftest import Worker, claimed_job
from tests.media import ffprobe, make_master

pytestmark = pytest.mark.slow
LADDER = "360:600,240:300"


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_master(tmp_path_factory.mktemp("chunked") / "m.mp4", seconds=24,
                       width=640, height=360)


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("redis_broker" if request.param == "redis"
                                       else "amqp_url")
    return url


def chunked_env(tmp_path: Path, broker: str, **extra: str) -> CdlcEnv:
    settings = {"CDLC_BROKER": broker, "CDLC_CHUNK_SECONDS": "8", "CDLC_SEGMENT_SECONDS": "4",
                "CDLC_PRESET": "ultrafast", "CDLC_LEASE_SECONDS": "6", **extra}
    return make_env(tmp_path / "data", **settings)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def start_workers(env: CdlcEnv, started: list[Worker], count: int, *args: str) -> list[Worker]:
    new = [Worker(env, env.data_dir.parent / f"worker{len(started) + i}.log", *args)
           for i in range(count)]
    started.extend(new)
    for w in new:
        w.wait_ready()
    return new


def index_of(data_dir: Path, asset_id: str) -> dict[str, list[Segment]]:
    async def read() -> dict[str, list[Segment]]:
        backends = open_backends(Settings(data_dir=data_dir))
        try:
            return {r.id: await backends.store.get_segments(asset_id, r.id)
                    for r in await backends.store.get_renditions(asset_id)}
        finally:
            await backends.close()

    return asyncio.run(read())


def stream_file(data_dir: Path, asset_id: str, rid: str, out: Path) -> Path:
    """init.mp4 + every segment of a rendition, as one fMP4 file."""
    media = data_dir / "objects" / "media" / asset_id / rid
    numbers = sorted(int(p.stem) for p in media.glob("*.m4s"))
    with out.open("wb") as fh:
        fh.write((media / "init.mp4").read_bytes())
        for n in numbers:
            fh.write((media / f"{n}.m4s").read_bytes())
    return out


def keyframe_times(path: Path) -> list[float]:
    frames = ffprobe(path, "-select_streams", "v:0", "-show_entries",
                     "frame=pts_time,key_frame")["frames"]
    return [round(float(f["pts_time"]), 3) for f in frames if f["key_frame"] == 1]


def psnr(path: Path, source: Path, height: int) -> float:
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(path), "-i", str(source), "-lavfi",
         f"[1:v]scale=-2:{height}:flags=bicubic[ref];[0:v][ref]psnr", "-f", "null", "-"],
        capture_output=True, text=True, check=True).stderr
    match = re.search(r"average:([0-9.]+)", out)
    assert match, out
    return float(match.group(1))


def test_chunked_encode_is_the_one_piece_encode(tmp_path: Path, master: Path, broker: str,
                                                workers: list[Worker]) -> None:
    env = chunked_env(tmp_path, broker)
    start_workers(env, workers, 2, "--class", "cpu")
    proc = env.run("ingest", str(master), "--id", "chunked", "--ladder", LADDER, "--json",
                   timeout=240)
    assert proc.returncode == 0, proc.stderr + "".join(w.log.read_text() for w in workers)
    (job,) = json.loads(env.run("jobs", "--json").stdout)
    assert job["state"] == "ready" and job["parts"] == ["audio", "c0", "c1", "c2"], job
    # Both workers took parts: the film was encoded on two machines' worth of CPU.
    logs = [w.log.read_text() for w in workers]
    assert all("cdlc.chunk" in text for text in logs), logs
    whole = make_env(tmp_path / "whole", CDLC_PRESET="ultrafast", CDLC_SEGMENT_SECONDS="4")
    one = whole.run("ingest", str(master), "--id", "whole", "--ladder", LADDER, timeout=240)
    assert one.returncode == 0, one.stderr
    chunked, single = index_of(env.data_dir, "chunked"), index_of(whole.data_dir, "whole")
    # The storyboard too: each part took the marks inside its span, the stitch laid
    # them out as the one-piece run does.
    assert set(chunked) == set(single) == {"v360", "v240", "audio", "storyboard"}
    for rid, segs in single.items():
        assert [(s.number, s.start, s.duration) for s in chunked[rid]] == \
            [(s.number, s.start, s.duration) for s in segs], rid
    for rid, height in (("v360", 360), ("v240", 240)):
        a = stream_file(env.data_dir, "chunked", rid, tmp_path / f"c-{rid}.mp4")
        b = stream_file(whole.data_dir, "whole", rid, tmp_path / f"w-{rid}.mp4")
        assert keyframe_times(a) == keyframe_times(b)
        assert abs(psnr(a, master, height) - psnr(b, master, height)) <= 0.2
    # The parts' own objects are gone once stitched.
    assert not (env.data_dir / "objects" / "chunks").exists() or \
        not any((env.data_dir / "objects" / "chunks").rglob("*.m4s"))


def test_kill_9_of_a_whole_worker_mid_chunk(tmp_path: Path, broker: str,
                                            workers: list[Worker]) -> None:
    # Two 8 s parts at the medium preset: long enough to be killed mid-part.
    big = make_master(tmp_path / "big.mp4", seconds=16, width=1280, height=720)
    env = chunked_env(tmp_path, broker, CDLC_PRESET="medium")
    victim, survivor = start_workers(env, workers, 2, "--class", "cpu")
    log = tmp_path / "ingest.log"
    with log.open("wb") as sink:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "ingest", str(big), "--id", "killed",
             "--ladder", "720:2500,360:600", "--json"], env=env.env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=sink)
    started = time.monotonic()
    try:
        victim_pids: set[int] = set()
        while time.monotonic() - started < 90:
            out = env.run("jobs", "--json")
            holders = [h for j in json.loads(out.stdout or "[]") for h in j.get("holders", [])]
            victim_pids = victim.pids()
            if any(int(h.split(":")[1]) in victim_pids for h in holders):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the victim never held a part: {victim.log.read_text()}")
        victim.kill_group()  # main process and pool child, mid-chunk
        stdout, _ = ingest.communicate(timeout=120)
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
    assert ingest.returncode == 0, log.read_text() + survivor.log.read_text()
    assert time.monotonic() - started < 120
    result = json.loads(stdout)
    assert result["state"] == "ready"
    (job,) = json.loads(env.run("jobs", "--json").stdout)
    assert job["state"] == "ready"
    port = free_port()
    server = env.serve(port)
    try:
        base = f"http://127.0.0.1:{port}/vod/killed"
        assert http_status(f"{base}/master.m3u8") == 200
        probe = ffprobe(f"{base}/v720/media.m3u8", "-show_entries", "format=duration")
        assert float(probe["format"]["duration"]) == pytest.approx(16, abs=0.5)
        frames = ffprobe(f"{base}/v720/media.m3u8", "-select_streams", "v:0", "-count_frames",
                         "-show_entries", "stream=nb_read_frames")["streams"][0]
        assert int(frames["nb_read_frames"]) == 16 * 30
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_chunk_that_runs_twice_leaves_one_correct_index(tmp_path: Path, master: Path) -> None:
    """Two attempts at the same part at once (a slow worker whose lease ran out, and
    its replacement): the first to complete is recorded, the other's output goes."""
    settings = Settings(data_dir=tmp_path / "data", preset="ultrafast", segment_seconds=4,
                        chunk_seconds=8, lease_seconds=6)
    sent: list[tuple[str, float]] = []

    async def run() -> None:
        import native
        from engine.chunks import split
        from engine.ladder import plan_ladder
        from engine.leases import Lease

        backends = open_backends(settings)
        try:
            job = await claimed_job(backends, master, "twice", JobRequest(
                ladder=LADDER, preset="ultrafast", segment_seconds=4))
            info = native.probe(master)
            async with Lease(backends.store, job, 6) as lease:
                # A window of two: the rest is queued as parts complete, so a short job
                # queued behind this one waits for two parts, not for all of them.
                await split(backends, lease, plan_ladder(info, LADDER), info.duration, 8, 2,
                            lambda j, n, c: sent.append((n, c)))
            assert [n for n, _ in sent] == ["audio", "c0"]
            runs = [PartRun(backends, job.id, "c1", lambda j, n, c: sent.append((n, c)))
                    for _ in range(2)]
            outcomes = await asyncio.gather(*(r.run(claim=False) for r in runs))
            assert sorted(outcomes) == ["done", "lost"], outcomes
            assert [n for n, _ in sent] == ["audio", "c0", "c2"]  # the window moved on
            stored = await backends.store.get_job(job.id)
            assert stored is not None
            c1 = parts_of(stored)["c1"]
            assert c1["state"] == "done"
            kept = sorted(p.name for p in (settings.data_dir / "objects" / "chunks" / job.id /
                                           "c1").iterdir())
            assert kept == [c1["prefix"].rsplit("/", 1)[1]], kept
            # A redelivery after completion changes nothing.
            assert await PartRun(backends, job.id, "c1", lambda j, n, c: None).run() == \
                "not claimable"
            for name in ("audio", "c0", "c2"):
                assert await PartRun(backends, job.id, name, lambda j, n, c: None).run() == "done"
            done = await backends.store.get_job(job.id)
            assert done is not None and done.state == JobState.READY, done
            v360 = await backends.store.get_segments("twice", "v360")
            assert [s.number for s in v360] == [1, 2, 3, 4, 5, 6]
            assert v360[0].start == 0
            assert all(b.start == a.start + a.duration for a, b in itertools.pairwise(v360))
        finally:
            await backends.close()

    asyncio.run(run())


def test_a_starting_worker_runs_a_job_whose_lease_expired(tmp_path: Path, master: Path,
                                                          redis_broker: str,
                                                          workers: list[Worker]) -> None:
    env = chunked_env(tmp_path, redis_broker, CDLC_CHUNK_SECONDS="0")
    settings = Settings(data_dir=env.data_dir)

    async def orphan() -> str:
        backends = open_backends(settings)
        try:
            await backends.objects.put_file(master_key("orphan"), master)
            job = Job(id=new_job_id(), asset_id="orphan", master=master_key("orphan"),
                      request=JobRequest(ladder="240:300", preset="ultrafast",
                                         segment_seconds=4), queue="cpu")
            await backends.store.create_job(Asset(id="orphan"), job)
            # Held by a machine that died an hour ago: its lease ran out long since.
            held = replace(job, state=JobState.TRANSCODING, lease_holder="gone-host:4242:dead",
                           lease_expires=time.time() - 3600, attempt=1)
            assert await backends.store.write_job(held)
            return job.id
        finally:
            await backends.close()

    job_id = asyncio.run(orphan())
    start_workers(env, workers, 1, "--class", "cpu")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = json.loads(env.run("status", "orphan", "--json").stdout)
        if status["state"] in ("ready", "failed"):
            break
        time.sleep(0.5)
    assert status["state"] == "ready", (status, workers[0].log.read_text())
    (job,) = json.loads(env.run("jobs", "--json").stdout)
    assert job["id"] == job_id and job["attempt"] == 2


def test_auto_routes_to_the_worker_classes_alive(tmp_path: Path, redis_broker: str,
                                                 workers: list[Worker]) -> None:
    env = chunked_env(tmp_path, redis_broker, CDLC_CHUNK_SECONDS="0")
    small = make_master(tmp_path / "s.mp4", seconds=2, width=320, height=240)
    start_workers(env, workers, 1, "--class", "cpu")
    # No gpu worker alive: encoder=gpu is refused before anything is stored, and
    # auto goes to the cpu workers.
    gpu_env = CdlcEnv(env.data_dir, {**env.env, "CDLC_ENCODER": "gpu"})
    no = gpu_env.run("ingest", str(small), "--id", "wantgpu", "--ladder", "240:300", timeout=60)
    assert no.returncode == 2 and "no gpu worker is alive" in no.stderr, no.stderr
    assert env.run("status", "wantgpu").returncode == 1
    ok = env.run("ingest", str(small), "--id", "tocpu", "--ladder", "240:300", timeout=120)
    assert ok.returncode == 0, ok.stderr
    # A worker consuming the gpu queue announces that class. (An operator starts one
    # on a GPU machine with `cdlc worker --class gpu`; this machine has no NVENC, so
    # the test starts one on the queue by hand, and its attempt to encode fails.)
    gpu = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "engine.celery_app", "worker", "-Q", "gpu",
         "-n", "gpu@test", "--pool", "solo", "-l", "INFO"], env=env.env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ping = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "engine.celery_app", "inspect",
                 "active_queues", "-t", "1"], env=env.env, cwd=ROOT, capture_output=True,
                text=True)
            if "gpu@test" in ping.stdout:
                break
            time.sleep(0.5)
        routed = env.run("ingest", str(small), "--id", "togpu", "--ladder", "240:300",
                         timeout=120)
        assert routed.returncode == 2 and "h264_nvenc" in routed.stderr, routed.stderr
        jobs = {j["asset"]: j for j in json.loads(env.run("jobs", "--json").stdout)}
        assert jobs["tocpu"]["queue"] == "cpu" and jobs["togpu"]["queue"] == "gpu"
    finally:
        gpu.kill()
        gpu.wait()


def test_a_part_that_keeps_failing_fails_the_job_with_its_span(tmp_path: Path,
                                                                master: Path) -> None:
    """A part whose encode fails after its attempts ends the whole job FAILED, the
    reason naming the part and its span; the parts' objects are removed."""
    settings = Settings(data_dir=tmp_path / "data", preset="ultrafast", segment_seconds=4,
                        chunk_seconds=8, lease_seconds=6)
    resent: list[tuple[str, float]] = []

    async def run() -> None:
        import native
        from engine.chunks import split
        from engine.ladder import plan_ladder
        from engine.leases import Lease

        backends = open_backends(settings)
        try:
            job = await claimed_job(backends, master, "doomed", JobRequest(
                ladder=LADDER, preset="ultrafast", segment_seconds=4))
            info = native.probe(master)
            async with Lease(backends.store, job, 6) as lease:
                await split(backends, lease, plan_ladder(info, LADDER), info.duration, 8, 10,
                            lambda j, n, c: None)
            assert await PartRun(backends, job.id, "c0", lambda j, n, c: None).run() == "done"
            # This worker's scratch space is broken (a file where its work dir should
            # be): every attempt at c1 fails the same way, and is retried.
            broken = tmp_path / "not-a-dir"
            broken.write_text("")
            sick = dataclasses.replace(backends, work_dir=broken / "work")
            part = PartRun(sick, job.id, "c1", lambda j, n, c: resent.append((n, c)),
                           max_attempts=2)
            assert await part.run() == "failed"
            assert resent and resent[0][0] == "c1" and resent[0][1] > 0  # retried later
            stored = await backends.store.get_job(job.id)
            assert stored is not None and stored.state == JobState.TRANSCODING
            parts_of(stored)["c1"]["not_before"] = 0.0  # the backoff has passed
            assert await backends.store.write_job(stored)
            assert await part.run() == "failed"
            done = await backends.store.get_job(job.id)
            assert done is not None and done.state == JobState.FAILED, done
            assert done.error is not None and done.error.startswith("chunk c1 [8-16 s): ")
            assert "gave up after 2 attempts" in done.error
            asset = await backends.store.get_asset("doomed")
            assert asset is not None and asset.state == JobState.FAILED
            assert not list((settings.data_dir / "objects" / "chunks").rglob("*.m4s"))
        finally:
            await backends.close()

    asyncio.run(run())
