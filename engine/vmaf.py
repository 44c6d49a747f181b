"""VMAF of CMAF renditions against their master, measured with an FFmpeg built with
libvmaf (the imageio-ffmpeg wheel's binary: Debian's FFmpeg has no libvmaf).

The transcode stays on the native core; this module only measures. A rendition is
compared over sampled spans (a few seconds every minute, at most ``MAX_SPANS``): for
each span the init segment and the media segments that cover it are concatenated
into one fragmented MP4, which FFmpeg reads as it reads any file. The reference is
the master decoded from the same instant and scaled to the rendition's size.

Time alignment: a rendition's time zero is the master's first video picture, and
every media segment opens on a keyframe at exactly its ``start`` (tfdt); so the
first picture of the concatenated file is the master's picture at
``first_picture + start``. Both sides are re-timed to start at 0 before libvmaf
pairs their frames.

Every failure is a ``QualityError`` with one line naming the rendition and the
cause (missing binary, unreadable rendition or master, timeout); FFmpeg always runs
under a timeout.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from metadata.models import Rendition, Segment

__all__ = ["MAX_SPANS", "QualityError", "Span", "VmafScore", "compare_clips",
           "first_picture_time", "measure_rendition", "sample_spans", "spans_to_segments",
           "vmaf_binary", "with_vmaf"]

SPAN_EVERY = 60.0       # seconds between sampled spans
SPAN_SECONDS = 4.0      # length of a sampled span
MAX_SPANS = 6
# A span that pairs fewer than this share of the pictures it should hold is
# damaged (or the master could not be entered there), not merely short at the end.
MIN_FRAME_SHARE = 0.5


class QualityError(Exception):
    """VMAF could not be measured; the message is one line naming what and why."""


@dataclass(frozen=True)
class Span:
    """A stretch of the rendition timeline, in seconds from its time zero."""

    start: float
    duration: float


@dataclass(frozen=True)
class VmafScore:
    """Mean VMAF over the sampled frames (frame-weighted across spans), the frame
    count, and each span's own mean."""

    mean: float
    frames: int
    spans: tuple[tuple[Span, float], ...]


def vmaf_binary(path: str | None = None) -> str:
    """The FFmpeg executable to measure with: ``path`` if given, else the one in
    the imageio-ffmpeg wheel. Raises QualityError when there is none."""
    if path is None:
        try:
            import imageio_ffmpeg

            path = str(imageio_ffmpeg.get_ffmpeg_exe())
        except (ImportError, RuntimeError) as exc:
            raise QualityError(f"no FFmpeg with libvmaf to measure VMAF ({exc})") from None
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise QualityError(f"no FFmpeg with libvmaf to measure VMAF: {path} is not an "
                           "executable file")
    return path


def sample_spans(duration: float, *, every: float = SPAN_EVERY, length: float = SPAN_SECONDS,
                 max_spans: int = MAX_SPANS) -> list[Span]:
    """Spans of ``length`` seconds, one per ``every`` seconds of ``duration`` (at
    least one, at most ``max_spans``), spread evenly with each centred in its share
    of the timeline."""
    if duration <= 0:
        return []
    count = max(1, min(max_spans, math.ceil(duration / every - 1e-9)))
    length = min(length, duration)
    share = duration / count
    spans = []
    for i in range(count):
        start = min(max(0.0, (i + 0.5) * share - length / 2), duration - length)
        spans.append(Span(start, length))
    return spans


def spans_to_segments(spans: Sequence[Span], segments: Sequence[Segment],
                      timescale: int) -> list[tuple[Span, list[Segment]]]:
    """For each span, the run of whole segments that covers it, and the span moved
    to start where its first segment does (frames are taken from segment starts,
    where the rendition has a keyframe). Spans that would share a segment with the
    one before are merged into it; spans past the last segment are dropped."""
    ordered = sorted(segments, key=lambda s: s.number)
    out: list[tuple[Span, list[Segment]]] = []
    used: set[int] = set()
    for span in spans:
        picked = [s for s in ordered
                  if s.start + s.duration > span.start * timescale
                  and s.start < (span.start + span.duration) * timescale]
        picked = [s for s in picked if s.number not in used]
        if not picked:
            continue
        used.update(s.number for s in picked)
        start = picked[0].start / timescale
        covered = (picked[-1].start + picked[-1].duration) / timescale - start
        out.append((Span(start, min(covered, max(span.duration, 1e-3))), picked))
    return out


def _fps(frame_rate: str) -> Fraction | None:
    try:
        value = Fraction(frame_rate)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


_CONTEXT = re.compile(r"^(?:\[[^\]]* @ 0x[0-9a-f]+\] *)+")


def _reason(stderr: str) -> str:
    """FFmpeg's first error line (the cause; later lines are consequences), without
    its "[component @ 0x...]" prefixes."""
    for line in stderr.splitlines():
        text = _CONTEXT.sub("", line.strip()).strip()
        if text:
            return text[:300]
    return "no message from ffmpeg"


def first_picture_time(master: Path, *, ffmpeg: str | None = None,
                       timeout: float = 60.0) -> float:
    """Presentation time (seconds) of the master's first video picture: the zero of
    every rendition's timeline. Raises QualityError."""
    exe = vmaf_binary(ffmpeg)
    if not master.is_file():
        raise QualityError(f"{master}: no such file (the reference for VMAF)")
    # framecrc on stdout lists decoded pictures with their pts in the demuxer's
    # time base (header "#tb 0: NUM/DEN"); -copyts keeps the master's own times.
    cmd = [exe, "-hide_banner", "-nostdin", "-v", "error", "-copyts", "-i", str(master),
           "-map", "0:v:0", "-frames:v", "1", "-vf", "scale=8:8", "-enc_time_base", "demux",
           "-f", "framecrc", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise QualityError(f"{master}: reading its first picture took over {timeout:g} s") \
            from None
    tb: Fraction | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif tb is not None and line.startswith("0,"):
            return float(int(line.split(",")[1]) * tb)
    raise QualityError(f"{master}: no video picture to measure VMAF against "
                       f"({_reason(proc.stderr)})")


# What libvmaf is fed: 4:2:0 with square pixels, scaled (bicubic) where asked.
_PLANAR = "format=yuv420p,setsar=1"
# The master as the core normalises it before encoding (transcode/normalise.cpp):
# pictures flagged interlaced deinterlaced by bwdif, one frame per frame, others
# passed as they are. Against its combed fields an interlaced master's good
# encode scored 71 where it scores 99.9 against what it was made from.
_NORMALISED = "bwdif=mode=send_frame:parity=auto:deint=interlaced"


def _at_size(width: int, height: int) -> str:
    return f"scale={width}:{height}:flags=bicubic,{_PLANAR}"


# Boxes an ISO BMFF file (MP4, MOV) may open with.
_ISO_BMFF = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide")


def _seek_input(master: Path, at: float, half_frame: float, seek: bool) -> list[str]:
    """The input options that enter ``master`` before the picture at ``at``
    (absolute seconds; none without ``seek``: decoded from its start). ISO BMFF has
    a sample table that FFmpeg seeks by exactly (to the keyframe at or before the
    time), so a picture and a half early: only that GOP's lead-in is decoded, and
    the reference's deinterlacer (``_NORMALISED``) has the picture before the span,
    as the core's has. Others
    (MPEG-TS seeks by bytes and may land a GOP late) are entered 2 s early, so that
    a late landing still precedes the picture; trim= then cuts at the exact time."""
    try:
        with master.open("rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    lead = 3 * half_frame if head[4:8] in _ISO_BMFF else 2.0
    if not seek or at <= lead:
        return []
    return ["-seek_timestamp", "1", "-ss", f"{at - lead:.6f}"]


def _distorted(width: int, height: int, compare_at: tuple[int, int] | None, subsample: int,
               fps: Fraction | None) -> str:
    """The filters of a distorted side of ``width`` x ``height``: upscaled to
    ``compare_at`` where given. libvmaf scores one picture in ``subsample`` of it
    (its motion feature is the reference's), so only those are upscaled, each then
    repeated over the gap to keep the pairing by timestamp; the scores are those of
    upscaling every picture."""
    if not compare_at:
        return _PLANAR
    if subsample <= 1 or fps is None or (width, height) == tuple(compare_at):
        return _at_size(*compare_at)
    return (f"select='not(mod(n\\,{subsample}))',{_at_size(*compare_at)},"
            f"fps={fps.numerator}/{fps.denominator}:eof_action=pass")


class TooFewFrames(QualityError):
    """libvmaf paired fewer pictures than the span holds."""


def _libvmaf(exe: str, inputs: list[str], graph: str, log_path: Path, timeout: float,
             expected: float, subsample: int = 1) -> tuple[float, int]:
    """Run ``graph`` (ending in ``[dist][ref]``) into libvmaf; (mean, frames) from
    its JSON log. TooFewFrames when fewer than MIN_FRAME_SHARE of ``expected``
    pictures were compared."""
    graph += (f";[dist][ref]libvmaf=log_fmt=json:log_path={log_path}:"
              f"n_threads={os.cpu_count() or 1}:n_subsample={max(1, subsample)}:shortest=1")
    cmd = [exe, "-hide_banner", "-nostdin", "-nostats", "-v", "error", *inputs,
           "-filter_complex", graph, "-an", "-sn", "-dn", "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise QualityError(f"ffmpeg gave no answer within {timeout:g} s") from None
    if proc.returncode != 0:
        raise QualityError(_reason(proc.stderr))
    if not log_path.is_file():  # libvmaf writes its log only once it paired pictures
        raise TooFewFrames(f"no pictures to compare ({_reason(proc.stderr)})")
    try:
        doc = json.loads(log_path.read_text())
        mean = float(doc["pooled_metrics"]["vmaf"]["mean"])
        frames = len(doc["frames"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise QualityError(f"unreadable libvmaf log ({exc.__class__.__name__}: {exc})") \
            from None
    finally:
        log_path.unlink(missing_ok=True)
    if frames == 0 or frames < MIN_FRAME_SHARE * expected:
        raise TooFewFrames(f"only {frames} of {expected:.0f} pictures compared")
    return mean, frames


def _run_span(exe: str, distorted: Path, master: Path, ref_time: float, span: Span,
              width: int, height: int, fps: Fraction | None, log_path: Path,
              decryption_key: bytes | None, timeout: float, seek: bool,
              compare_at: tuple[int, int] | None = None, subsample: int = 1
              ) -> tuple[float, int]:
    """(mean VMAF, frames) of one span: ``distorted`` from its first picture against
    the master from ``ref_time`` (absolute seconds), ``span.duration`` long. With
    ``seek`` the master is entered near ``ref_time`` instead of decoded from its
    start; a master with sparse keyframes may then yield no pictures
    (TooFewFrames), and the caller decodes from the start instead."""
    # -copyts keeps the master's own times, so the reference is cut at the absolute
    # time of the wanted picture, half a frame early to be safe from rounding.
    half = 0.5 / float(fps) if fps else 0.01
    cfr = f",fps={fps.numerator}/{fps.denominator}" if fps else ""
    # compare_at: both sides at one display size (the rendition upscaled), as
    # rate-quality curves across sizes are drawn.
    dist = _distorted(width, height, compare_at, subsample, fps)
    if compare_at:
        width, height = compare_at
    graph = (
        f"[0:v:0]setpts=PTS-STARTPTS,trim=duration={span.duration:.6f},{dist}[dist];"
        f"[1:v:0]{_NORMALISED},trim=start={max(0.0, ref_time - half):.6f},"
        f"setpts=PTS-STARTPTS{cfr},"
        f"trim=duration={span.duration:.6f},{_at_size(width, height)}[ref]"
    )
    inputs = ["-copyts"]
    if decryption_key is not None:
        inputs += ["-decryption_key", decryption_key.hex()]
    # A damaged rendition fails the measurement instead of scoring its concealment.
    inputs += ["-err_detect", "explode", "-i", str(distorted)]
    inputs += [*_seek_input(master, ref_time, half, seek), "-i", str(master)]
    expected = (span.duration * float(fps) if fps else 1.0) / max(1, subsample)
    return _libvmaf(exe, inputs, graph, log_path, timeout, expected, subsample)


def compare_clips(master: Path, ref_start: float, clips: Sequence[tuple[Path, int, int]], *,
                  frames: int, fps: Fraction, subsample: int = 1, ffmpeg: str | None = None,
                  timeout: float = 300.0,
                  compare_at: tuple[int, int] | None = None) -> list[float]:
    """Mean VMAF of each (clip, width, height) against the master from the picture at
    ``ref_start`` (absolute seconds) scaled to that size, each clip from its first
    picture, over ``frames`` pictures (one in ``subsample`` scored), in one FFmpeg
    run that decodes the master's span once. For clips cut from one span of the
    master (the per-title analysis). ``compare_at``: every clip upscaled to this
    one display size instead, against the master scaled to it once. Raises
    QualityError."""
    exe = vmaf_binary(ffmpeg)
    if not clips:
        return []
    args = (exe, master, ref_start, clips, frames, fps, subsample, timeout)
    try:
        return _compare(*args, seek=True, compare_at=compare_at)
    except TooFewFrames:  # sparse keyframes: decode the master from its start
        return _compare(*args, seek=False, compare_at=compare_at)


def _compare(exe: str, master: Path, ref_start: float, clips: Sequence[tuple[Path, int, int]],
             frames: int, fps: Fraction, subsample: int, timeout: float, *,
             seek: bool, compare_at: tuple[int, int] | None) -> list[float]:
    half = 0.5 / float(fps)
    cut = f"setpts=PTS-STARTPTS,trim=end_frame={frames}"
    # compare_at: the reference scaled once, before the split; else per clip.
    shown = _at_size(*compare_at) + "," if compare_at else ""
    ref = "ref" if compare_at else "r"
    parts = [f"[0:v:0]{_NORMALISED},trim=start={max(0.0, ref_start - half):.6f},{cut},"
             f"{shown}"
             f"split={len(clips)}" + "".join(f"[{ref}{i}]" for i in range(len(clips)))]
    inputs = ["-copyts"]
    inputs += [*_seek_input(master, ref_start, half, seek), "-i", str(master)]
    logs = []
    threads = max(1, (os.cpu_count() or 1) // 2)
    for i, (clip, width, height) in enumerate(clips):
        # A damaged clip fails the measurement instead of scoring its concealment.
        inputs += ["-err_detect", "explode", "-i", str(clip)]
        logs.append(clip.with_suffix(".vmaf.json"))
        if not compare_at:
            parts.append(f"[r{i}]{_at_size(width, height)}[ref{i}]")
        dist = _distorted(width, height, compare_at, subsample, fps)
        parts.append(f"[{i + 1}:v:0]{cut},{dist}[dist{i}]")
        parts.append(f"[dist{i}][ref{i}]libvmaf=log_fmt=json:log_path={logs[i]}:"
                     f"n_threads={threads}:n_subsample={max(1, subsample)}:shortest=1[o{i}]")
    outputs: list[str] = []
    for i in range(len(clips)):
        outputs += ["-map", f"[o{i}]", "-f", "null", "-"]
    cmd = [exe, "-hide_banner", "-nostdin", "-nostats", "-v", "error", *inputs,
           "-filter_complex", ";".join(parts), *outputs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise QualityError(f"VMAF of {len(clips)} clips: ffmpeg gave no answer within "
                           f"{timeout:g} s") from None
    if proc.returncode != 0:
        raise QualityError(f"VMAF of {len(clips)} clips: {_reason(proc.stderr)}")
    scores = []
    try:
        for (clip, _, _), log in zip(clips, logs, strict=True):
            if not log.is_file():
                raise TooFewFrames(f"VMAF of {clip.name}: no pictures compared")
            try:
                doc = json.loads(log.read_text())
                scores.append(float(doc["pooled_metrics"]["vmaf"]["mean"]))
                scored = len(doc["frames"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise QualityError(f"VMAF of {clip.name}: unreadable libvmaf log "
                                   f"({exc.__class__.__name__})") from None
            if scored < MIN_FRAME_SHARE * frames / max(1, subsample):
                raise TooFewFrames(f"VMAF of {clip.name}: only {scored} pictures compared")
    finally:
        for log in logs:
            log.unlink(missing_ok=True)
    return scores


def measure_rendition(
    master: Path,
    rendition_dir: Path,
    rendition: Rendition,
    segments: Sequence[Segment],
    *,
    duration: float = 0.0,
    spans: Sequence[Span] | None = None,
    first_picture: float | None = None,
    decryption_key: bytes | None = None,
    ffmpeg: str | None = None,
    timeout: float | None = None,
    compare_at: tuple[int, int] | None = None,
    subsample: int = 1,
) -> VmafScore:
    """VMAF of a video rendition (``rendition_dir``/init.mp4 + N.m4s, as the
    pipeline writes it) against ``master`` scaled to its size, over ``spans``
    (default: ``sample_spans(duration)``, duration defaulting to the segments').
    ``first_picture``: the master's first video picture time when already known;
    ``decryption_key``: the content key of a cenc rendition; ``compare_at``: measure
    at that (width, height) instead, the rendition upscaled to it; ``subsample``:
    score one picture in that many. Raises QualityError (one line naming the
    rendition)."""
    name = f"VMAF of {rendition.id}"
    if rendition.kind != "video":
        raise QualityError(f"{name}: only video renditions have pictures, not "
                           f"{rendition.kind}")
    exe = vmaf_binary(ffmpeg)
    own = sorted((s for s in segments if s.rendition_id == rendition.id),
                 key=lambda s: s.number)
    if not own:
        raise QualityError(f"{name}: no segments")
    ts = rendition.timescale
    if duration <= 0:
        duration = (own[-1].start + own[-1].duration) / ts
    chosen = spans_to_segments(spans if spans is not None else sample_spans(duration), own, ts)
    if not chosen:
        raise QualityError(f"{name}: no segment inside the sampled spans")
    init = rendition_dir / "init.mp4"
    if not init.is_file():
        raise QualityError(f"{name}: {init} is missing")
    try:
        zero = first_picture if first_picture is not None else first_picture_time(
            master, ffmpeg=exe)
    except QualityError as exc:
        raise QualityError(f"{name}: {exc}") from None
    fps = _fps(rendition.frame_rate)
    pixels = max(1, rendition.width * rendition.height) / (1920 * 1080)
    results: list[tuple[Span, float]] = []
    total = weighted = 0.0
    with tempfile.TemporaryDirectory(prefix="cdlc-vmaf-") as tmp:
        for i, (span, segs) in enumerate(chosen):
            joined = Path(tmp) / f"span{i}.mp4"
            try:
                with joined.open("wb") as out:
                    out.write(init.read_bytes())
                    for s in segs:
                        out.write((rendition_dir / f"{s.number}.m4s").read_bytes())
            except OSError as exc:
                raise QualityError(f"{name}: {exc.strerror or exc}: "
                                   f"{exc.filename or rendition_dir}") from None
            # Generous: libvmaf runs at tens of 1080p frames a second on one core.
            limit = timeout if timeout is not None else 60.0 + 20.0 * span.duration * max(
                1.0, pixels)
            args = (exe, joined, master, zero + span.start, span, rendition.width,
                    rendition.height, fps, Path(tmp) / f"span{i}.json", decryption_key, limit)
            try:
                try:
                    mean, frames = _run_span(*args, seek=True, compare_at=compare_at,
                                             subsample=subsample)
                except TooFewFrames:
                    mean, frames = _run_span(*args, seek=False, compare_at=compare_at,
                                             subsample=subsample)
            except QualityError as exc:
                raise QualityError(f"{name} [{span.start:g}+{span.duration:g} s]: {exc}") \
                    from None
            results.append((span, mean))
            total += frames
            weighted += mean * frames
    return VmafScore(weighted / total, int(total), tuple(results))


def with_vmaf(master: Path, out_dir: Path, renditions: Sequence[Rendition],
              segments: Sequence[Segment], *, duration: float = 0.0,
              decryption_key: bytes | None = None, ffmpeg: str | None = None,
              progress: Callable[[float], None] | None = None) -> list[Rendition]:
    """``renditions`` with ``vmaf`` set on every video one (files under
    ``out_dir``/<rendition id>/), the master's first picture read once. Raises
    QualityError."""
    exe = vmaf_binary(ffmpeg)
    videos = [r for r in renditions if r.kind == "video"]
    if not videos:
        return list(renditions)
    zero = first_picture_time(master, ffmpeg=exe)
    scores: dict[str, float] = {}
    for i, r in enumerate(videos):
        scores[r.id] = round(measure_rendition(
            master, out_dir / r.id, r, segments, duration=duration, first_picture=zero,
            decryption_key=decryption_key, ffmpeg=exe).mean, 3)
        if progress is not None:
            progress((i + 1) / len(videos))
    return [replace(r, vmaf=scores[r.id]) if r.id in scores else r for r in renditions]
