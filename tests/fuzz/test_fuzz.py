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
