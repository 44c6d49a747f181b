"""Typed face of the C++ core (native/_core, built by CMake through setup.py).

Everything media-heavy runs in C++ with the GIL released. Errors arrive as the
exception classes below, each also an instance of the matching builtin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from native import _core
from native._core import (
    CancelledError,
    InvalidDataError,
    MediaInfo,
    NativeError,
    NativeIOError,
    NotFoundError,
    PipelineResult,
    RenditionResult,
    SegmentRecord,
    StreamInfo,
    TrackInfo,
    TrackKind,
)

__all__ = [
    "CancelledError",
    "InvalidDataError",
    "MediaInfo",
    "NativeError",
    "NativeIOError",
    "NotFoundError",
    "PipelineResult",
    "RenditionResult",
    "Rung",
    "SegmentRecord",
    "StreamInfo",
    "TrackInfo",
    "TrackKind",
    "Transcoder",
    "package_copy",
    "probe",
]


def probe(path: str | Path) -> MediaInfo:
    """Container and stream facts of a master. Raises InvalidDataError / NotFoundError."""
    return _core.probe(str(path))


@dataclass(frozen=True)
class Rung:
    """One video rendition of the ladder. width 0 derives it from height and the DAR."""

    id: str
    height: int
    bitrate: int
    width: int = 0
    maxrate: int = 0
    bufsize: int = 0
    crf: int = -1
    encoder: str = "libx264"


class Transcoder:
    """One-pass ABR transcode of `input` into CMAF renditions under `output_dir`.

    Call run() from a worker thread; cancel() from any thread stops it within a second.
    """

    def __init__(
        self,
        input: str | Path,
        output_dir: str | Path,
        rungs: Sequence[Rung],
        *,
        segment_seconds: float = 4.0,
        gop_seconds: float = 2.0,
        preset: str = "veryfast",
        fps: tuple[int, int] | None = None,
        audio: bool = True,
        audio_bitrate: int = 128_000,
    ) -> None:
        cfg = _core.TranscodeConfig()
        cfg.input = str(input)
        cfg.output_dir = str(output_dir)
        native_rungs = []
        for rung in rungs:
            r = _core.RungConfig()
            r.id, r.width, r.height = rung.id, rung.width, rung.height
            r.bitrate, r.maxrate, r.bufsize = rung.bitrate, rung.maxrate, rung.bufsize
            r.crf, r.encoder = rung.crf, rung.encoder
            native_rungs.append(r)
        cfg.rungs = native_rungs
        cfg.segment_seconds = segment_seconds
        cfg.gop_seconds = gop_seconds
        cfg.preset = preset
        if fps is not None:
            cfg.fps_num, cfg.fps_den = fps
        cfg.audio = audio
        cfg.audio_bitrate = audio_bitrate
        self._impl = _core.Transcoder(cfg)

    def run(self, progress: Callable[[float], None] | None = None) -> PipelineResult:
        """Blocking; the GIL is released. Raises NativeError subclasses."""
        return self._impl.run(progress)

    def cancel(self) -> None:
        self._impl.cancel()


def package_copy(
    input: str | Path, output_dir: str | Path, segment_seconds: float = 4.0
) -> PipelineResult:
    """Package an H.264/HEVC + AAC master into CMAF without re-encoding."""
    return _core.package_copy(str(input), str(output_dir), segment_seconds)
