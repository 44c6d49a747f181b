"""Worker classes: GPU detection at run time leaves CPU-only machines unaffected."""

from __future__ import annotations

from pathlib import Path

import pytest

import native
from engine.workers import WorkerClass, choose_encoder, choose_worker
from tests.conftest import make_env
from tests.media import make_master


def test_auto_follows_the_machine() -> None:
    expected = WorkerClass.GPU if native.nvenc_available() else WorkerClass.CPU
    assert choose_worker("auto") is expected
    assert choose_worker("cpu").encoder == "libx264"
    assert WorkerClass.GPU.encoder == "h264_nvenc"


@pytest.mark.skipif(native.nvenc_available(), reason="this machine has a usable NVENC")
def test_gpu_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="h264_nvenc"):
        choose_encoder("gpu")
    master = make_master(tmp_path / "m.mp4", seconds=1, width=320, height=240)
    env = make_env(tmp_path / "data", CDLC_ENCODER="gpu")
    proc = env.run("ingest", str(master), "--id", "gpu")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "cdlc: error: encoder gpu requested, but h264_nvenc has no usable CUDA device "
        "on this machine (use CDLC_ENCODER=auto or cpu)"
    ]
