"""HLS playlists (RFC 8216, version 7) from the segment index.

URIs are relative to the playlist that holds them: the master refers to
"{rendition}/media.m3u8" and "{rendition}/iframes.m3u8", a media playlist to
"init.mp4" and "{n}.m4s". A non-empty `query` ("token=abc") is appended to every
URI so the origin can carry playback tokens to child URLs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from metadata.models import Rendition, Segment
from packager.bitrates import (
    average_bitrate,
    iframe_average_bitrate,
    iframe_peak_bitrate,
    peak_bitrate,
)

__all__ = ["build_iframes", "build_master", "build_media"]

# EXT-X-MAP outside I-frame playlists needs version 6 (RFC 8216 §7); 7 is what
# current packagers emit for fMP4 and every player we target reads it.
VERSION = 7
AUDIO_GROUP = "audio"


def _uri(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _quoted(value: str) -> str:
    # RFC 8216 §4.2: quoted-string cannot hold '"', CR or LF.
    if any(c in value for c in '"\r\n'):
        raise ValueError(f"value not allowed in a quoted-string: {value!r}")
    return f'"{value}"'


def _seconds(ticks: int, timescale: int) -> str:
    """Decimal seconds, exact to the microsecond, trailing zeros dropped (RFC 8216
    §4.3.2.1 allows decimal-floating-point EXTINF from version 3)."""
    micro = round(Fraction(ticks * 1_000_000, timescale))
    text = f"{micro // 1_000_000}.{micro % 1_000_000:06d}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _target_duration(rendition: Rendition, segments: Sequence[Segment]) -> int:
    # §4.3.3.1: every EXTINF rounded to the nearest integer must be <= the target;
    # the ceiling of the longest satisfies that for any rounding.
    longest = max((s.duration for s in segments), default=0)
    return max(1, math.ceil(Fraction(longest, rendition.timescale)))


def _frame_rate(value: str) -> str | None:
    if not value:
        return None
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        return None
    return f"{float(rate):.3f}" if rate > 0 else None


def _check_ordered(rendition: Rendition, segments: Sequence[Segment]) -> None:
    if rendition.timescale <= 0:
        raise ValueError(f"rendition {rendition.id} has no timescale")
    numbers = [s.number for s in segments]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"segments of {rendition.id} are not numbered 1..{len(numbers)}")


def build_media(rendition: Rendition, segments: Sequence[Segment], query: str = "") -> str:
    """VOD media playlist of one rendition (RFC 8216 §4.3.3, §4.3.2.5 EXT-X-MAP)."""
    _check_ordered(rendition, segments)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{_target_duration(rendition, segments)}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f"#EXT-X-MAP:URI={_quoted(_uri('init.mp4', query))}",
    ]
    for s in segments:
        lines.append(f"#EXTINF:{_seconds(s.duration, rendition.timescale)},")
        lines.append(_uri(f"{s.number}.m4s", query))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def build_iframes(rendition: Rendition, segments: Sequence[Segment], query: str = "") -> str:
    """I-frame playlist (RFC 8216 §4.3.3.6): one byte range per segment, from the
    start of the file through its first sync sample (styp, sidx, moof, the start of
    mdat and the I-frame), lasting until the next segment's I-frame."""
    _check_ordered(rendition, segments)
    if rendition.kind != "video":
        raise ValueError(f"{rendition.id} is not a video rendition")
    if any(s.iframe_size <= 0 for s in segments):
        raise ValueError(f"segments of {rendition.id} have no I-frame byte ranges")
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{_target_duration(rendition, segments)}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-I-FRAMES-ONLY",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f"#EXT-X-MAP:URI={_quoted(_uri('init.mp4', query))}",
    ]
    for s in segments:
        lines.append(f"#EXTINF:{_seconds(s.duration, rendition.timescale)},")
        lines.append(f"#EXT-X-BYTERANGE:{s.iframe_size}@0")
        lines.append(_uri(f"{s.number}.m4s", query))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _rates(rendition: Rendition, segments: Mapping[str, Sequence[Segment]]) -> tuple[int, int]:
    """(peak, average) bit/s from the real segment sizes; the rendition's stored
    measurements, then its nominal bitrate, when there is no index."""
    segs = segments.get(rendition.id, ())
    if segs:
        return peak_bitrate(segs, rendition.timescale), average_bitrate(segs, rendition.timescale)
    peak = rendition.peak_bitrate or rendition.bitrate
    return peak, rendition.avg_bitrate or peak


def build_master(
    renditions: Sequence[Rendition], segments: Mapping[str, Sequence[Segment]], query: str = ""
) -> str:
    """Multivariant playlist (RFC 8216 §4.3.4): audio renditions as one
    EXT-X-MEDIA group, one EXT-X-STREAM-INF per video rendition (in the given
    order) whose BANDWIDTH adds the group's highest audio peak, and one
    EXT-X-I-FRAME-STREAM-INF per video rendition with I-frame byte ranges."""
    videos = [r for r in renditions if r.kind == "video"]
    audios = [r for r in renditions if r.kind == "audio"]
    if not videos and not audios:
        raise ValueError("no renditions")
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]

    audio_peak = audio_avg = 0
    audio_codecs: list[str] = []
    if videos and audios:
        for i, a in enumerate(audios):
            peak, avg = _rates(a, segments)
            audio_peak, audio_avg = max(audio_peak, peak), max(audio_avg, avg)
            if a.codec_string not in audio_codecs:
                audio_codecs.append(a.codec_string)
            attrs = [
                "TYPE=AUDIO",
                f"GROUP-ID={_quoted(AUDIO_GROUP)}",
                f"NAME={_quoted(a.id)}",
            ]
            if a.language and a.language != "und":
                attrs.append(f"LANGUAGE={_quoted(a.language)}")
            attrs += [
                f"DEFAULT={'YES' if i == 0 else 'NO'}",
                "AUTOSELECT=YES",
            ]
            if a.channels:
                attrs.append(f"CHANNELS={_quoted(str(a.channels))}")
            attrs.append(f"URI={_quoted(_uri(f'{a.id}/media.m3u8', query))}")
            lines.append("#EXT-X-MEDIA:" + ",".join(attrs))

    for v in videos:
        peak, avg = _rates(v, segments)
        attrs = [
            f"BANDWIDTH={peak + audio_peak}",
            f"AVERAGE-BANDWIDTH={avg + audio_avg}",
            f"CODECS={_quoted(','.join([v.codec_string, *audio_codecs]))}",
        ]
        if v.width and v.height:
            attrs.append(f"RESOLUTION={v.width}x{v.height}")
        rate = _frame_rate(v.frame_rate)
        if rate:
            attrs.append(f"FRAME-RATE={rate}")
        if audio_codecs:
            attrs.append(f"AUDIO={_quoted(AUDIO_GROUP)}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(_uri(f"{v.id}/media.m3u8", query))

    if not videos:
        # Audio-only asset: each audio rendition is a variant of its own.
        for a in audios:
            peak, avg = _rates(a, segments)
            lines.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={avg},"
                f"CODECS={_quoted(a.codec_string)}"
            )
            lines.append(_uri(f"{a.id}/media.m3u8", query))

    for v in videos:
        segs = segments.get(v.id, ())
        if not segs or any(s.iframe_size <= 0 for s in segs):
            continue
        attrs = [
            f"BANDWIDTH={iframe_peak_bitrate(segs, v.timescale)}",
            f"AVERAGE-BANDWIDTH={iframe_average_bitrate(segs, v.timescale)}",
            f"CODECS={_quoted(v.codec_string)}",
        ]
        if v.width and v.height:
            attrs.append(f"RESOLUTION={v.width}x{v.height}")
        attrs.append(f"URI={_quoted(_uri(f'{v.id}/iframes.m3u8', query))}")
        lines.append("#EXT-X-I-FRAME-STREAM-INF:" + ",".join(attrs))
    return "\n".join(lines) + "\n"
