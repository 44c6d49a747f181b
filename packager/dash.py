"""DASH MPD (ISO/IEC 23009-1) for the same CMAF segments HLS serves.

Static presentation, ISO BMFF live profile (§8.4: SegmentTemplate addressing,
each segment starting with a SAP): one video AdaptationSet and one audio
AdaptationSet, each Representation with its own SegmentTemplate/SegmentTimeline
(§5.3.9.6) because timescales and cut times may differ between renditions.
Representation ids are rendition ids, so $RepresentationID$/init.mp4 is the
same file the HLS playlists name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction

from metadata.models import Asset, Rendition, Segment
from packager.bitrates import peak_bitrate

__all__ = ["build_mpd"]

NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
CHANNEL_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"


def _duration(seconds: Fraction) -> str:
    """xs:duration with millisecond precision, rounded up so the presentation
    never ends before its last sample."""
    ms = -((-seconds * 1000) // 1)
    return f"PT{ms // 1000}.{ms % 1000:03d}S"


def _timeline(segments: Sequence[Segment]) -> Iterator[dict[str, str]]:
    """S elements (§5.3.9.6.3): runs of equal durations folded into @r; @t only at
    the start and after a gap or overlap."""
    expected: int | None = None
    run: dict[str, int] | None = None
    for s in segments:
        contiguous = expected == s.start
        if run is not None and contiguous and run["d"] == s.duration:
            run["r"] += 1
        else:
            if run is not None:
                yield _s_attrs(run)
            run = {"d": s.duration, "r": 0}
            if not contiguous:
                run["t"] = s.start
        expected = s.start + s.duration
    if run is not None:
        yield _s_attrs(run)


def _s_attrs(run: dict[str, int]) -> dict[str, str]:
    attrs = {}
    if "t" in run:
        attrs["t"] = str(run["t"])
    attrs["d"] = str(run["d"])
    if run["r"]:
        attrs["r"] = str(run["r"])
    return attrs


def _template_path(path: str, query: str) -> str:
    # '$' is the template escape (§5.3.9.4.4): a literal one is written '$$'.
    return f"{path}?{query.replace('$', '$$')}" if query else path


def _bandwidth(r: Rendition, segments: Mapping[str, Sequence[Segment]]) -> int:
    segs = segments.get(r.id, ())
    if segs:
        return peak_bitrate(segs, r.timescale)
    return r.peak_bitrate or r.bitrate


def _end(r: Rendition, segments: Mapping[str, Sequence[Segment]]) -> Fraction:
    if r.timescale <= 0:
        raise ValueError(f"rendition {r.id} has no timescale")
    segs = segments.get(r.id, ())
    if not segs:
        return Fraction(0)
    return Fraction(segs[-1].start + segs[-1].duration, r.timescale)


def _representation(parent: ET.Element, r: Rendition, segments: Sequence[Segment],
                    bandwidth: int, query: str) -> None:
    rep = ET.SubElement(parent, "Representation", {"id": r.id, "bandwidth": str(bandwidth),
                                                    "codecs": r.codec_string})
    if r.kind == "video":
        rep.set("width", str(r.width))
        rep.set("height", str(r.height))
        rep.set("sar", r.sar or "1:1")
        if r.frame_rate:
            rep.set("frameRate", r.frame_rate)
    else:
        rep.set("audioSamplingRate", str(r.sample_rate))
        ET.SubElement(rep, "AudioChannelConfiguration",
                      {"schemeIdUri": CHANNEL_SCHEME, "value": str(r.channels)})
    template = ET.SubElement(rep, "SegmentTemplate", {
        "timescale": str(r.timescale),
        "initialization": _template_path("$RepresentationID$/init.mp4", query),
        "media": _template_path("$RepresentationID$/$Number$.m4s", query),
        "startNumber": "1",
    })
    timeline = ET.SubElement(template, "SegmentTimeline")
    for attrs in _timeline(segments):
        ET.SubElement(timeline, "S", attrs)


def build_mpd(asset: Asset, renditions: Sequence[Rendition],
              segments: Mapping[str, Sequence[Segment]], query: str = "") -> str:
    """Static MPD of an asset. mediaPresentationDuration is the end of the
    longest rendition (asset.duration when there is no index yet)."""
    videos = [r for r in renditions if r.kind == "video"]
    audios = [r for r in renditions if r.kind == "audio"]
    if not videos and not audios:
        raise ValueError("no renditions")
    end = max((_end(r, segments) for r in renditions), default=Fraction(0))
    if end == 0:
        end = Fraction(asset.duration).limit_denominator(1000)
    longest = max(
        (Fraction(s.duration, r.timescale) for r in renditions for s in segments.get(r.id, ())),
        default=Fraction(2),
    )
    mpd = ET.Element("MPD", {
        "xmlns": NS,
        "id": asset.id,
        "profiles": PROFILE,
        "type": "static",
        "mediaPresentationDuration": _duration(end),
        "minBufferTime": _duration(longest),
    })
    period = ET.SubElement(mpd, "Period", {"id": "1", "start": "PT0S"})
    if videos:
        aset = ET.SubElement(period, "AdaptationSet", {
            "id": "1",
            "contentType": "video",
            "mimeType": "video/mp4",
            "segmentAlignment": "true",
            "startWithSAP": "1",
            "maxWidth": str(max(v.width for v in videos)),
            "maxHeight": str(max(v.height for v in videos)),
        })
        for v in videos:
            _representation(aset, v, segments.get(v.id, ()), _bandwidth(v, segments), query)
    if audios:
        aset = ET.SubElement(period, "AdaptationSet", {
            "id": "2",
            "contentType": "audio",
            "mimeType": "audio/mp4",
            "segmentAlignment": "true",
            "startWithSAP": "1",
        })
        lang = audios[0].language
        if lang and lang != "und":
            aset.set("lang", lang)
        ET.SubElement(aset, "Role", {"schemeIdUri": "urn:mpeg:dash:role:2011", "value": "main"})
        for a in audios:
            _representation(aset, a, segments.get(a.id, ()), _bandwidth(a, segments), query)
    ET.indent(mpd, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(mpd, encoding="unicode") + "\n"
