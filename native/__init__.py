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
    Cue,
    InvalidDataError,
    MediaInfo,
    NativeError,
    NativeIOError,
    NotFoundError,
    Picture,
    PipelineResult,
    RenditionResult,
    SegmentRecord,
    SkippedStream,
    StreamInfo,
    TrackInfo,
    TrackKind,
)

__all__ = [
    "AudioSidecar",
    "CancelledError",
    "Cue",
    "Encryption",
    "InvalidDataError",
    "MediaInfo",
    "NativeError",
    "NativeIOError",
    "NotFoundError",
    "Picture",
    "PipelineResult",
    "RenditionResult",
    "Rung",
    "SegmentRecord",
    "Segmenter",
    "SkippedStream",
    "StreamInfo",
    "SubtitleSidecar",
    "TrackInfo",
    "TrackKind",
    "Transcoder",
    "annexb_to_length_prefixed",
    "avc_decoder_config",
    "encoders_available",
    "hevc_decoder_config",
    "nvenc_available",
    "package_copy",
    "parse_subtitles",
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
    """One video rendition of the ladder. width 0 derives it from height and the DAR.
    `encoder`: "libx264" or "h264_nvenc" (H.264, avc1), "libx265" (HEVC, hvc1) or
    "libsvtav1" (AV1, av01); the job's x264 preset name is mapped for the others.
    Any other name is a ValueError."""

    id: str
    height: int
    bitrate: int
    width: int = 0
    maxrate: int = 0
    bufsize: int = 0
    crf: int = -1
    encoder: str = "libx264"


@dataclass(frozen=True)
class AudioSidecar:
    """An audio file beside the master (`--audio fr=dub.wav`): its own first sample
    is the master's time zero. `language`: any ISO 639 tag ("fr", "fre", "fra");
    `name`: the manifest NAME (empty: the language's English name)."""

    path: str | Path
    language: str
    name: str = ""


@dataclass(frozen=True)
class SubtitleSidecar:
    """A WebVTT or SRT file beside the master (`--subtitles en=subs.vtt`); `forced`:
    forced narrative only; `sdh`: subtitles for the deaf and hard of hearing."""

    path: str | Path
    language: str
    name: str = ""
    forced: bool = False
    sdh: bool = False


@dataclass(frozen=True)
class Encryption:
    """CMAF common encryption (ISO/IEC 23001-7) of every audio and video rendition:
    `scheme` "cenc" (AES-128 CTR) or "cbcs" (AES-128 CBC, 1:9 pattern on video);
    `kid` and `key` 16 bytes each; `iv` the cbcs constant IV (16 bytes, empty:
    derived from the KID). Video is protected per NAL unit (subsamples). The key
    itself never goes into the output; the init segments carry the KID (tenc) and a
    pssh box of the W3C common system."""

    scheme: str
    kid: bytes
    key: bytes
    iv: bytes = b""


def _encryption(value: Encryption | None) -> _core.EncryptionConfig:
    cfg = _core.EncryptionConfig()
    if value is not None:
        cfg.scheme, cfg.kid, cfg.key, cfg.iv = value.scheme, value.kid, value.key, value.iv
    return cfg


def _audio_sidecars(items: Sequence[AudioSidecar]) -> list[_core.SidecarAudio]:
    out = []
    for item in items:
        s = _core.SidecarAudio()
        s.path, s.language, s.name = str(item.path), item.language, item.name
        out.append(s)
    return out


def _text_sidecars(items: Sequence[SubtitleSidecar]) -> list[_core.SidecarText]:
    out = []
    for item in items:
        s = _core.SidecarText()
        s.path, s.language, s.name = str(item.path), item.language, item.name
        s.forced, s.sdh = item.forced, item.sdh
        out.append(s)
    return out


def parse_subtitles(data: bytes, format: str, name: str = "<data>") -> list[Cue]:
    """Cues of a WebVTT (`format="webvtt"`) or SRT (`"srt"`) file, sorted by start.
    Raises InvalidDataError naming `name` and the line of the first problem."""
    return list(_core.parse_subtitles(bytes(data), format, name))


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

    Every audio stream of the master becomes a rendition (the best one `audio`, the
    others `audio_<lang>`), and so does each of `audio_sidecars`; text subtitle
    streams and `subtitle_sidecars` become WebVTT renditions `sub_<lang>` (only on a
    whole-master run, and only with `subtitles=True`). What is not packaged is in
    the result's `skipped`, with the reason.

    With `thumbnail_interval` > 0, the result's `thumbnails` holds one RGB picture
    (long side `thumbnail_long`) per interval of the output timeline, taken from
    the decode the ladder already does, and `poster` the best-scored of them (most
    luma spread, not near-black or near-white) at long side `poster_long`.

    With `remote_timeout` > 0, `input` may be an http(s) URL (a presigned object
    URL): read with ranged GETs, so a span reads its own bytes, not the master's;
    every read waits at most that many seconds, and a read that fails (the store
    gone, hung, or refusing) is a NativeIOError naming the URL without its query,
    never taken for the end of the master.

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
        audio_sidecars: Sequence[AudioSidecar] = (),
        subtitle_sidecars: Sequence[SubtitleSidecar] = (),
        subtitles: bool = True,
        encryption: Encryption | None = None,
        thumbnail_interval: float = 0.0,
        thumbnail_long: int = 160,
        poster_long: int = 1280,
        remote_timeout: float = 0.0,
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
        cfg.remote_timeout = remote_timeout
        cfg.video = video
        cfg.sidecar_audio = _audio_sidecars(audio_sidecars)
        cfg.sidecar_text = _text_sidecars(subtitle_sidecars)
        cfg.subtitles = subtitles
        cfg.encryption = _encryption(encryption)
        cfg.thumbnail_interval = thumbnail_interval
        cfg.thumbnail_long, cfg.poster_long = thumbnail_long, poster_long
        self._impl = _core.Transcoder(cfg)

    def run(self, progress: Callable[[float], None] | None = None) -> PipelineResult:
        """Blocking; the GIL is released. Raises NativeError subclasses."""
        return self._impl.run(progress)

    def cancel(self) -> None:
        self._impl.cancel()


def package_copy(
    input: str | Path,
    output_dir: str | Path,
    segment_seconds: float = 4.0,
    *,
    audio_sidecars: Sequence[AudioSidecar] = (),
    subtitle_sidecars: Sequence[SubtitleSidecar] = (),
    subtitles: bool = True,
    encryption: Encryption | None = None,
) -> PipelineResult:
    """Package an H.264/HEVC + AAC (or Opus) master into CMAF without re-encoding:
    output_dir/v<height>/ and output_dir/audio/, each init.mp4 + N.m4s. Segments end
    at the source's own keyframes at or after each segment_seconds multiple; audio
    is cut at the video's cut times. MP4/MOV samples are copied file to file.
    Every copyable audio stream (AAC, Opus) becomes a rendition (`audio`, then
    `audio_<lang>`), AAC priming before the first picture is signalled with an edit
    list (TrackInfo.presentation_offset); `audio_sidecars` (AAC/Opus files) are
    aligned to time zero; text streams and `subtitle_sidecars` become WebVTT
    renditions `sub_<lang>`. Streams not packaged are in the result's `skipped`.

    Raises InvalidDataError (a ValueError) for codecs that need a transcode and for
    damaged input, NotFoundError for a missing file, NativeIOError on write errors.
    The GIL is released throughout."""
    return _core.package_copy(
        str(input), str(output_dir), segment_seconds, _audio_sidecars(audio_sidecars),
        _text_sidecars(subtitle_sidecars), subtitles, _encryption(encryption))


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
