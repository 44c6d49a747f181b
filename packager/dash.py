"""DASH MPD (ISO/IEC 23009-1) for the same CMAF segments HLS serves.

Static presentation, ISO BMFF live profile (§8.4: SegmentTemplate addressing,
each segment starting with a SAP): one video AdaptationSet, one audio
AdaptationSet per language (§5.3.3: an AdaptationSet holds interchangeable
encodings of one content; a dub is other content) with @lang and a Role (main
for the first, alternate for the others, §5.8.5.5), each Representation with its
own SegmentTemplate/SegmentTimeline (§5.3.9.6) because timescales and cut times
may differ between renditions. Audio priming is skipped by the init segment's
edit list alone, with no @presentationTimeOffset: the browser applies the edit
list (Chromium's MP4 parser subtracts its media_time from every sample's time),
and dash.js and Shaka set the SourceBuffer's timestampOffset to Period@start -
presentationTimeOffset, so a PTO of the same priming would pull the audio one
AAC frame ahead of the picture a second time. Subtitles are
sidecar WebVTT files (mimeType text/vtt, one BaseURL each, DASH-IF IOP §6.4.5),
an AdaptationSet per text rendition with @lang and a Role of subtitle, caption
(SDH) or forced-subtitle. A storyboard is an image AdaptationSet of DASH-IF
thumbnail tiles (packager/storyboard.py).
Representation ids are rendition ids, so $RepresentationID$/init.mp4 is the
same file the HLS playlists name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction

from metadata.models import Asset, Rendition, Segment
from packager import storyboard
from packager.bitrates import peak_bitrate
from packager.hls import SDH_CHARACTERISTICS
from packager.languages import bcp47

__all__ = ["build_mpd"]

ET.register_namespace("cenc", "urn:mpeg:cenc:2013")
ET.register_namespace("dashif", "https://dashif.org/CPS")

NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
CHANNEL_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
ROLE_SCHEME = "urn:mpeg:dash:role:2011"
CENC_NS = "urn:mpeg:cenc:2013"
DASHIF_NS = "https://dashif.org/CPS"
MP4_PROTECTION = "urn:mpeg:dash:mp4protection:2011"
CLEARKEY = "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"  # W3C ClearKey (DASH-IF IOP)


def _protection(parent: ET.Element, group: Sequence[Rendition], clearkey_url: str | None) -> None:
    """ContentProtection of an encrypted AdaptationSet (23009-1 §5.8.4.1, 23001-7
    §11.2: the scheme and the default KID as a UUID), and ClearKey with its license
    URL (DASH-IF IOP) so browsers can play it without a DRM system."""
    schemes = {(r.encryption, r.key_id.lower()) for r in group}
    if schemes == {("", "")}:
        return
    if len(schemes) != 1:
        raise ValueError("renditions of one AdaptationSet must share their encryption and KID")
    ((scheme, kid),) = schemes
    if scheme not in ("cenc", "cbcs") or len(kid) != 32 or any(
            c not in "0123456789abcdef" for c in kid):
        raise ValueError(f"bad encryption {scheme!r} / key id {kid!r}")
    uuid = f"{kid[:8]}-{kid[8:12]}-{kid[12:16]}-{kid[16:20]}-{kid[20:]}"
    ET.SubElement(parent, "ContentProtection", {
        "schemeIdUri": MP4_PROTECTION, "value": scheme, f"{{{CENC_NS}}}default_KID": uuid})
    if clearkey_url:
        ck = ET.SubElement(parent, "ContentProtection", {"schemeIdUri": CLEARKEY,
                                                          "value": "ClearKey1.0"})
        ET.SubElement(ck, f"{{{DASHIF_NS}}}Laurl", {"Lic_type": "EME-1.0"}).text = clearkey_url


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
    # Presentation time: the priming the edit list skips is not shown.
    return Fraction(segs[-1].start + segs[-1].duration - r.presentation_offset, r.timescale)


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


def _label(aset: ET.Element, r: Rendition) -> None:
    """The track's name as a Label (ISO/IEC 23009-1; after ContentProtection and
    before Role in the schema): the name dash.js and Shaka give the track, which is
    otherwise the AdaptationSet's id."""
    if r.name:
        ET.SubElement(aset, "Label").text = r.name


def _by_codec(videos: Sequence[Rendition]) -> list[list[Rendition]]:
    """Video renditions grouped by codec family (h264, hevc, av1), in order of first
    appearance: one AdaptationSet each, since players switch bitrates within a set
    seamlessly but not codecs, and pick the set whose @codecs they decode."""
    groups: dict[str, list[Rendition]] = {}
    for v in videos:
        groups.setdefault(v.codec, []).append(v)
    return list(groups.values())


def _by_language(audios: Sequence[Rendition]) -> list[tuple[str | None, list[Rendition]]]:
    """Audio renditions grouped by BCP 47 language, in order of first appearance;
    the group of the default rendition (marked, else the first) comes first."""
    groups: dict[str | None, list[Rendition]] = {}
    for a in audios:
        groups.setdefault(bcp47(a.language), []).append(a)
    ordered = list(groups.items())
    default = next((a for a in audios if a.default), None)
    if default is not None:
        key = bcp47(default.language)
        ordered.sort(key=lambda item: item[0] != key)
    return ordered


def build_mpd(asset: Asset, renditions: Sequence[Rendition],
              segments: Mapping[str, Sequence[Segment]], query: str = "",
              clearkey_url: str | None = None) -> str:
    """Static MPD of an asset. mediaPresentationDuration is the end of the
    longest rendition (asset.duration when there is no index yet). Encrypted
    renditions get ContentProtection (scheme + default KID, and ClearKey with
    `clearkey_url` as its license URL when given)."""
    videos = [r for r in renditions if r.kind == "video"]
    audios = [r for r in renditions if r.kind == "audio"]
    texts = [r for r in renditions if r.kind == "text"]
    images = [r for r in renditions if r.kind == "image"]
    if not videos and not audios:
        raise ValueError("no renditions")
    media = videos + audios + texts  # a sprite sheet spans many segments: not media time
    end = max((_end(r, segments) for r in media), default=Fraction(0))
    if end == 0:
        end = Fraction(asset.duration).limit_denominator(1000)
    longest = max(
        (Fraction(s.duration, r.timescale) for r in media for s in segments.get(r.id, ())),
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
    next_id = 1
    for family in _by_codec(videos):
        aset = ET.SubElement(period, "AdaptationSet", {
            "id": str(next_id),
            "contentType": "video",
            "mimeType": "video/mp4",
            "segmentAlignment": "true",
            "startWithSAP": "1",
            "maxWidth": str(max(v.width for v in family)),
            "maxHeight": str(max(v.height for v in family)),
        })
        next_id += 1
        _protection(aset, family, clearkey_url)
        for v in family:
            _representation(aset, v, segments.get(v.id, ()), _bandwidth(v, segments), query)
    next_id = max(next_id, 2)
    for i, (language, group) in enumerate(_by_language(audios)):
        aset = ET.SubElement(period, "AdaptationSet", {
            "id": str(next_id),
            "contentType": "audio",
            "mimeType": "audio/mp4",
            "segmentAlignment": "true",
            "startWithSAP": "1",
        })
        next_id += 1
        if language:
            aset.set("lang", language)
        _protection(aset, group, clearkey_url)
        _label(aset, group[0])
        ET.SubElement(aset, "Role", {"schemeIdUri": ROLE_SCHEME,
                                     "value": "main" if i == 0 else "alternate"})
        for a in group:
            _representation(aset, a, segments.get(a.id, ()), _bandwidth(a, segments), query)
    for t in texts:
        aset = ET.SubElement(period, "AdaptationSet", {
            "id": str(next_id),
            "contentType": "text",
            "mimeType": "text/vtt",
        })
        next_id += 1
        language = bcp47(t.language)
        if language:
            aset.set("lang", language)
        role = ("forced-subtitle" if t.forced
                else "caption" if t.characteristics == SDH_CHARACTERISTICS else "subtitle")
        _label(aset, t)
        ET.SubElement(aset, "Role", {"schemeIdUri": ROLE_SCHEME, "value": role})
        rep = ET.SubElement(aset, "Representation", {
            "id": t.id, "bandwidth": str(max(1, _bandwidth(t, segments)))})
        # A BaseURL is a plain URL, not a template: no '$' escaping.
        base = f"{t.id}/subtitles.vtt"
        ET.SubElement(rep, "BaseURL").text = f"{base}?{query}" if query else base
    for image in images:
        storyboard.adaptation_set(period, next_id, image, _bandwidth(image, segments), query)
        next_id += 1
    ET.indent(mpd, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(mpd, encoding="unicode") + "\n"
