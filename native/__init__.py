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
    "Segmenter",
    "StreamInfo",
    "TrackInfo",
    "TrackKind",
    "Transcoder",
    "annexb_to_length_prefixed",
    "avc_decoder_config",
    "encoders_available",
    "hevc_decoder_config",
    "nvenc_available",
    "package_copy",
    "probe",
    "set_log_level",
]


def set_log_level(level: int) -> None:
    """libav*'s own stderr logging: -8 quiet, 16 error (default), 24 warning, 32 info.
    Errors still arrive as exceptions carrying the library's reason."""
    _core.set_log_level(level)


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


def encoders_available() -> list[str]:
    """H.264 encoders that open on this machine, CPU first: ["libx264"] or
    ["libx264", "h264_nvenc"]. Checked once per process by opening each encoder."""
    return list(_core.h264_encoders_available())


def nvenc_available() -> bool:
    """True when this FFmpeg build has h264_nvenc and a CUDA device with NVENC opens it
    (a Rung with encoder="h264_nvenc" then runs on the GPU). Cached per process."""
    return bool(_core.encoder_usable("h264_nvenc"))


class Transcoder:
    """One-pass ABR transcode of `input` into CMAF renditions under `output_dir`.

    One demux and decode of the master; every rung scaled from the decoded frame and
    encoded on its own thread (libx264, or h264_nvenc where nvenc_available()); audio
    encoded once (AAC, 48 kHz stereo) into `output_dir/audio`. Each rendition gets
    `output_dir/<rung.id>/init.mp4` and `N.m4s`. Keyframes sit exactly on every
    `gop_seconds` boundary on every rung (closed GOPs, no scene cuts);
    `segment_seconds` must be a multiple of `gop_seconds`. Masters are normalised:
    deinterlaced, rotated upright, VFR made constant (`fps`, default the source's),
    odd sizes / non-square pixels scaled to even sizes with square pixels, 10-bit and
    4:2:2 to 8-bit 4:2:0. `encoder_threads` is per rung (0 = the encoder's default).

    Span ("chunk") encoding, so a long master is encoded in pieces on many machines
    and stitched by merging segment indexes: with `start_seconds` / `end_seconds`
    (multiples of `segment_seconds`; end 0 or past the master's end = to the end) the
    output is exactly the part of the one-piece encode (same rungs, segment and GOP
    lengths, preset, fps) in [start, end): time zero stays the master's first video
    picture, segments keep their one-piece numbers (the first is
    start / segment_seconds + 1) and times, keyframes sit where the one-piece run
    puts them, and every chunk's init.mp4 is the same. `video=False` encodes only the
    audio (`rungs` may be empty); over the whole master it gives the one-piece audio
    rendition, the one the engine stitches beside video-only chunks. Audio of a
    partial span is cut at AAC packets (1024 samples), so its ends are not
    sample-exact. run()'s progress is the fraction of the span done, and
    `duration_seconds` the span's encoded length.

    Call run() from a worker thread; cancel() from any thread stops it within a second.
    Raises ValueError for a bad configuration (a span off the segment grid, start
    at or past its end or past the master's end, neither video nor audio),
    InvalidDataError (a ValueError) for a corrupt master with the decoder's reason,
    NotFoundError for a missing file or encoder, CancelledError after cancel().
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
        encoder_threads: int = 0,
        start_seconds: float = 0.0,
        end_seconds: float = 0.0,
        video: bool = True,
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
        cfg.encoder_threads = encoder_threads
        cfg.span_start = start_seconds
        cfg.span_end = end_seconds
        cfg.video = video
        self._impl = _core.Transcoder(cfg)

    def run(self, progress: Callable[[float], None] | None = None) -> PipelineResult:
        """Blocking; the GIL is released. Raises NativeError subclasses."""
        return self._impl.run(progress)

    def cancel(self) -> None:
        self._impl.cancel()


def package_copy(
    input: str | Path, output_dir: str | Path, segment_seconds: float = 4.0
) -> PipelineResult:
    """Package an H.264/HEVC + AAC (or Opus) master into CMAF without re-encoding:
    output_dir/v<height>/ and output_dir/audio/, each init.mp4 + N.m4s. Segments end
    at the source's own keyframes at or after each segment_seconds multiple; audio
    is cut at the video's cut times. MP4/MOV samples are copied file to file.

    Raises InvalidDataError (a ValueError) for codecs that need a transcode and for
    damaged input, NotFoundError for a missing file, NativeIOError on write errors.
    The GIL is released throughout."""
    return _core.package_copy(str(input), str(output_dir), segment_seconds)


class Segmenter:
    """The CMAF segmenter of the core (cmaf/segmenter.h) for one track, usable from
    Python: writes out_dir/init.mp4 and out_dir/N.m4s.

    Video packets must be length-prefixed (see annexb_to_length_prefixed), AAC raw.
    Times are in `timescale` units. segment_seconds <= 0 cuts only at force_cut().
    Raises InvalidDataError for unsupported codecs, bad extradata or decode times
    that go backwards, NativeIOError when a file cannot be written.
    """

    def __init__(
        self,
        track_kind: TrackKind,
        codec: str,
        timescale: int,
        extradata: bytes,
        width: int,
        height: int,
        sample_rate: int,
        channels: int,
        out_dir: str | Path,
        segment_seconds: float,
        *,
        sar: tuple[int, int] = (1, 1),
        frame_rate: tuple[int, int] = (0, 1),
        bitrate: int = 0,
        language: str = "und",
    ) -> None:
        self._impl = _core.Segmenter(
            track_kind, codec, timescale, bytes(extradata), width, height, sample_rate,
            channels, str(out_dir), segment_seconds, sar_num=sar[0], sar_den=sar[1],
            frame_rate_num=frame_rate[0], frame_rate_den=frame_rate[1], bitrate=bitrate,
            language=language,
        )

    def write(self, data: bytes, pts: int, dts: int, duration: int, keyframe: bool) -> None:
        """One access unit; `data` is copied (never pass PyAV packet objects)."""
        self._impl.write(bytes(data), pts, dts, duration, keyframe)

    def force_cut(self) -> None:
        """End the current segment before the next packet."""
        self._impl.force_cut()

    def finish(self) -> list[SegmentRecord]:
        """Flush the last segment; returns every segment written."""
        return list(self._impl.finish())

    @property
    def segments(self) -> list[SegmentRecord]:
        return list(self._impl.segments)

    @property
    def track(self) -> TrackInfo:
        return self._impl.track


def avc_decoder_config(extradata: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (avcC) from Annex B SPS/PPS or an avcC."""
    return bytes(_core.avc_decoder_config(bytes(extradata)))


def hevc_decoder_config(extradata: bytes) -> bytes:
    """HEVCDecoderConfigurationRecord (hvcC) from Annex B VPS/SPS/PPS or an hvcC."""
    return bytes(_core.hevc_decoder_config(bytes(extradata)))


def annexb_to_length_prefixed(data: bytes) -> bytes:
    """Start codes -> 4-byte NAL lengths; input not starting with a start code is
    returned unchanged."""
    return bytes(_core.annexb_to_length_prefixed(bytes(data)))
