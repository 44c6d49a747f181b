"""What posters and storyboards cost, beside the same work without them, same run.

    .venv/bin/python -m bench.previews [--runs 3] [--seconds 20] [--minutes 10]

- transcode: native.Transcoder on the transcode bench's 1080p30 master and ladder
  (1080/720/480/360, veryfast), without stills, then with them (one 160-pixel
  thumbnail every 2 s and the poster from the decode) plus the sheets and poster
  written as JPEGs (engine.storyboard.write_storyboard), in turn, rotating the order;
- copy: native.package_copy of the package bench's 10-minute 1080p master alone,
  then with the keyframe read a package-only job runs beside it in a thread
  (engine.storyboard.keyframe_stills) plus the JPEGs.

Reported: wall-clock and CPU medians and what the previews add to each, in %.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import native
from bench import cpu_self
from bench import package as package_bench
from bench import transcode as transcode_bench
from engine import storyboard

LADDER = ((1080, 5000), (720, 3000), (480, 1500), (360, 800))


def _timed(work: Callable[[], None]) -> tuple[float, float]:
    c0, t0 = cpu_self(), time.perf_counter()
    work()
    return time.perf_counter() - t0, cpu_self() - c0


def transcode(master: Path, out: Path, stills: bool) -> None:
    rungs = [native.Rung(f"v{h}", h, kbps * 1000) for h, kbps in LADDER]
    interval = storyboard.interval_for(20.0) if stills else 0.0
    result = native.Transcoder(master, out, rungs, segment_seconds=4.0, gop_seconds=2.0,
                               preset="veryfast", thumbnail_interval=interval).run()
    if stills:
        storyboard.write_storyboard(out, "bench", storyboard.stills_of(result, interval),
                                    result.duration_seconds)


def copy(master: Path, out: Path, stills: bool) -> None:
    if not stills:
        native.package_copy(master, out, 4.0)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        read = pool.submit(storyboard.keyframe_stills, master)
        result = native.package_copy(master, out, 4.0)
        storyboard.write_storyboard(out, "bench", read.result(), result.duration_seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20, help="transcode master length")
    ap.add_argument("--minutes", type=int, default=10, help="copy master length")
    args = ap.parse_args()
    masters = {"transcode": transcode_bench.make_master(args.seconds),
               "copy": package_bench.make_master(args.minutes)}
    work = {"transcode": transcode, "copy": copy}
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="cdlc-bench-previews-"))
    try:
        for run in range(args.runs):
            for job in ("transcode", "copy"):
                order = [False, True] if run % 2 == 0 else [True, False]
                for stills in order:
                    out = scratch / f"{job}-{stills}-{run}"
                    times.setdefault((job, stills), []).append(
                        _timed(functools.partial(work[job], masters[job], out, stills)))
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"previews: medians of {args.runs} runs")
    print(f"{'job':<10} {'without':>18} {'with previews':>18} {'adds (wall)':>12} "
          f"{'adds (CPU)':>11}")
    for job in ("transcode", "copy"):
        wall0 = statistics.median(t[0] for t in times[(job, False)])
        cpu0 = statistics.median(t[1] for t in times[(job, False)])
        wall1 = statistics.median(t[0] for t in times[(job, True)])
        cpu1 = statistics.median(t[1] for t in times[(job, True)])
        print(f"{job:<10} {wall0:>7.2f} s {cpu0:>6.2f} cpu {wall1:>7.2f} s {cpu1:>6.2f} cpu "
              f"{(wall1 / wall0 - 1) * 100:>+11.1f}% {(cpu1 / cpu0 - 1) * 100:>+10.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
