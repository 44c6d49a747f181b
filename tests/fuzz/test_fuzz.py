"""Bounded atheris runs over every target in tests/fuzz/targets.py (a few seconds
each, in a subprocess: libFuzzer exits the process). The seed corpus in
tests/fuzz/corpus/<target> is read only; new inputs go to a temporary directory.
Crashes found become regression cases in test_fuzz_regressions.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
SECONDS = 2


@pytest.mark.fuzz
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    seeds = CORPUS / target
    (tmp_path / "new").mkdir()
    assert any(seeds.iterdir()), f"no seed corpus for {target}"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.targets", target, f"-max_total_time={SECONDS}",
         "-max_len=4096", "-rss_limit_mb=1024", f"-artifact_prefix={tmp_path}/",
         str(tmp_path / "new"), str(seeds)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    tail = "\n".join(proc.stderr.splitlines()[-30:])
    assert proc.returncode == 0, f"{target} crashed:\n{tail}"
    assert "Done" in proc.stderr or "DONE" in proc.stderr, tail


@pytest.mark.fuzz
def test_package_copy_survives_mutated_masters(tmp_path: Path) -> None:
    """Damaged MP4, MKV and TS masters: package_copy either works or raises a
    NativeError subclass; it never takes the process down."""
    from tests.media import ffmpeg, make_master

    mp4 = make_master(tmp_path / "m.mp4", seconds=2, width=160, height=120, fps="15",
                      vcodec=["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2",
                              "-g", "8", "-pix_fmt", "yuv420p"])
    masters = [mp4]
    for ext in ("mkv", "ts"):
        masters.append(tmp_path / f"m.{ext}")
        ffmpeg("-i", str(mp4), "-c", "copy", str(masters[-1]))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.mutate_masters", str(work), *map(str, masters)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    last = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert proc.returncode == 0, (
        f"crashed (rc {proc.returncode}) at {last[0]}: {proc.stderr[-2000:]}")
    assert last[0].startswith("outcomes"), last
