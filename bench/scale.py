"""Scale benchmark: one film encoded whole by one worker, against the same film
encoded in chunks by two workers, in the same run.

    .venv/bin/python -m bench.scale [--seconds 120] [--chunk-seconds 20] [--preset veryfast]

One synthetic 1080p30 master with stereo AAC (cached in bench/.cache), the ladder
planned from the source (1080, 720, 480, 360), 4 s segments, a Redis broker
(a private database on the local redis-server), the embedded SQLite store and
local object store shared by the workers as a cluster would share ScyllaDB and S3.

- whole: one `cdlc worker` pinned to one core (taskset), CDLC_CHUNK_SECONDS=0;
- chunked: two `cdlc worker`s, each pinned to a core of its own, the master split
  into chunks of --chunk-seconds plus one audio part.

Reported: turnaround (submit to READY, wall clock) and its ratio, total CPU seconds
of the workers (os.wait4 after a graceful stop: the worker and its pool children)
and the chunked/whole ratio (chunking overhead), and the per-task queue overhead:
on each worker, the time between one part's completion and the next part's claim
(both stamped in the job record), averaged over the tasks. A projection to 100
workers and a 2-hour film follows from the measured figures (bench/README.md
states the model).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.transcode import CACHE

ROOT = Path(__file__).resolve().parent.parent


def make_master(seconds: int) -> Path:
    path = CACHE / f"scale_1080p30_{seconds}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    subprocess.run([
        "ffmpeg", "-hide_banner", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-g", "60", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "192k", "-ac", "2", str(tmp)], check=True)
    tmp.replace(path)
    return path


@dataclass
class Run:
    name: str
    turnaround: float
    cpu: float
    parts: dict[str, dict[str, Any]]


def _env(data: Path, broker: str, chunk_seconds: float, preset: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDLC_")}
    env.update(CDLC_DATA_DIR=str(data), CDLC_BROKER=broker, CDLC_PRESET=preset,
               CDLC_CHUNK_SECONDS=str(chunk_seconds), CDLC_SEGMENT_SECONDS="4",
               CDLC_LEASE_SECONDS="30", CDLC_CHUNK_WINDOW="0")
    return env


def _start_worker(env: dict[str, str], core: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            ["taskset", "-c", str(core), sys.executable, "-m", "engine.cli", "worker",
             "--class", "cpu", "--concurrency", "1"],
            env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log.read_text()}")
        time.sleep(0.2)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> float:
    """Graceful stop; CPU seconds of the worker and every child it reaped."""
    proc.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def _job(env: dict[str, str]) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        from engine.config import Settings
        from engine.services import open_backends

        backends = open_backends(Settings(data_dir=Path(env["CDLC_DATA_DIR"])))
        try:
            (job,) = await backends.store.list_jobs()
            return {"state": job.state.value, "parts": job.chunks.get("parts", {}),
                    "error": job.error}
        finally:
            await backends.close()

    return asyncio.run(read())


def idle_cpu(broker: str, tmp: Path) -> float:
    """CPU seconds of a worker that starts and stops with no work: the fixed cost
    each worker pays (imports, broker connection, start-up sweep)."""
    env = _env(tmp / "idle", broker, 0.0, "veryfast")
    return _stop(_start_worker(env, 0, tmp / "idle-worker.log"))


def run_one(name: str, master: Path, workers: int, chunk_seconds: float, preset: str,
            broker: str, tmp: Path) -> Run:
    data = tmp / name
    env = _env(data, broker, chunk_seconds, preset)
    procs = [_start_worker(env, core, tmp / f"{name}-worker{core}.log")
             for core in range(workers)]
    try:
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "engine.cli", "ingest", str(master),
                               "--id", name, "--ladder", "fixed", "--json", "--no-progress"],
                              env=env, cwd=ROOT,
                              capture_output=True, text=True)
        turnaround = time.monotonic() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{name}: {done.stderr}")
    finally:
        cpu = sum(_stop(p) for p in procs)
    job = _job(env)
    return Run(name, turnaround, cpu, job["parts"])


def queue_overhead_ms(parts: dict[str, dict[str, Any]]) -> float:
    """Mean gap, per worker, between a part's completion and its next claim."""
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for p in parts.values():
        # host:pid of the holder (its last field is a nonce per attempt)
        by_worker.setdefault(str(p.get("worker")).rsplit(":", 1)[0], []).append(p)
    gaps: list[float] = []
    for done in by_worker.values():
        done.sort(key=lambda p: p["claimed_at"])
        gaps.extend(b["claimed_at"] - a["done_at"] for a, b in itertools.pairwise(done))
    return 1000 * statistics.mean(gaps) if gaps else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--chunk-seconds", type=float, default=20.0)
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--redis-db", type=int, default=14)
    args = ap.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores", file=sys.stderr)
        return 2
    import redis

    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    redis.Redis.from_url(broker).flushdb()
    master = make_master(args.seconds)
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"load {os.getloadavg()[0]:.1f}; master {args.seconds} s 1080p30, preset "
          f"{args.preset}, chunks of {args.chunk_seconds:g} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="cdlc-scale-") as tmp:
        idle = statistics.median(idle_cpu(broker, Path(tmp)) for _ in range(3))
        print(f"idle worker: {idle:.2f} CPU s (start-up and stop, no work)", flush=True)
        whole = run_one("whole", master, 1, 0.0, args.preset, broker, Path(tmp))
        print(f"whole:   {whole.turnaround:7.1f} s turnaround, {whole.cpu:7.1f} CPU s",
              flush=True)
        chunked = run_one("chunked", master, 2, args.chunk_seconds, args.preset, broker,
                          Path(tmp))
        print(f"chunked: {chunked.turnaround:7.1f} s turnaround, {chunked.cpu:7.1f} CPU s, "
              f"{len(chunked.parts)} parts", flush=True)
    overhead = queue_overhead_ms(chunked.parts)
    speedup = whole.turnaround / chunked.turnaround
    cpu_ratio = chunked.cpu / whole.cpu
    # The encoding work alone: each worker's fixed start-up cost taken out.
    net_ratio = (chunked.cpu - 2 * idle) / (whole.cpu - idle)
    print(json.dumps({"turnaround_whole_s": round(whole.turnaround, 2),
                      "turnaround_chunked_s": round(chunked.turnaround, 2),
                      "speedup": round(speedup, 3), "cpu_whole_s": round(whole.cpu, 2),
                      "cpu_chunked_s": round(chunked.cpu, 2), "cpu_ratio": round(cpu_ratio, 3),
                      "idle_worker_cpu_s": round(idle, 2), "cpu_ratio_net": round(net_ratio, 3),
                      "queue_overhead_ms_per_task": round(overhead, 1),
                      "parts": len(chunked.parts)}))
    print(f"turnaround {speedup:.2f}x (bar >= 1.8x); CPU chunked/whole {cpu_ratio:.3f}, "
          f"{net_ratio:.3f} net of worker start-up (bar <= 1.05); queue overhead "
          f"{overhead:.0f} ms per task")
    for name, p in sorted(chunked.parts.items(), key=lambda kv: kv[1].get("claimed_at", 0)):
        print(f"  {name:<6} {p.get('worker', '?')[-14:]:>14} claimed {p.get('claimed_at', 0):.2f} "
              f"done {p.get('done_at', 0):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
