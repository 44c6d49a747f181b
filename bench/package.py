"""Package-only benchmark: cdlc's CMAF remux against ffmpeg's, and against cp.

    .venv/bin/python -m bench.package [--runs 5] [--minutes 10]

One 1080p30 H.264 (2 s GOPs, ~6 Mbit/s) + stereo AAC master, made once and cached
in bench/.cache: a 10 s x264 ultrafast clip repeated with the concat demuxer
(-c copy), so generating it takes seconds, not the length of the movie.
Per run, in turn, each into a fresh directory on the same file system:

- cdlc call: native.package_copy(master, out, 4.0) in this process (the packaging
  call itself: demux, bitstream normalisation, CMAF segments for video and audio);
- cdlc call cbcs / cenc: the same call encrypting (CMAF common encryption in the
  core's writer, native.Encryption);
- cdlc call aes-128: the same call, clear, then what an aes-128 job adds before
  publishing: every media segment encrypted whole (engine.segment_crypto, the
  pipeline's own step: AES-128-CBC through `cryptography`/OpenSSL);
- cdlc command: the same call as a whole command, a new Python process
  (`python -c "import native; native.package_copy(...)"`);
- cdlc ingest --copy: the user's whole command, the venv's `cdlc` script
  (embedded defaults, fresh data dir): the same call, codec strings, publish to
  the local object store, SQLite metadata; and with `--encryption cbcs` (the key
  made and stored in the key store first);
- ffmpeg HLS: `ffmpeg -i M -map 0 -c copy -f hls -hls_segment_type fmp4 -hls_time 4`;
- ffmpeg DASH: `ffmpeg -i M -map 0 -c copy -f dash -seg_duration 4`;
- cp: `cp M out/` (the floor: the bytes read and written once).

The order of the contenders rotates from run to run. Reported: wall-clock medians
(and the best run, less disturbed by other load), MB/s of master bytes, ratios
(cdlc speed-up over each baseline: baseline time / cdlc time), CPU seconds, and
what each encryption adds to the clear package-only time (target: cbcs <= 15%).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import native
from bench import cpu_children, cpu_self
from engine.pipeline import to_models
from engine.segment_crypto import encrypt_renditions
from metadata.keys import AES_128, ContentKey

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"
SEGMENT_SECONDS = 4.0
CLIP_SECONDS = 10


def ffmpeg_bin() -> list[str]:
    return ["ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-y"]


def make_master(minutes: int) -> Path:
    """A `minutes` long 1080p30 master, cached. The clip is encoded once and
    repeated with the concat demuxer, which rewrites the timestamps."""
    path = CACHE / f"package_master_1080p30_{minutes}min.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    clip = CACHE / "package_clip_1080p30_10s.mp4"
    if not clip.exists():
        subprocess.run([
            *ffmpeg_bin(),
            "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={CLIP_SECONDS}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={CLIP_SECONDS}",
            "-filter_complex", "[1:a]aformat=channel_layouts=stereo[a]",
            "-map", "0:v", "-map", "[a]",
            "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "6M", "-maxrate", "8M",
            "-bufsize", "12M", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(clip),
        ], check=True)
    listing = CACHE / "package_concat.txt"
    repeats = minutes * 60 // CLIP_SECONDS
    listing.write_text("".join(f"file '{clip.name}'\n" for _ in range(repeats)))
    tmp = path.with_suffix(".part.mp4")
    subprocess.run([*ffmpeg_bin(), "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-c", "copy", str(tmp)], check=True)
    tmp.rename(path)
    return path


def cdlc_command() -> list[str]:
    """The user's `cdlc` (the venv's console script), else the module."""
    script = Path(sys.executable).with_name("cdlc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]


def timed(fn: Callable[[], None], in_process: bool) -> tuple[float, float]:
    cpu = cpu_self if in_process else cpu_children
    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--containers", default="mkv,ts",
                    help="also time the packaging call on these remuxes of the master "
                         "(comma-separated; '' for none)")
    args = ap.parse_args()

    master = make_master(args.minutes)
    size_mb = master.stat().st_size / 1e6
    info = native.probe(master)
    # Warm the page cache so every contender reads from memory alike.
    with open(master, "rb") as f:
        while f.read(1 << 24):
            pass

    work = Path(tempfile.mkdtemp(prefix="cdlc-bench-package-", dir=CACHE))
    seg = str(SEGMENT_SECONDS)
    code = (f"import native; native.package_copy({str(master)!r}, {str(work / 'cmd')!r}, "
            f"{SEGMENT_SECONDS})")

    def cdlc_call(out: Path) -> None:
        native.package_copy(master, out, SEGMENT_SECONDS)

    # Fixed keys: what is timed is the cipher, not the key store.
    kid, key = bytes(range(16)), bytes(range(16, 32))

    def cdlc_encrypted(scheme: str) -> Callable[[Path], None]:
        def call(out: Path) -> None:
            native.package_copy(master, out, SEGMENT_SECONDS,
                                encryption=native.Encryption(scheme, kid, key))
        return call

    def cdlc_aes128(out: Path) -> None:
        result = native.package_copy(master, out, SEGMENT_SECONDS)
        renditions, segments = to_models("bench", result)
        encrypt_renditions(out, ContentKey("bench", AES_128, kid, key), renditions, segments)

    def ingest_copy(out: Path, *extra: str) -> None:
        run([*cdlc_command(), "ingest", str(master), "--copy", "--segment-seconds", seg,
             "--json", *extra],
            env={**{k: v for k, v in os.environ.items() if not k.startswith("CDLC_")},
                 "CDLC_DATA_DIR": str(out / "data")})

    cases: dict[str, tuple[Callable[[Path], None], bool]] = {
        "cdlc call": (cdlc_call, True),
        "cdlc call cbcs": (cdlc_encrypted("cbcs"), True),
        "cdlc call cenc": (cdlc_encrypted("cenc"), True),
        "cdlc call aes-128": (cdlc_aes128, True),
        "cdlc command": (lambda out: run([sys.executable, "-c", code]), False),
        "cdlc ingest --copy": (ingest_copy, False),
        "cdlc ingest --copy --encryption cbcs": (
            lambda out: ingest_copy(out, "--encryption", "cbcs"), False),
        "ffmpeg HLS fMP4": (lambda out: run([
            *ffmpeg_bin(), "-i", str(master), "-map", "0", "-c", "copy", "-f", "hls",
            "-hls_segment_type", "fmp4", "-hls_time", seg, "-hls_playlist_type", "vod",
            "-hls_segment_filename", str(out / "%d.m4s"), str(out / "media.m3u8")]), False),
        "ffmpeg DASH": (lambda out: run([
            *ffmpeg_bin(), "-i", str(master), "-map", "0", "-c", "copy", "-f", "dash",
            "-seg_duration", seg, str(out / "manifest.mpd")]), False),
        "cp": (lambda out: run(["cp", str(master), str(out / "master.mp4")]), False),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    segments = 0
    try:
        names = list(cases)
        for i in range(args.runs):
            # Rotate the order each run so no contender always goes first (the
            # first writer after a deletion pays for fresh page-cache pages).
            for name in names[i % len(names):] + names[: i % len(names)]:
                fn, in_process = cases[name]
                out = work / "cmd" if name == "cdlc command" else work / "out"
                shutil.rmtree(work / "out", ignore_errors=True)
                shutil.rmtree(work / "cmd", ignore_errors=True)
                (work / "out").mkdir()
                # Every contender starts from the same state: no dirty pages left
                # by the one before (467 MB of writeback would land on whoever runs
                # next, by chance), the master still in the page cache.
                os.sync()
                wall, cpu = timed(functools.partial(fn, out), in_process)
                times[name].append(wall)
                cpus[name].append(cpu)
                if name == "cdlc call" and i == 0:
                    segments = sum(1 for _ in (work / "out").rglob("*.m4s"))
                print(f"run {i + 1} {name}: {wall:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
    today = dt.date.today().isoformat()
    print()
    print(f"### Package-only (bench/package.py), {today}")
    print()
    arch = platform.processor() or platform.machine()
    load = os.getloadavg()[1]
    print(f"{platform.system()}, {os.cpu_count()} cores, load average {load:.1f} over the run; "
          f"{arch}; FFmpeg CLI {ffmpeg_version()}.")
    print(f"Master: {args.minutes} min 1080p30 H.264 + AAC, {size_mb:.0f} MB "
          f"({info.bit_rate / 1e6:.1f} Mbit/s), 2 s GOPs; 4 s target segments "
          f"(cdlc wrote {segments} segments); medians of {args.runs} runs, page cache warm.")
    print()
    best = {k: min(v) for k, v in times.items()}
    print("| contender | median s | MB/s | best s | cdlc call speed-up (median / best) "
          "| cdlc command speed-up (median) | CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in cases:
        t = med[name]
        print(f"| {name} | {t:.2f} | {size_mb / t:.0f} | {best[name]:.2f} | "
              f"{t / med['cdlc call']:.2f}x / {best[name] / best['cdlc call']:.2f}x | "
              f"{t / med['cdlc command']:.2f}x | {cpu_med[name]:.2f} |")
    print()
    for label, table in (("median", med), ("best", best)):
        print(f"{label}: cdlc call vs ffmpeg HLS remux "
              f"{table['ffmpeg HLS fMP4'] / table['cdlc call']:.2f}x (target >= 3x), "
              f"vs cp {table['cp'] / table['cdlc call']:.2f}x (target >= 0.3x); "
              f"cdlc command vs ffmpeg HLS "
              f"{table['ffmpeg HLS fMP4'] / table['cdlc command']:.2f}x, "
              f"cdlc ingest --copy vs ffmpeg HLS "
              f"{table['ffmpeg HLS fMP4'] / table['cdlc ingest --copy']:.2f}x.")

    print()
    print("What encrypting adds to the clear package-only time (same run, medians; "
          "target for cbcs: <= 15%):")
    print()
    print("| encrypted | clear | median s | clear median s | added (median / best) "
          "| added CPU (medians) |")
    print("|---|---|---:|---:|---:|---:|")
    for enc, clear in (("cdlc call cbcs", "cdlc call"), ("cdlc call cenc", "cdlc call"),
                       ("cdlc call aes-128", "cdlc call"),
                       ("cdlc ingest --copy --encryption cbcs", "cdlc ingest --copy")):
        print(f"| {enc} | {clear} | {med[enc]:.3f} | {med[clear]:.3f} | "
              f"{(med[enc] / med[clear] - 1) * 100:+.1f}% / "
              f"{(best[enc] / best[clear] - 1) * 100:+.1f}% | "
              f"{(cpu_med[enc] / cpu_med[clear] - 1) * 100:+.1f}% |")

    containers = [c for c in args.containers.split(",") if c]
    if containers:
        compare_containers(master, containers, max(3, args.runs // 2))


def compare_containers(master: Path, containers: list[str], runs: int) -> None:
    """The packaging call against ffmpeg's HLS fMP4 remux on the same streams in
    other containers (Matroska: no decode times, rebuilt; MPEG-TS: Annex B and
    ADTS, converted)."""
    print()
    print("| container | cdlc call s | ffmpeg HLS fMP4 s | speed-up |")
    print("|---|---:|---:|---:|")
    for ext in containers:
        src = master.with_name(f"{master.stem}.{ext}")
        if not src.exists():
            run([*ffmpeg_bin(), "-i", str(master), "-map", "0", "-c", "copy", str(src)])
        with open(src, "rb") as f:
            while f.read(1 << 24):
                pass
        work = Path(tempfile.mkdtemp(prefix="cdlc-bench-package-", dir=CACHE))
        ours, theirs = [], []
        # MPEG-TS AAC is ADTS: ffmpeg's MP4 muxer needs the bitstream filter.
        bsf = ["-bsf:a", "aac_adtstoasc"] if ext == "ts" else []
        try:
            for _ in range(runs):
                shutil.rmtree(work / "out", ignore_errors=True)
                t0 = time.perf_counter()
                native.package_copy(src, work / "out", SEGMENT_SECONDS)
                ours.append(time.perf_counter() - t0)
                shutil.rmtree(work / "out", ignore_errors=True)
                (work / "out").mkdir()
                t0 = time.perf_counter()
                run([*ffmpeg_bin(), "-i", str(src), "-map", "0", "-c", "copy", *bsf, "-f", "hls",
                     "-hls_segment_type", "fmp4", "-hls_time", str(SEGMENT_SECONDS),
                     "-hls_playlist_type", "vod", "-hls_segment_filename",
                     str(work / "out" / "%d.m4s"), str(work / "out" / "media.m3u8")])
                theirs.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {ext} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return out.split()[2] if out else "?"


if __name__ == "__main__":
    main()
