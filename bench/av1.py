"""AV1 rungs: cdlc's native core against SVT-AV1 through the ffmpeg CLI, same run.

    .venv/bin/python -m bench.av1 [--runs 3] [--seconds 10]

The master of bench.transcode (1080p30 with stereo AAC, cached in bench/.cache),
cut to ``--seconds``; an AV1 ladder of two rungs, 720:1800 and 360:500 (kbit/s;
maxrate 1.5x, bufsize 2x), 2 s closed GOPs without scene-cut keyframes, no audio
(the two tools share one AAC encoder; this bench is about the video encoder).
Per run, in turn:

- cdlc: native.Transcoder with ``encoder="libsvtav1"`` rungs (one decode, a
  scale and an SVT-AV1 encoder per rung, CMAF out), preset ``veryfast``, which
  the core maps to SVT-AV1 preset 10;
- ffmpeg: the command a user would write for the same ladder: filter_complex
  split + scale, one libsvtav1 per rung at ``-preset 10`` with the same rate and
  GOP settings the core gives the encoder, HLS fMP4.

Both run the same libsvtav1 (the system's libavcodec). Reported: wall-clock and
CPU-second medians with their ratios, and each rung's VMAF against the master
scaled to its size (libvmaf of the imageio-ffmpeg binary, every second picture).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import native
from bench import cpu_children, cpu_self
from bench.transcode import (
    FPS,
    GOP_SECONDS,
    SEGMENT_SECONDS,
    ffmpeg_bin,
    joined_cdlc,
    joined_hls,
    machine,
    make_master,
    split_scale,
    vmaf_of,
)

# (label = height, width, kbit/s)
LADDER = [(720, 1280, 1800), (360, 640, 500)]
PRESET = "veryfast"  # x264's name, as a job gives it
SVT_PRESET = "10"    # what the core maps it to (native encoders.cpp)


def svt_args(index: int, kbps: int) -> list[str]:
    gop = FPS * GOP_SECONDS
    s = f":v:{index}"
    return [f"-c{s}", "libsvtav1", f"-preset{s}", SVT_PRESET, f"-b{s}", f"{kbps}k",
            f"-maxrate{s}", f"{kbps * 3 // 2}k", f"-bufsize{s}", f"{kbps * 2}k",
            f"-g{s}", str(gop), f"-keyint_min{s}", str(gop),
            f"-svtav1-params{s}", "irefresh-type=2:scd=0", f"-pix_fmt{s}", "yuv420p"]


def ffmpeg_command(master: Path, out: Path) -> list[str]:
    cmd = [*ffmpeg_bin(), "-i", str(master), "-filter_complex", split_scale(LADDER)]
    for i, (_, _, kbps) in enumerate(LADDER):
        cmd += ["-map", f"[v{i}]", *svt_args(i, kbps)]
    streams = " ".join(f"v:{i},name:v{label}" for i, (label, _, _) in enumerate(LADDER))
    return [*cmd, "-an", "-var_stream_map", streams,
            "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
            "-hls_fmp4_init_filename", "init.mp4",
            "-hls_segment_filename", str(out / "%v" / "%d.m4s"), str(out / "%v" / "media.m3u8")]


def run_cdlc(master: Path, out: Path) -> tuple[float, float]:
    rungs = [native.Rung(id=f"v{label}", width=w, height=label, bitrate=kbps * 1000,
                         encoder="libsvtav1") for label, w, kbps in LADDER]
    transcoder = native.Transcoder(master, out, rungs, segment_seconds=SEGMENT_SECONDS,
                                   gop_seconds=GOP_SECONDS, preset=PRESET, audio=False)
    c0, t0 = cpu_self(), time.perf_counter()
    transcoder.run()
    return time.perf_counter() - t0, cpu_self() - c0


def run_ffmpeg(master: Path, out: Path) -> tuple[float, float]:
    c0, t0 = cpu_children(), time.perf_counter()
    subprocess.run(ffmpeg_command(master, out), check=True)
    return time.perf_counter() - t0, cpu_children() - c0


def cut_master(seconds: int) -> Path:
    full = make_master(max(20, seconds))
    if seconds >= 20:
        return full
    path = full.with_name(f"master_1080p30_{seconds}s_cut.mp4")
    if not path.exists():
        subprocess.run([*ffmpeg_bin(), "-i", str(full), "-t", str(seconds), "-c", "copy",
                        str(path)], check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args(argv)
    master = cut_master(args.seconds)
    times: dict[str, list[tuple[float, float]]] = {"cdlc": [], "ffmpeg": []}
    scores: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="cdlc-bench-av1-") as tmp:
        for run in range(args.runs):
            for tool, go in (("cdlc", run_cdlc), ("ffmpeg", run_ffmpeg)):
                out = Path(tmp) / f"{tool}{run}"
                out.mkdir()
                times[tool].append(go(master, out))
                if run == 0:  # the encodes are deterministic enough: score the first
                    join = joined_cdlc if tool == "cdlc" else joined_hls
                    clips = [(join(out, f"v{label}"), w, label) for label, w, _ in LADDER]
                    scores[tool] = vmaf_of(master, clips, args.seconds)

    wall = {t: statistics.median(w for w, _ in v) for t, v in times.items()}
    cpu = {t: statistics.median(c for _, c in v) for t, v in times.items()}
    ratios = statistics.median(f[0] / c[0] for c, f in zip(times["cdlc"], times["ffmpeg"],
                                                            strict=True))
    print(f"\n{dt.date.today()}, {machine()}; master {args.seconds} s 1080p30, AV1 ladder "
          f"{','.join(f'{h}:{k}' for h, _, k in LADDER)}, SVT-AV1 preset {SVT_PRESET}, "
          f"GOP {GOP_SECONDS} s, segments {SEGMENT_SECONDS} s; medians of {args.runs} runs\n")
    print("| tool | wall s | throughput vs ffmpeg CLI (median of per-run ratios) | CPU s | "
          "CPU vs ffmpeg CLI | " + " | ".join(f"VMAF {h}p" for h, _, _ in LADDER) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(LADDER))
    for tool in ("cdlc", "ffmpeg"):
        ratio = ratios if tool == "cdlc" else 1.0
        print(f"| {tool} | {wall[tool]:.2f} | {ratio:.2f}x | {cpu[tool]:.1f} | "
              f"{cpu[tool] / cpu['ffmpeg']:.2f} | "
              + " | ".join(f"{v:.2f}" for v in scores[tool]) + " |")
    per_run = "; ".join(f"{t}: " + ", ".join(f"{w:.1f}" for w, _ in v) for t, v in times.items())
    print(f"\nper-run wall s: {per_run}")
    diff = [c - f for c, f in zip(scores["cdlc"], scores["ffmpeg"], strict=True)]
    print("VMAF cdlc - ffmpeg per rung: " + ", ".join(f"{d:+.2f}" for d in diff))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
