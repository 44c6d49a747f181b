"""Bitrates measured from the segments as written: what HLS BANDWIDTH /
AVERAGE-BANDWIDTH (RFC 8216 §4.3.4.2) and DASH @bandwidth must reflect."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from metadata.models import Segment

__all__ = ["average_bitrate", "iframe_average_bitrate", "iframe_peak_bitrate", "peak_bitrate"]


def _rate(size: int, duration: int, timescale: int) -> Fraction:
    if timescale <= 0:
        raise ValueError("timescale must be positive")
    if duration <= 0:
        return Fraction(0)
    return Fraction(size * 8 * timescale, duration)


def peak_bitrate(segments: Sequence[Segment], timescale: int) -> int:
    """Highest segment bitrate (size * 8 / duration), bit/s, rounded up."""
    return math.ceil(max((_rate(s.size, s.duration, timescale) for s in segments), default=0))


def average_bitrate(segments: Sequence[Segment], timescale: int) -> int:
    """All bytes over all time, bit/s, rounded up."""
    return math.ceil(_rate(sum(s.size for s in segments), sum(s.duration for s in segments),
                           timescale))


def iframe_peak_bitrate(segments: Sequence[Segment], timescale: int) -> int:
    """Peak of the I-frame playlist: each I-frame's byte range over the time it
    stands for (RFC 8216 §4.3.4.3)."""
    return math.ceil(max((_rate(s.iframe_size, s.duration, timescale) for s in segments),
                         default=0))


def iframe_average_bitrate(segments: Sequence[Segment], timescale: int) -> int:
    return math.ceil(_rate(sum(s.iframe_size for s in segments),
                           sum(s.duration for s in segments), timescale))
