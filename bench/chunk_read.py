"""A chunk of a master in S3: read through a presigned URL with ranged GETs (what a
part does now) against downloading the whole master first (what it did), same run.

    .venv/bin/python -m bench.chunk_read [--runs 3] [--seconds 120]

One synthetic 720p30 master (x264 CRF 18, 2 s GOPs, stereo AAC; made once, cached in
bench/.cache) in a moto S3 server on 127.0.0.1 (in memory, so the store itself costs
little: on a real store the download grows with the master and the network, the
ranged read with the span). Per run, in turn, for an 8 s part in the middle of the
master (two rungs, 360:800 and 240:400, x264 veryfast):

- download: the master fetched whole into the work dir (ObjectStore.iter_range, as
  a part did), then the span encoded from the file;
- ranged: the span encoded from the store's read URL (native remote_timeout).

Reported: wall-clock medians, the ratio, the master's size and the share of it a
ranged part reads (bytes the server sent, counted at a relaying socket).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import native
from cdn.edge import free_port, wait_port
from metadata.s3_objects import S3Objects
from tests.metadata.servers import Relay

CACHE = Path(__file__).resolve().parent / ".cache"
RUNGS = [native.Rung(id="v360", height=360, width=640, bitrate=800_000),
         native.Rung(id="v240", height=240, width=426, bitrate=400_000)]
PART_SECONDS = 8.0


def make_master(seconds: int) -> Path:
    path = CACHE / f"chunk_read_720p30_{seconds}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", "60",
                    "-c:a", "aac", "-ac", "2", str(tmp)], check=True)
    tmp.rename(path)
    return path


def encode(source: str | Path, out: Path, start: float, remote: bool) -> None:
    shutil.rmtree(out, ignore_errors=True)
    native.Transcoder(source, out, RUNGS, segment_seconds=4.0, gop_seconds=2.0,
                      preset="veryfast", audio=False, start_seconds=start,
                      end_seconds=start + PART_SECONDS,
                      remote_timeout=30.0 if remote else 0.0).run()


async def download(store: S3Objects, key: str, dest: Path) -> None:
    with dest.open("wb") as fh:
        async for chunk in store.iter_range(key):
            await asyncio.to_thread(fh.write, chunk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=120)
    args = parser.parse_args()
    master = make_master(args.seconds)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    relay: Relay | None = None
    try:
        wait_port("127.0.0.1", port, 20.0)
        relay = Relay(port).start()
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        start = round(args.seconds / 2 / 4) * 4.0  # a part in the middle, on the segment grid
        timings: dict[str, list[float]] = {"download": [], "ranged": []}
        ranged_bytes = 0

        async def run() -> None:
            nonlocal ranged_bytes
            assert relay is not None
            store = S3Objects(bucket, "bench", endpoint_url=f"http://127.0.0.1:{relay.port}")
            try:
                client = await store._c()
                await client.create_bucket(Bucket=bucket)
                await store.put_file("masters/m/source", master)
                with tempfile.TemporaryDirectory(prefix="cdlc-bench-chunk-") as tmp:
                    work = Path(tmp)
                    for i in range(args.runs):
                        t0 = time.perf_counter()
                        local = work / "m.master"
                        await download(store, "masters/m/source", local)
                        await asyncio.to_thread(encode, local, work / "out", start, False)
                        local.unlink()
                        timings["download"].append(time.perf_counter() - t0)
                        url = await store.read_url("masters/m/source", 3600)
                        assert url is not None
                        before = relay.sent
                        t0 = time.perf_counter()
                        await asyncio.to_thread(encode, url, work / "out", start, True)
                        timings["ranged"].append(time.perf_counter() - t0)
                        ranged_bytes = relay.sent - before
                        print(f"run {i + 1}/{args.runs}: download {timings['download'][-1]:.2f} s,"
                              f" ranged {timings['ranged'][-1]:.2f} s", flush=True)
            finally:
                await store.close()

        asyncio.run(run())
    finally:
        if relay is not None:
            relay.close()
        moto.terminate()
        moto.wait(timeout=10)
    size = master.stat().st_size
    down, ranged = statistics.median(timings["download"]), statistics.median(timings["ranged"])
    print(f"\n{dt.date.today()}, {platform.system()} {platform.release()}, {os.cpu_count()} cores; "
          f"master {args.seconds} s 720p30, {size / 2**20:.1f} MiB, in moto S3 on 127.0.0.1; "
          f"part [{start:g}, {start + PART_SECONDS:g}) s, rungs 360:800,240:400, x264 veryfast; "
          f"medians of {args.runs} runs\n")
    print("| part reads the master | wall s | vs download | bytes from the store |")
    print("|---|---:|---:|---:|")
    print(f"| downloaded whole, then encoded (baseline) | {down:.2f} | 1.00x | "
          f"{size / 2**20:.1f} MiB |")
    print(f"| ranged GETs of the read URL | {ranged:.2f} | {down / ranged:.2f}x | "
          f"{ranged_bytes / 2**20:.1f} MiB ({ranged_bytes / size:.0%}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
