"""Transcode benchmark: cdlc's one-pass ladder against the ffmpeg CLI, same run.

    .venv/bin/python -m bench.transcode [--runs 3] [--seconds 20]

One synthetic 1080p30 master with stereo AAC (made once, cached in bench/.cache),
the ladder 1080:5000,720:3000,480:1500,360:800 (kbit/s; maxrate 1.5x, bufsize 2x),
x264 preset veryfast, 2 s closed GOPs without scene cuts, 4 s segments, AAC 128k.
Per run, in turn:

- cdlc: native.Transcoder (one decode, per-rung scale + encode threads, CMAF out);
- ffmpeg (one process): the command a user would write for the same ladder:
  filter_complex split + scale, one libx264 per rung, -var_stream_map, HLS fMP4;
- ffmpeg (4 runs): the same ladder as four separate commands, one per rung
  (audio with the first), run one after the other.

Reported: wall-clock medians, source frames per second, ratios against the
one-process ffmpeg CLI, CPU seconds (getrusage: this process for cdlc, children for
ffmpeg), the CPU-bound limit (the encoders' own CPU seconds / cores: ffmpeg's
one-process CPU minus a decode+scale-only run of the same graph), and each
rung's PSNR against the source scaled to its size (ffmpeg's psnr filter, bicubic)
and its VMAF against the same (libvmaf of the imageio-ffmpeg binary, every second
picture; ``--no-vmaf`` skips it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import native
from bench import cpu_children, cpu_self
from engine.vmaf import compare_clips, first_picture_time, vmaf_binary

CACHE = Path(__file__).resolve().parent / ".cache"
# (label = height, width, kbit/s)
LADDER = [(1080, 1920, 5000), (720, 1280, 3000), (480, 854, 1500), (360, 640, 800)]
PRESET = "veryfast"
FPS = 30
GOP_SECONDS = 2
SEGMENT_SECONDS = 4
AUDIO_KBPS = 128


def ffmpeg_bin() -> list[str]:
    return ["ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-y"]


def make_master(seconds: int) -> Path:
    path = CACHE / f"master_1080p30_{seconds}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    subprocess.run([
        *ffmpeg_bin(),
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate={FPS}:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-filter_complex", "[1:a]aformat=channel_layouts=stereo[a]",
        "-map", "0:v", "-map", "[a]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "192k", str(tmp),
    ], check=True)
    tmp.rename(path)
    return path


def x264_args(index: int | None, kbps: int) -> list[str]:
    """The libx264 settings cdlc uses, as ffmpeg CLI options (per output stream)."""
    s = "" if index is None else f":v:{index}"
    gop = GOP_SECONDS * FPS
    return [
        f"-c{s}", "libx264", f"-preset{s}", PRESET,
        f"-b{s}", f"{kbps}k", f"-maxrate{s}", f"{kbps * 3 // 2}k", f"-bufsize{s}", f"{kbps * 2}k",
        f"-x264-params{s}", f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
        f"-force_key_frames{s}", f"expr:gte(t,n_forced*{GOP_SECONDS})",
    ]


def audio_args() -> list[str]:
    return ["-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2", "-ar", "48000"]


def hls_args(out: Path, name: str) -> list[str]:
    return [
        "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        "-hls_fmp4_init_filename", "init.mp4",
        "-hls_segment_filename", str(out / name / "%d.m4s"), str(out / name / "media.m3u8"),
    ]


def split_scale(ladder: list[tuple[int, int, int]]) -> str:
    """The filter graph that splits the source into one scaled output per rung,
    [v0], [v1], ... (label = height, width, kbit/s), as a user would write it."""
    n = len(ladder)
    split = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))
    scales = ";".join(f"[s{i}]scale={w}:{label}[v{i}]" for i, (label, w, _) in enumerate(ladder))
    return f"{split};{scales}"


def ffmpeg_one_process(master: Path, out: Path) -> list[str]:
    cmd = [*ffmpeg_bin(), "-i", str(master), "-filter_complex", split_scale(LADDER)]
    for i, (_, _, kbps) in enumerate(LADDER):
        cmd += ["-map", f"[v{i}]", *x264_args(i, kbps)]
    cmd += ["-map", "0:a:0", *audio_args()]
    streams = " ".join(f"v:{i},agroup:aud,name:v{label}" for i, (label, _, _) in enumerate(LADDER))
    cmd += [
        "-var_stream_map", f"{streams} a:0,agroup:aud,name:audio",
        "-master_pl_name", "master.m3u8",
        "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        "-hls_fmp4_init_filename", "init.mp4",
        "-hls_segment_filename", str(out / "%v" / "%d.m4s"), str(out / "%v" / "media.m3u8"),
    ]
    return cmd


def ffmpeg_separate(master: Path, out: Path) -> list[list[str]]:
    cmds = []
    for i, (label, w, kbps) in enumerate(LADDER):
        cmd = [*ffmpeg_bin(), "-i", str(master), "-vf", f"scale={w}:{label}",
               *x264_args(None, kbps)]
        cmd += audio_args() if i == 0 else ["-an"]
        (out / f"v{label}").mkdir(parents=True, exist_ok=True)
        cmds.append([*cmd, *hls_args(out, f"v{label}")])
    return cmds


def decode_scale_only(master: Path) -> list[str]:
    """The one-process graph without encoders: what decoding and scaling cost."""
    cmd = [*ffmpeg_bin(), "-i", str(master), "-filter_complex", split_scale(LADDER)]
    for i in range(len(LADDER)):
        cmd += ["-map", f"[v{i}]", "-f", "null", "-"]
    return cmd


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)


def timed_children(*cmds: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, children) of commands run one after another."""
    c0, t0 = cpu_children(), time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, check=True)
    return time.perf_counter() - t0, cpu_children() - c0


def run_cdlc(master: Path, out: Path, threads: int = 0) -> tuple[float, float]:
    rungs = [native.Rung(id=f"v{label}", width=w, height=label, bitrate=kbps * 1000)
             for label, w, kbps in LADDER]
    transcoder = native.Transcoder(master, out, rungs, segment_seconds=SEGMENT_SECONDS,
                                   gop_seconds=GOP_SECONDS, preset=PRESET,
                                   audio_bitrate=AUDIO_KBPS * 1000, encoder_threads=threads)
    c0, t0 = cpu_self(), time.perf_counter()
    transcoder.run()
    return time.perf_counter() - t0, cpu_self() - c0


def joined_cdlc(out: Path, rendition: str) -> Path:
    files = sorted((out / rendition).glob("*.m4s"), key=lambda p: int(p.stem))
    target = out / f"{rendition}.mp4"
    target.write_bytes((out / rendition / "init.mp4").read_bytes()
                       + b"".join(p.read_bytes() for p in files))
    return target


def joined_hls(out: Path, rendition: str) -> Path:
    playlist = (out / rendition / "media.m3u8").read_text()
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist)
    assert init, playlist
    parts = [init.group(1)] + [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
    target = out / f"{rendition}.mp4"
    target.write_bytes(b"".join((out / rendition / Path(p).name).read_bytes() for p in parts))
    return target


def psnr(distorted: Path, master: Path, width: int, height: int) -> float:
    graph = (f"[0:v]setpts=PTS-STARTPTS[d];[1:v]scale={width}:{height}:flags=bicubic,"
             "setpts=PTS-STARTPTS[r];[d][r]psnr")
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(distorted), "-i",
                           str(master), "-lavfi", graph, "-f", "null", "-"],
                          capture_output=True, text=True, check=True)
    match = re.search(r"PSNR y:\S+ u:\S+ v:\S+ average:(\S+)", proc.stderr)
    assert match, proc.stderr[-2000:]
    return float(match.group(1))


def vmaf_of(master: Path, clips: list[tuple[Path, int, int]], seconds: int) -> list[float]:
    """Mean VMAF of each (clip, width, height) against the master scaled to that
    size, every second picture of ``seconds``, in one run over the master."""
    exe = vmaf_binary()
    return compare_clips(master, first_picture_time(master, ffmpeg=exe), clips,
                         frames=seconds * FPS, fps=Fraction(FPS), subsample=2, ffmpeg=exe)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({model})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--no-psnr", action="store_true")
    parser.add_argument("--no-vmaf", action="store_true")
    parser.add_argument("--encoder-threads", type=int, default=0,
                        help="x264 threads per cdlc rung (0 = x264's default, as ffmpeg)")
    args = parser.parse_args()
    master = make_master(args.seconds)
    frames = args.seconds * FPS
    cores = os.cpu_count() or 1
    timings = {"cdlc": Timing(), "ffmpeg (one process)": Timing(), "ffmpeg (4 runs)": Timing()}
    decode_cpu: list[float] = []
    psnrs: dict[str, dict[str, float]] = {"cdlc": {}, "ffmpeg": {}}
    vmafs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="cdlc-bench-") as tmp:
        for run in range(args.runs):
            base = Path(tmp) / f"run{run}"
            cd, ff, ff4 = base / "cdlc", base / "ffmpeg", base / "ffmpeg4"
            for label, _, _ in LADDER:
                (ff / f"v{label}").mkdir(parents=True, exist_ok=True)
            (ff / "audio").mkdir(parents=True, exist_ok=True)
            def do_cdlc(cd: Path = cd) -> None:
                timings["cdlc"].add(*run_cdlc(master, cd, args.encoder_threads))

            def do_ffmpeg(ff: Path = ff) -> None:
                timings["ffmpeg (one process)"].add(*timed_children(
                    ffmpeg_one_process(master, ff)))

            def do_ffmpeg4(ff4: Path = ff4) -> None:
                timings["ffmpeg (4 runs)"].add(*timed_children(*ffmpeg_separate(master, ff4)))

            steps = [do_cdlc, do_ffmpeg, do_ffmpeg4]
            # Rotate the order every run so a noisy neighbour does not always hit the
            # same tool (the machine may be shared).
            for k in range(len(steps)):
                steps[(k + run) % len(steps)]()
            decode_cpu.append(timed_children(decode_scale_only(master))[1])
            print(f"run {run + 1}/{args.runs}: " + ", ".join(
                f"{k} {t.wall[-1]:.1f} s" for k, t in timings.items()), flush=True)
            if run == 0 and not args.no_psnr:
                for label, w, _ in LADDER:
                    psnrs["cdlc"][f"v{label}"] = psnr(joined_cdlc(cd, f"v{label}"), master,
                                                      w, label)
                    psnrs["ffmpeg"][f"v{label}"] = psnr(joined_hls(ff, f"v{label}"), master,
                                                        w, label)
            if run == 0 and not args.no_vmaf:
                for tool, out, join in (("cdlc", cd, joined_cdlc), ("ffmpeg", ff, joined_hls)):
                    vmafs[tool] = vmaf_of(master, [(join(out, f"v{label}"), w, label)
                                                   for label, w, _ in LADDER], args.seconds)
            shutil.rmtree(base, ignore_errors=True)

    ref_wall = timings["ffmpeg (one process)"].wall
    enc_cpu = statistics.median(timings["ffmpeg (one process)"].cpu) - statistics.median(
        decode_cpu)
    limit = enc_cpu / cores
    print(f"\n{dt.date.today().isoformat()}, {machine()}; master {args.seconds} s 1080p30 "
          f"({frames} frames), ladder {','.join(f'{lb}:{k}' for lb, _, k in LADDER)}, "
          f"x264 {PRESET}, GOP {GOP_SECONDS} s, segments {SEGMENT_SECONDS} s; "
          f"medians of {args.runs} runs\n")
    print("| tool | wall s | source fps | throughput vs ffmpeg CLI (median of per-run ratios) "
          "| CPU s | CPU vs ffmpeg CLI | wall / CPU-bound limit |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ref_cpu = statistics.median(timings["ffmpeg (one process)"].cpu)
    for name, t in timings.items():
        wall = statistics.median(t.wall)
        ratio = statistics.median(r / w for r, w in zip(ref_wall, t.wall, strict=True))
        print(f"| {name} | {wall:.2f} | {frames / wall:.1f} | {ratio:.2f}x | "
              f"{statistics.median(t.cpu):.1f} | {statistics.median(t.cpu) / ref_cpu:.2f} | "
              f"{wall / limit:.2f} |")
    print("\nper-run wall s: " + "; ".join(
        f"{k}: " + ", ".join(f"{w:.1f}" for w in t.wall) for k, t in timings.items()))
    print(f"\nCPU-bound limit: encoders' own CPU {enc_cpu:.1f} s (ffmpeg one-process CPU "
          f"{statistics.median(timings['ffmpeg (one process)'].cpu):.1f} s minus decode+scale "
          f"{statistics.median(decode_cpu):.1f} s) / {cores} cores = {limit:.2f} s wall; "
          f"cdlc spends {statistics.median(timings['cdlc'].cpu) / enc_cpu:.2f}x the encoders' "
          "CPU in all.")
    if psnrs["cdlc"]:
        print("\n| rung | PSNR cdlc dB | PSNR ffmpeg dB | difference dB |")
        print("|---|---:|---:|---:|")
        for rung, value in psnrs["cdlc"].items():
            other = psnrs["ffmpeg"][rung]
            print(f"| {rung} | {value:.2f} | {other:.2f} | {value - other:+.2f} |")
    if vmafs:
        print("\n| rung | VMAF cdlc | VMAF ffmpeg | difference |")
        print("|---|---:|---:|---:|")
        for (label, _, _), mine, theirs in zip(LADDER, vmafs["cdlc"], vmafs["ffmpeg"],
                                               strict=True):
            print(f"| v{label} | {mine:.2f} | {theirs:.2f} | {mine - theirs:+.2f} |")


if __name__ == "__main__":
    main()
