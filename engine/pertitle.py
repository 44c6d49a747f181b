"""Per-title ladders (``--ladder auto``): each rung's size and bitrate chosen from
what the master itself needs, measured with VMAF.

The analysis pass encodes short sampled spans of the master (one decode per span,
every candidate at once: each rung size of the fixed ladder at a few CRF points,
with the job's own preset, so the curves are those of the real encode) and
measures each candidate's VMAF against the master at the display size (the
largest rung's; smaller sizes upscaled, as a screen shows them), as rate-quality
curves across sizes are drawn. Per size, VMAF and CRF are taken as piecewise
linear in log-bitrate between the points; the upper envelope of the sizes' curves
is the convex hull of quality against bitrate. From it (``choose_rungs``):

- the top rung reaches a target: the quality the fixed top rung would reach (its
  bitrate on the curve), lowered to ``TOP_TARGET`` where it is above that, but by
  at most ``BELOW_FIXED``: never more than about a point below the fixed ladder;
- the bottom rung keeps the fixed ladder's bitrate ratio to the top, never above
  the fixed bottom rung, and the rungs between are spaced evenly in log-bitrate
  (at least ``MIN_STEP`` apart, for switching);
- each rung takes the size the hull gives at its bitrate (a starved large size
  loses to a smaller one upscaled; an easy title keeps the large size lower down),
  never larger than the rung above's, never upscaled (the fixed ladder's sizes),
  never above the fixed ladder's bitrate for that size.

A rung that lands on a fixed rung's size at nearly its bitrate keeps that fixed
rung; the others are encoded at their CRF with a VBV cap. Bitrates of a span are
extrapolated to the job's GOP (the span's keyframe counted once per GOP), so a
short span does not overstate what keyframes cost. The analysis of every rung (its
size and bitrate, what each size would give there, the candidates) is kept as
JSON with its rendition (``Rendition.analysis``).
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
from engine.vmaf import (
    QualityError,
    Span,
    TooFewFrames,
    compare_clips,
    first_picture_time,
    vmaf_binary,
)
from metadata.models import Rendition, Segment

__all__ = ["ANALYSIS_CRFS", "Analysis", "analyse", "analysis_spans", "choose_rungs"]

# x264 CRF points of the candidates, 6 apart (about a halving of the bitrate
# each): each size's curve spans the bitrates a rung of that size may take, from
# an easy title's top rung (which the fixed ladder serves near CRF 13) down.
ANALYSIS_CRFS = (13, 19, 25, 31)
# A candidate is capped (VBV) at this many times its size's fixed bitrate: past
# that no rung goes, and a noisy master's low CRFs would cost the analysis most
# (twice is enough for a point above the cap to interpolate at it; 4 cost the
# noise source a fifth more analysis time for the same ladder).
ANALYSIS_CAP = 2
SPAN_SECONDS = 1.0          # each sampled span, at most
# ... and at least: a short title samples this share of itself (a 20 s title half
# a second), so its analysis does not cost a fixed second of every candidate.
# Half a second is 12-15 pictures, more than veryfast's 10-picture lookahead, so
# the candidates' rate control still sees as far ahead as the real encode's. On
# the bench's 20 s sources it cut the analysis by a third for the same ladders.
MIN_SPAN_SECONDS = 0.5
SPAN_SHARE = 0.025
# One span per this much of the master, as the quality measurement samples
# (engine/vmaf.py): one a minute kept a 120 s title's analysis at 11.5% of its
# encode; one per 30 s made it 22%.
SPAN_EVERY = 60.0
MAX_SPANS = 6
SUBSAMPLE = 5               # libvmaf scores one picture in five of a span
TOP_TARGET = 94.0           # VMAF a rung need not exceed (when the fixed rung does)
BELOW_FIXED = 0.5           # ... but then at most this far below the fixed rung
MIN_STEP = 1.3              # bitrate ratio between adjacent rungs, at least
KEEP_FIXED = 0.85           # a rung needing this share of the fixed bitrate keeps it
MIN_KBPS = 30
# libvmaf scores no picture under 18 px a side (16 px gives no score; measured with
# the imageio-ffmpeg binary): a smaller display size cannot be analysed.
MIN_MEASURED_SIDE = 18
# A lower CRF rung's maxrate against its bitrate (bufsize twice that): where the
# span under-predicted what the title needs, the rung still fits the bandwidth
# it was planned for (1.5 let bbb's lower rungs run 11-27% over their bitrate,
# 1.0 holds them within 4-8%, at the same BD-rate).
PEAK = 1.0
CRF_REACH = 6               # how far past the measured CRFs a rung's CRF may go
LOW_REACH = 0.8             # a size serves down to this share of its lowest point


@dataclass(frozen=True)
class Candidate:
    """One analysis encode: size (short side), CRF, bitrate over the job's GOP, and
    VMAF at the display size (upscaled to the largest rung's)."""

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



def span_length(duration: float) -> float:
    """The length of each sampled span: ``SPAN_SHARE`` of the title, between
    ``MIN_SPAN_SECONDS`` and ``SPAN_SECONDS``."""
    return min(SPAN_SECONDS, max(MIN_SPAN_SECONDS, SPAN_SHARE * duration))


def analysis_spans(duration: float, *, length: float | None = None,
                   every: float = SPAN_EVERY, max_spans: int = MAX_SPANS) -> list[Span]:
    """Spans of ``length`` seconds (default ``span_length``) starting on multiples
    of it (the analysis encodes one segment per span), spread over the master: one
    per ``every`` seconds, at most ``max_spans``, each in the middle of its share."""
    if length is None:
        length = span_length(duration)
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


def _crf_at(points: Sequence[Candidate], kbps: float) -> int:
    """The CRF that gives ``kbps`` on this size's curve: interpolated between the
    points, and past the end points along the nearest segment (x264's bitrate
    halves for about every 6 CRF) by at most ``CRF_REACH``."""
    ordered = sorted(points, key=lambda c: c.kbps)
    lo, hi = ordered[0], ordered[-1]
    if lo.kbps < kbps < hi.kbps:
        return round(_along(ordered, kbps, lambda c: c.crf))
    a, b = (ordered[0], ordered[1]) if kbps <= lo.kbps else (ordered[-2], ordered[-1])
    end = lo if kbps <= lo.kbps else hi
    if b.kbps <= a.kbps or a.crf == b.crf:
        return end.crf
    slope = (b.crf - a.crf) / math.log(b.kbps / a.kbps)  # CRF per log-bitrate (< 0)
    crf = end.crf + slope * math.log(kbps / end.kbps)
    crf = min(max(crf, end.crf - CRF_REACH), end.crf + CRF_REACH)
    return max(0, min(51, round(crf)))


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


def _label(rung: native.Rung) -> int:
    return min(rung.width, rung.height) if rung.width else rung.height


@dataclass(frozen=True)
class _Size:
    """One size of the fixed ladder: its rung (the cap: never above its bitrate)
    and its measured curve."""

    rung: native.Rung
    points: list[Candidate]

    @property
    def label(self) -> int:
        return _label(self.rung)

    @property
    def cap(self) -> float:
        return self.rung.bitrate / 1000

    def reach(self, kbps: float) -> float | None:
        """The bitrate this size would be encoded at for a rung of ``kbps`` (capped
        at the fixed ladder's), or None when that is below what was measured."""
        at = min(kbps, self.cap)
        return at if at >= LOW_REACH * min(c.kbps for c in self.points) else None


def _on_hull(sizes: Sequence[_Size], kbps: float
             ) -> tuple[_Size | None, float, dict[str, float]]:
    """The size whose curve gives the highest VMAF for a rung of ``kbps`` (each at
    ``reach``), the bitrate it takes, and what every size would give (the why).
    No size when none was measured that low."""
    options: dict[str, float] = {}
    best: tuple[float, int, _Size, float] | None = None
    for size in sizes:
        at = size.reach(kbps)
        if at is None:
            continue
        vmaf = _along(size.points, at, lambda c: c.vmaf)
        options[str(size.label)] = round(vmaf, 2)
        if best is None or (vmaf, size.label) > best[:2]:
            best = (vmaf, size.label, size, at)
    if best is None:
        return None, kbps, options
    return best[2], best[3], options


def choose_rungs(fixed: Sequence[native.Rung], candidates: Sequence[Candidate]
                 ) -> tuple[list[native.Rung], dict[str, dict[str, Any]]]:
    """The per-title rungs and each one's record. Pure: the tests and the bench call
    it too.

    Candidates carry VMAF at the display size (each size upscaled to the top rung's,
    as a viewer's screen shows it), so the sizes' curves share one scale and their
    upper envelope is the convex hull of quality against bitrate. The top rung is
    the lowest bitrate on the hull that reaches the target (the fixed top rung's
    expected VMAF, lowered to ``TOP_TARGET`` but at most ``BELOW_FIXED`` when that
    is higher); the bottom rung keeps the fixed ladder's ratio to the top, never
    above the fixed bottom rung; the rungs between are spaced evenly in
    log-bitrate. Each rung takes the size the hull gives at its bitrate, no larger
    than the rung above's, and never above the fixed ladder's bitrate for that
    size. A rung that lands on a fixed rung's size at nearly its bitrate is that
    fixed rung; the others are CRF encodes with a VBV cap: the fixed bitrate of the
    size for the top, ``PEAK`` times their bitrate below it (never above the
    size's fixed bitrate)."""
    sizes = [_Size(r, [c for c in candidates if c.label == _label(r)]) for r in fixed]
    sizes = [s for s in sizes if len(s.points) >= 2]
    if not sizes or _label(fixed[0]) not in {s.label for s in sizes}:
        return list(fixed), {}  # nothing measured at the top: the fixed ladder
    top_size = sizes[0]
    everything = [{"size": c.label, "crf": c.crf, "kbps": round(c.kbps),
                   "vmaf": round(c.vmaf, 2)}
                  for c in sorted(candidates, key=lambda c: (-c.label, c.crf))]
    fixed_top = fixed[0].bitrate / 1000
    expected = _along(top_size.points, fixed_top, lambda c: c.vmaf)
    if fixed_top > max(c.kbps for c in top_size.points):
        # Past the measured curve the expectation is only a floor (the fixed rung
        # does better still): aim at it, not below it.
        target = expected
    else:
        target = expected if expected <= TOP_TARGET else max(TOP_TARGET,
                                                              expected - BELOW_FIXED)
    # The top: the cheapest size that reaches the target within its cap.
    reaching = [(_kbps_for(s.points, target), s) for s in sizes
                if max(c.vmaf for c in s.points) >= target]
    reaching = [(k, s) for k, s in reaching if k <= s.cap]
    top_kbps = min((k for k, _ in reaching), default=fixed_top)
    rungs: list[native.Rung] = []
    records: dict[str, dict[str, Any]] = {}
    slots = [top_kbps]
    for i in range(len(fixed)):
        if i == 1:
            # The rest hang from the top as chosen (a kept fixed top at its full
            # bitrate): the bottom at the fixed ladder's ratio to the top, never above
            # the fixed bottom; the rungs between evenly spaced in log-bitrate.
            top = rungs[0].bitrate / 1000
            bottom = max(MIN_KBPS, min(fixed[-1].bitrate / 1000,
                                       top * fixed[-1].bitrate / fixed[0].bitrate))
            slots += [top * (bottom / top) ** (j / (len(fixed) - 1))
                      for j in range(1, len(fixed))]
        largest = rungs[-1].height if rungs else top_size.rung.height
        above = rungs[-1].bitrate / 1000 if rungs else math.inf
        slot = min(slots[i], above / MIN_STEP)  # room to switch between neighbours
        allowed = [s for s in sizes if s.rung.height <= largest]
        found, kbps, options = _on_hull(allowed, slot)
        if i == 0 and not reaching:
            found, kbps = top_size, fixed_top  # nothing reaches the target: the fixed top
        if found is None:
            # Nothing was measured this low (a hard title): the fixed rung of this
            # place where it fits below the rung above, else the smallest size.
            here = next((s for s in sizes if s.rung == fixed[i]), None)
            found = here if here is not None and here in allowed and \
                here.cap <= above / MIN_STEP + 1e-6 else min(allowed, key=lambda s: s.label)
            kbps = max(MIN_KBPS, min(slot, found.cap))
        size = found
        record: dict[str, Any] = {
            "mode": "auto", "size": size.label, "slot_kbps": round(slot),
            "fixed_kbps": round(size.cap), "hull": options, "candidates": everything}
        if i == 0:
            record.update(target_vmaf=round(target, 2),
                          fixed_vmaf_expected=round(expected, 2))
        base = size.rung
        if kbps >= KEEP_FIXED * size.cap:
            # The title needs what the fixed rung of this size gives: that rung.
            rung = base
            record.update(choice="fixed", kbps=round(size.cap),
                          predicted_vmaf=round(_along(size.points, size.cap,
                                                      lambda c: c.vmaf), 2))
        else:
            crf, bitrate = _crf_at(size.points, kbps), int(kbps * 1000)
            # The top may peak up to the fixed bitrate of its size (a slide
            # change's keyframe); a lower rung must fit the bandwidth it is for.
            peak = base.bitrate if i == 0 else min(base.bitrate, round(PEAK * bitrate))
            rung = native.Rung(**{**base.__dict__, "bitrate": bitrate, "crf": crf,
                                  "maxrate": peak, "bufsize": 2 * peak})
            record.update(choice="crf", crf=crf, kbps=round(kbps),
                          predicted_vmaf=round(_along(size.points, kbps,
                                                      lambda c: c.vmaf), 2))
        rid = base.id if base.id not in records else f"{base.id}_{round(rung.bitrate / 1000)}k"
        rungs.append(native.Rung(**{**rung.__dict__, "id": rid}))
        records[rid] = record
    return rungs, records


def _span_candidates(master: Path, work: Path, fixed: Sequence[native.Rung], span: Span,
                     zero: float, preset: str, gop_seconds: float,
                     exe: str) -> list[Candidate]:
    """Encode one span at every (size, CRF) in one native run (one decode), then
    measure them all in one FFmpeg run (one decode of the master's span).

    One x264 thread per candidate: a dozen encoders already fill the cores, and
    without frame threads each keeps fewer pictures in flight (a quarter fewer
    page faults; the run took 5-15% less time on the bench's sources)."""
    cands = [native.Rung(id=f"a{r.height}x{r.width}c{crf}", height=r.height, width=r.width,
                         bitrate=0, crf=crf, maxrate=ANALYSIS_CAP * r.bitrate,
                         bufsize=2 * ANALYSIS_CAP * r.bitrate)
             for r in fixed for crf in ANALYSIS_CRFS]
    out = work / f"span{span.start:g}"
    try:
        result = native.Transcoder(
            master, out, cands, segment_seconds=span.duration, gop_seconds=span.duration,
            preset=preset, audio=False, subtitles=False, encoder_threads=1,
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
        # Every size is scored as the screen shows it: upscaled to the largest.
        shown = max(((c[0].width, c[0].height) for c in clips.values()),
                    key=lambda wh: wh[0] * wh[1])
        scores = compare_clips(master, zero + span.start,
                               [(clips[i][2], clips[i][0].width, clips[i][0].height)
                                for i in ids],
                               frames=frames, fps=fps, subsample=SUBSAMPLE, ffmpeg=exe,
                               compare_at=shown)
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


class Unmeasurable(QualityError):
    """The master is too short or too small for the analysis to measure it; the job
    plans the fixed ladder instead (a warning, not a failure: per-title is a saving,
    and the default)."""


def analyse(master: Path, info: native.MediaInfo | SourceDims, duration: float, work: Path,
            *, gop_seconds: float = 2.0, preset: str = "veryfast",
            ffmpeg: str | None = None,
            progress: Callable[[float], None] | None = None) -> Analysis:
    """The per-title ladder of ``master``: sampled spans encoded and measured, rungs
    chosen (``choose_rungs``). Raises QualityError (one line) when it cannot
    measure (Unmeasurable when the master itself is too short or too small for it),
    ValueError for a master without video."""
    started = time.monotonic()
    src = source_dims(info)
    fixed = plan_ladder(src)
    # Candidates are scored at the top rung's size, never above the source's.
    if min(src.width, src.height) < MIN_MEASURED_SIDE:
        raise Unmeasurable(f"{src.width}x{src.height} is below the {MIN_MEASURED_SIDE} "
                           "pixels a side VMAF measures")
    if duration < MIN_SPAN_SECONDS:
        raise Unmeasurable(f"{duration:.2f} s is shorter than one {MIN_SPAN_SECONDS:g} s "
                           "span")
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
    except TooFewFrames as exc:  # a span holds too few pictures to score (low fps)
        raise Unmeasurable(f"too few pictures to measure ({exc})") from exc
    except ValueError as exc:
        # The core refuses a span with no picture in it (a frame rate under one per
        # span); bad media is a NativeError, above.
        raise Unmeasurable(str(exc).replace(str(master), "the master")) from exc
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
