"""GPU worker detection: is NVENC usable on this machine?

The answer comes from the native core, which opens a tiny h264_nvenc encoder
(FFmpeg build has it + NVIDIA driver + a CUDA device with NVENC); it is asked once
per process and cached. CPU-only machines answer False without side effects.
"""

from __future__ import annotations

import functools
import os

import native


@functools.cache
def nvenc_available() -> bool:
    """True when rungs may use encoder="h264_nvenc". CDLC_DISABLE_GPU=1 forces False."""
    if os.environ.get("CDLC_DISABLE_GPU", "") not in ("", "0"):
        return False
    return native.nvenc_available()


def h264_encoder() -> str:
    """The encoder a GPU-capable worker should use here: h264_nvenc or libx264."""
    return "h264_nvenc" if nvenc_available() else "libx264"
