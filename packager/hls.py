"""HLS playlists (RFC 8216, version 7) from the segment index.

URIs are relative to the playlist that holds them: the master refers to
"{rendition}/media.m3u8" and "{rendition}/iframes.m3u8", a media playlist to
"init.mp4" and "{n}.m4s" (a text rendition's to "{n}.vtt": segmented WebVTT,
RFC 8216 §3.5, no EXT-X-MAP). A non-empty `query` ("token=abc") is appended to every
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
from packager.languages import bcp47

# metadata.keys.AES_128, spelled here: the key store's imports (asyncio, urllib) are
# not the packager's.
AES_128 = "aes-128"

__all__ = ["build_iframes", "build_master", "build_media"]

# EXT-X-MAP outside I-frame playlists needs version 6 (RFC 8216 §7); 7 is what
# current packagers emit for fMP4 and every player we target reads it.
VERSION = 7
AUDIO_GROUP = "audio"
SUBTITLE_GROUP = "subs"
# HLS Authoring Specification for Apple Devices: SDH subtitles carry both.
SDH_CHARACTERISTICS = (
    "public.accessibility.transcribes-spoken-dialog,public.accessibility.describes-music-and-sound"
)


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


def _key_tag(rendition: Rendition, key_uri: str | None) -> str | None:
    """EXT-X-KEY (RFC 8216 §4.3.2.4) of an encrypted rendition: SAMPLE-AES is 'cbcs'
    for fMP4 (§5.4); 'cenc' is SAMPLE-AES-CTR, the method players name for it.
    KEYFORMAT "identity": the key is the 16 raw bytes at `key_uri` (the origin's key
    route, behind a playback token); KEYID carries the KID. 'aes-128' is METHOD=AES-128
    (whole segments, CBC + PKCS#7) with no IV attribute: each segment's IV is its media
    sequence number (§5.2), and KEYFORMAT is the default, identity."""
    if not rendition.encryption:
        return None
    if rendition.encryption not in ("cenc", "cbcs", AES_128):
        raise ValueError(f"{rendition.id}: unknown encryption {rendition.encryption!r}")
    if key_uri is None:
        raise ValueError(f"{rendition.id} is encrypted: a key URI is needed")
    kid = rendition.key_id.lower()
    if len(kid) != 32 or any(c not in "0123456789abcdef" for c in kid):
        raise ValueError(f"{rendition.id}: key_id must be 32 hex digits")
    if rendition.encryption == AES_128:
        return f"#EXT-X-KEY:METHOD=AES-128,URI={_quoted(key_uri)}"
    method = "SAMPLE-AES" if rendition.encryption == "cbcs" else "SAMPLE-AES-CTR"
    return (f"#EXT-X-KEY:METHOD={method},URI={_quoted(key_uri)},KEYFORMAT=\"identity\","
            f"KEYFORMATVERSIONS=\"1\",KEYID=0x{kid}")


def _map_and_key(rendition: Rendition, query: str, key_uri: str | None) -> list[str]:
    """EXT-X-MAP and EXT-X-KEY in the order that keeps the init segment as it is:
    a key tag applies to the media initialization section that follows it
    (§4.3.2.5), so SAMPLE-AES methods (whose init segment is clear, carrying the
    scheme) come first, and AES-128 comes after the map: its init segment is clear
    and needs no IV of its own."""
    key = _key_tag(rendition, key_uri)
    if rendition.kind == "text":
        return [key] if key else []
    map_tag = f"#EXT-X-MAP:URI={_quoted(_uri('init.mp4', query))}"
    if not key:
        return [map_tag]
    return [map_tag, key] if rendition.encryption == AES_128 else [key, map_tag]


def build_media(rendition: Rendition, segments: Sequence[Segment], query: str = "",
                key_uri: str | None = None) -> str:
    """VOD media playlist of one rendition (RFC 8216 §4.3.3, §4.3.2.5 EXT-X-MAP);
    an encrypted rendition gets its EXT-X-KEY (`key_uri` required then)."""
    _check_ordered(rendition, segments)
    text = rendition.kind == "text"
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{_target_duration(rendition, segments)}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        *_map_and_key(rendition, query, key_uri),
    ]
    extension = "vtt" if text else "m4s"
    for s in segments:
        lines.append(f"#EXTINF:{_seconds(s.duration, rendition.timescale)},")
        lines.append(_uri(f"{s.number}.{extension}", query))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def build_iframes(rendition: Rendition, segments: Sequence[Segment], query: str = "",
                  key_uri: str | None = None) -> str:
    """I-frame playlist (RFC 8216 §4.3.3.6): one byte range per segment, from the
    start of the file through its first sync sample (styp, sidx, moof, the start of
    mdat and the I-frame), lasting until the next segment's I-frame. An encrypted
    rendition's carries the media playlist's EXT-X-KEY (same media sequence
    numbers, so the same AES-128 IVs; its ranges end where an AES-128 range
    decrypts alone, engine/segment_crypto.py)."""
    _check_ordered(rendition, segments)
    if rendition.kind != "video":
        raise ValueError(f"{rendition.id} is not a video rendition")
    if any(s.iframe_size <= 0 for s in segments):
        raise ValueError(f"segments of {rendition.id} have no I-frame byte ranges")
    if rendition.encryption == AES_128 and any(s.iframe_size % 16 for s in segments):
        # Each range is a CBC message of its own (§4.3.2.4): whole AES blocks.
        raise ValueError(f"AES-128 I-frame ranges of {rendition.id} must be whole "
                         "16-byte blocks")
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{_target_duration(rendition, segments)}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-I-FRAMES-ONLY",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        *_map_and_key(rendition, query, key_uri),
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


def _names(renditions: Sequence[Rendition]) -> list[str]:
    """NAME of each rendition of one group: its name (else its id), made unique
    within the group (RFC 8216 §4.3.4.1.1: no two members share a NAME)."""
    seen: dict[str, int] = {}
    out = []
    for r in renditions:
        base = r.name or r.id
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
    return out


def _default_index(renditions: Sequence[Rendition]) -> int:
    """The group's DEFAULT=YES member: the first marked default, else the first
    that is not forced (a forced-only track is never the default choice)."""
    for i, r in enumerate(renditions):
        if r.default:
            return i
    for i, r in enumerate(renditions):
        if not r.forced:
            return i
    return 0


def _media_tag(kind: str, group: str, r: Rendition, name: str, default: bool, query: str) -> str:
    """One EXT-X-MEDIA tag (RFC 8216 §4.3.4.1)."""
    attrs = [f"TYPE={kind}", f"GROUP-ID={_quoted(group)}", f"NAME={_quoted(name)}"]
    language = bcp47(r.language)
    if language:
        attrs.append(f"LANGUAGE={_quoted(language)}")
    # AUTOSELECT MUST be YES when DEFAULT is YES (§4.3.4.1); every track here is
    # one a player may pick by the user's language.
    attrs += [f"DEFAULT={'YES' if default else 'NO'}", "AUTOSELECT=YES"]
    if kind == "SUBTITLES":
        # FORCED only for SUBTITLES (§4.3.4.1).
        attrs.append(f"FORCED={'YES' if r.forced else 'NO'}")
    if r.characteristics:
        attrs.append(f"CHARACTERISTICS={_quoted(r.characteristics)}")
    if kind == "AUDIO" and r.channels:
        attrs.append(f"CHANNELS={_quoted(str(r.channels))}")
    attrs.append(f"URI={_quoted(_uri(f'{r.id}/media.m3u8', query))}")
    return "#EXT-X-MEDIA:" + ",".join(attrs)


def build_master(
    renditions: Sequence[Rendition], segments: Mapping[str, Sequence[Segment]], query: str = ""
) -> str:
    """Multivariant playlist (RFC 8216 §4.3.4): audio renditions as one
    EXT-X-MEDIA TYPE=AUDIO group (one member per language track, NAME from the
    rendition's name, LANGUAGE as BCP 47, DEFAULT=YES on one), text renditions as a
    TYPE=SUBTITLES group (FORCED, CHARACTERISTICS for SDH), one EXT-X-STREAM-INF
    per video rendition (in the given order) naming both groups, whose BANDWIDTH
    adds the group's highest audio peak, and one EXT-X-I-FRAME-STREAM-INF per video
    rendition with I-frame byte ranges."""
    videos = [r for r in renditions if r.kind == "video"]
    audios = [r for r in renditions if r.kind == "audio"]
    texts = [r for r in renditions if r.kind == "text"]
    if not videos and not audios:
        raise ValueError("no renditions")
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]

    audio_peak = audio_avg = 0
    audio_codecs: list[str] = []
    if videos and audios:
        default = _default_index(audios)
        for i, (a, name) in enumerate(zip(audios, _names(audios), strict=True)):
            peak, avg = _rates(a, segments)
            audio_peak, audio_avg = max(audio_peak, peak), max(audio_avg, avg)
            if a.codec_string not in audio_codecs:
                audio_codecs.append(a.codec_string)
            lines.append(_media_tag("AUDIO", AUDIO_GROUP, a, name, i == default, query))
    if texts:
        # No subtitle track is on by default: players pick one by the user's
        # language or choice (forced ones by AUTOSELECT and the audio's language).
        for t, name in zip(texts, _names(texts), strict=True):
            lines.append(_media_tag("SUBTITLES", SUBTITLE_GROUP, t, name, t.default, query))

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
        if texts:
            attrs.append(f"SUBTITLES={_quoted(SUBTITLE_GROUP)}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(_uri(f"{v.id}/media.m3u8", query))

    if not videos:
        # Audio-only asset: each audio rendition is a variant of its own.
        for a in audios:
            peak, avg = _rates(a, segments)
            attrs = [f"BANDWIDTH={peak}", f"AVERAGE-BANDWIDTH={avg}",
                     f"CODECS={_quoted(a.codec_string)}"]
            if texts:
                attrs.append(f"SUBTITLES={_quoted(SUBTITLE_GROUP)}")
            lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
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
