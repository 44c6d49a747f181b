"""Per-title ladders (``--ladder auto``): each rung's bitrate chosen from what the
master itself needs, measured with VMAF.

The analysis pass encodes short sampled spans of the master (one decode per span,
every candidate at once: each rung size of the fixed ladder at a few CRF points,
with the job's own preset, so the curves are those of the real encode) and
measures each candidate's VMAF against the master scaled to its size
(engine.vmaf), as the renditions' VMAF is measured. Per size, VMAF and CRF are
taken as piecewise linear in log-bitrate between the points; that curve gives

- the quality the fixed ladder's rung of that size would reach (its bitrate on the
  curve), and from it the rung's target: that quality, but no higher than needed
  (a rung the fixed ladder over-serves aims at ``TOP_TARGET``, or ``BELOW_FIXED``
  below the fixed rung, whichever is higher: never more than about a point below
  the fixed ladder);
- the bitrate that reaches the target, spaced at least ``MIN_STEP`` below the rung
  above for switching, and the CRF that gives it.

A rung that needs nearly the fixed bitrate anyway keeps the fixed rung; the others
are encoded at their CRF, capped at the fixed ladder's bitrate for that size
(maxrate): never above it, never upscaled (the fixed ladder's sizes). Bitrates of
a span are extrapolated to the job's GOP (the span's keyframe counted once per
GOP), so a short span does not overstate what keyframes cost. The analysis of
every rung (target, the candidates, the prediction) is kept as JSON with its
rendition (``Rendition.analysis``).
"""

from __future__ import annotations

import itertools
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import native
from engine.ladder import SourceDims, plan_ladder, source_dims
from engine.vmaf import QualityError, Span, compare_clips, first_picture_time, vmaf_binary
from metadata.models import Rendition, Segment

__all__ = ["ANALYSIS_CRFS", "Analysis", "analyse", "analysis_spans", "choose_rungs"]

# x264 CRF points of the candidates: wide enough that most fixed-ladder bitrates
# fall between them.
ANALYSIS_CRFS = (12, 20, 28)
SPAN_SECONDS = 1.0          # each sampled span
SPAN_EVERY = 30.0           # one span per this much of the master
MAX_SPANS = 6
SUBSAMPLE = 5               # libvmaf scores one picture in five of a span
TOP_TARGET = 94.0           # VMAF a rung need not exceed (when the fixed rung does)
BELOW_FIXED = 0.5           # ... but then at most this far below the fixed rung
MIN_STEP = 1.3              # bitrate ratio between adjacent rungs, at least
KEEP_FIXED = 0.85           # a rung needing this share of the fixed bitrate keeps it
MIN_KBPS = 30


@dataclass(frozen=True)
class Candidate:
    """One analysis encode: size (short side), CRF, bitrate over the job's GOP, VMAF."""

    label: int
    crf: int
    kbps: float
    vmaf: float


@dataclass
class Analysis:
    """The rungs chosen for a master and why: per rung its analysis record
    (``Rendition.analysis``), the spans analysed, the time it took, and the
    candidates pooled over the spans."""

    rungs: list[native.Rung]
    records: dict[str, dict[str, Any]]
    spans: list[Span]
    seconds: float
    candidates: list[Candidate] = field(default_factory=list)



def analysis_spans(duration: float, *, length: float = SPAN_SECONDS,
                   every: float = SPAN_EVERY, max_spans: int = MAX_SPANS) -> list[Span]:
    """Spans of ``length`` seconds starting on multiples of it (the analysis
    encodes one segment per span), spread over the master: one per ``every``
    seconds, at most ``max_spans``, each in the middle of its share."""
    slots = math.floor(duration / length + 1e-6)  # whole spans inside the master
    if slots < 1:
        return [Span(0.0, length)] if duration > 0 else []
    count = max(1, min(max_spans, slots, math.ceil(duration / every - 1e-9)))
    out: list[Span] = []
    for i in range(count):
        slot = min(slots - 1, math.floor((i + 0.5) * slots / count))
        if not out or slot * length > out[-1].start:
            out.append(Span(slot * length, length))
    return out


def _along(points: Sequence[Candidate], kbps: float, value: Callable[[Candidate], float]
           ) -> float:
    """``value`` at ``kbps``, piecewise linear in log-bitrate between the points,
    held at the end points outside them (no extrapolation past what was seen)."""
    ordered = sorted(points, key=lambda c: c.kbps)
    if kbps <= ordered[0].kbps:
        return value(ordered[0])
    for lo, hi in itertools.pairwise(ordered):
        if kbps <= hi.kbps:
            if hi.kbps <= lo.kbps:
                return value(hi)
            t = math.log(kbps / lo.kbps) / math.log(hi.kbps / lo.kbps)
            return value(lo) + t * (value(hi) - value(lo))
    return value(ordered[-1])


def _kbps_for(points: Sequence[Candidate], target: float) -> float:
    """The lowest bitrate whose VMAF on the curve reaches ``target`` (the lowest
    point's when it does; the highest point's when none does)."""
    ordered = sorted(points, key=lambda c: c.kbps)
    if ordered[0].vmaf >= target:
        return ordered[0].kbps
    for lo, hi in itertools.pairwise(ordered):
        if hi.vmaf >= target:
            if hi.vmaf - lo.vmaf <= 1e-9 or hi.kbps <= lo.kbps:
                return hi.kbps
            t = (target - lo.vmaf) / (hi.vmaf - lo.vmaf)
            return lo.kbps * math.exp(t * math.log(hi.kbps / lo.kbps))
    return ordered[-1].kbps


def choose_rungs(fixed: Sequence[native.Rung], candidates: Sequence[Candidate]
                 ) -> tuple[list[native.Rung], dict[str, dict[str, Any]]]:
    """The per-title rungs (the fixed ladder's sizes; per size a capped CRF from the
    measured curve, or the fixed rung) and each one's record. Pure: the tests and
    the bench call it too."""
    rungs: list[native.Rung] = []
    records: dict[str, dict[str, Any]] = {}
    above = math.inf
    for rung in fixed:
        label = min(rung.width, rung.height) if rung.width else rung.height
        points = [c for c in candidates if c.label == label]
        fixed_kbps = rung.bitrate / 1000
        if len(points) < 2:  # nothing measured for this size: keep the fixed rung
            rungs.append(rung)
            above = fixed_kbps
            continue
        expected = _along(points, fixed_kbps, lambda c: c.vmaf)
        target = expected if expected <= TOP_TARGET else max(TOP_TARGET,
                                                              expected - BELOW_FIXED)
        needed = _kbps_for(points, target)
        kbps = max(MIN_KBPS, min(needed, above / MIN_STEP))
        record: dict[str, Any] = {
            "mode": "auto", "target_vmaf": round(target, 2),
            "fixed_kbps": round(fixed_kbps), "fixed_vmaf_expected": round(expected, 2),
            "candidates": [{"crf": c.crf, "kbps": round(c.kbps), "vmaf": round(c.vmaf, 2)}
                           for c in sorted(points, key=lambda c: c.crf)],
        }
        if kbps >= KEEP_FIXED * fixed_kbps:
            # The title needs what the fixed rung gives: keep it as it is.
            rungs.append(rung)
            record.update(choice="fixed", kbps=round(fixed_kbps),
                          predicted_vmaf=round(expected, 2))
            above = fixed_kbps
        else:
            crf = math.floor(_along(points, kbps, lambda c: c.crf))
            rungs.append(native.Rung(**{**rung.__dict__, "bitrate": int(kbps * 1000),
                                        "crf": crf, "maxrate": rung.bitrate,
                                        "bufsize": 2 * rung.bitrate}))
            record.update(choice="crf", crf=crf, kbps=round(kbps),
                          predicted_vmaf=round(_along(points, kbps, lambda c: c.vmaf), 2))
            above = kbps
        records[rung.id] = record
    return rungs, records


def _span_candidates(master: Path, work: Path, fixed: Sequence[native.Rung], span: Span,
                     zero: float, preset: str, gop_seconds: float,
                     exe: str) -> list[Candidate]:
    """Encode one span at every (size, CRF) in one native run (one decode), then
    measure them all in one FFmpeg run (one decode of the master's span)."""
    cands = [native.Rung(id=f"a{r.height}x{r.width}c{crf}", height=r.height, width=r.width,
                         bitrate=0, crf=crf)
             for r in fixed for crf in ANALYSIS_CRFS]
    out = work / f"span{span.start:g}"
    try:
        result = native.Transcoder(
            master, out, cands, segment_seconds=span.duration, gop_seconds=span.duration,
            preset=preset, audio=False, subtitles=False,
            start_seconds=span.start, end_seconds=span.start + span.duration).run()
        clips: dict[str, tuple[Rendition, list[Segment], Path]] = {}
        for r in result.renditions:
            rend, segs = _models(r)
            if segs:
                clips[r.id] = (rend, segs, _joined(out / r.id, segs))
        if not clips:
            raise QualityError(f"ladder analysis: no pictures in [{span.start:g}, "
                               f"{span.start + span.duration:g}) s of the master")
        first = next(iter(clips.values()))[0]
        fps = Fraction(first.frame_rate) if first.frame_rate else Fraction(25)
        ids = list(clips)
        frames = max(1, round(span.duration * fps))
        scores = compare_clips(master, zero + span.start,
                               [(clips[i][2], clips[i][0].width, clips[i][0].height)
                                for i in ids],
                               frames=frames, fps=fps, subsample=SUBSAMPLE, ffmpeg=exe)
        found: list[Candidate] = []
        for rid, score in zip(ids, scores, strict=True):
            rend, segs, _ = clips[rid]
            seconds = sum(s.duration for s in segs) / rend.timescale
            # The span holds one keyframe; the real encode has one per GOP.
            key = sum(s.iframe_size for s in segs) * 8
            rest = sum(s.size for s in segs) * 8 - key
            kbps = (key / max(gop_seconds, seconds) + rest / max(seconds, 1e-6)) / 1000
            found.append(Candidate(min(rend.width, rend.height), int(rid.rsplit("c", 1)[1]),
                                   kbps, score))
        return found
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _joined(directory: Path, segments: Sequence[Segment]) -> Path:
    """init.mp4 and the segments as one fragmented MP4 beside them."""
    joined = directory / "joined.mp4"
    with joined.open("wb") as out:
        out.write((directory / "init.mp4").read_bytes())
        for s in segments:
            out.write((directory / f"{s.number}.m4s").read_bytes())
    return joined


def _models(r: native.RenditionResult) -> tuple[Rendition, list[Segment]]:
    t = r.track
    fps = (f"{t.frame_rate_num}/{t.frame_rate_den}" if t.frame_rate_num > 0 else "")
    rend = Rendition(asset_id="", id=r.id, kind="video", codec=t.codec, codec_string="",
                     timescale=t.timescale, bitrate=0, width=t.width, height=t.height,
                     frame_rate=fps)
    segs = [Segment("", r.id, s.number, s.start, s.duration, s.size, s.iframe_size)
            for s in r.segments]
    return rend, segs


def analyse(master: Path, info: native.MediaInfo | SourceDims, duration: float, work: Path,
            *, gop_seconds: float = 2.0, preset: str = "veryfast",
            ffmpeg: str | None = None,
            progress: Callable[[float], None] | None = None) -> Analysis:
    """The per-title ladder of ``master``: sampled spans encoded and measured, rungs
    chosen (``choose_rungs``). Raises QualityError (one line) when it cannot
    measure, ValueError for a master without video."""
    started = time.monotonic()
    src = source_dims(info)
    fixed = plan_ladder(src)
    exe = vmaf_binary(ffmpeg)
    zero = first_picture_time(master, ffmpeg=exe)
    spans = analysis_spans(duration)
    per_span: list[list[Candidate]] = []
    work.mkdir(parents=True, exist_ok=True)
    try:
        for i, span in enumerate(spans):
            per_span.append(_span_candidates(master, work, fixed, span, zero, preset,
                                             gop_seconds, exe))
            if progress is not None:
                progress((i + 1) / len(spans))
    except native.NativeError as exc:
        raise QualityError(f"ladder analysis: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Pool the spans: per (size, CRF) the bitrate and VMAF averaged over spans.
    pooled: list[Candidate] = []
    keys = {(c.label, c.crf) for found in per_span for c in found}
    for label, crf in sorted(keys, reverse=True):
        same = [c for found in per_span for c in found if (c.label, c.crf) == (label, crf)]
        pooled.append(Candidate(label, crf, sum(c.kbps for c in same) / len(same),
                                sum(c.vmaf for c in same) / len(same)))
    rungs, records = choose_rungs(fixed, pooled)
    seconds = time.monotonic() - started
    for record in records.values():
        record["analysis_seconds"] = round(seconds, 2)
        record["spans"] = [[s.start, s.duration] for s in spans]
    return Analysis(rungs, records, spans, seconds, pooled)
