"""engine.gpu: run-time NVENC detection for GPU workers (CPU-only hosts answer False)."""

from __future__ import annotations

import pytest

import native
from engine import gpu


def test_answer_matches_the_native_probe_and_is_cached() -> None:
    gpu.nvenc_available.cache_clear()
    first = gpu.nvenc_available()
    assert first is native.nvenc_available()
    assert gpu.nvenc_available() is first
    assert gpu.h264_encoder() == ("h264_nvenc" if first else "libx264")
    assert gpu.h264_encoder() in native.encoders_available()


def test_disable_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDLC_DISABLE_GPU", "1")
    gpu.nvenc_available.cache_clear()
    try:
        assert gpu.nvenc_available() is False
        assert gpu.h264_encoder() == "libx264"
    finally:
        gpu.nvenc_available.cache_clear()
