"""Manifests of a catalogue title (two audio languages, subtitles with forced and
SDH tracks) against golden files, parsed by the m3u8 and mpegdash libraries and
checked against RFC 8216 §4.3.4.1-2 and ISO/IEC 23009-1 directly."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from metadata.models import Rendition
from packager import build_master, build_media, build_mpd
from packager.languages import bcp47
from tests.packager import fixtures
from tests.packager.test_manifests import QUERY, golden

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


@pytest.mark.parametrize("query", ["", QUERY])
def test_master_playlist_two_languages_and_subtitles(query: str) -> None:
    renditions, segments = fixtures.catalogue_renditions(), fixtures.catalogue_segments()
    text = build_master(renditions, segments, query)
    golden("catalogue_master_token.m3u8" if query else "catalogue_master.m3u8", text)
    pl = m3u8.loads(text)
    suffix = f"?{query}" if query else ""
    audio = [m for m in pl.media if m.type == "AUDIO"]
    subs = [m for m in pl.media if m.type == "SUBTITLES"]
    assert [(m.group_id, m.name, m.language, m.default, m.autoselect, m.channels, m.uri)
            for m in audio] == [
        ("audio", "English", "en", "YES", "YES", "2", f"audio/media.m3u8{suffix}"),
        ("audio", "Français", "fr", "NO", "YES", "6", f"audio_fra/media.m3u8{suffix}"),
    ]
    assert [(m.group_id, m.name, m.language, m.default, m.forced, m.characteristics, m.uri)
            for m in subs] == [
        ("subs", "English", "en", "NO", "NO", None, f"sub_eng/media.m3u8{suffix}"),
        ("subs", "English (SDH)", "en", "NO", "NO", fixtures.SDH, f"sub_eng_2/media.m3u8{suffix}"),
        ("subs", "Français (forcés)", "fr", "NO", "YES", None,
         f"sub_fra_forced/media.m3u8{suffix}"),
    ]
    # §4.3.4.1.1: NAMEs unique in a group; at most one DEFAULT=YES.
    for group in (audio, subs):
        assert len({m.name for m in group}) == len(group)
        assert sum(m.default == "YES" for m in group) <= 1
    # §4.3.4.2: every variant names both groups; CODECS lists the audio codec once
    # and no text codec (segmented WebVTT is not an fMP4 track).
    for p in pl.playlists:
        assert (p.stream_info.audio, p.stream_info.subtitles) == ("audio", "subs")
        assert p.stream_info.codecs.endswith(",mp4a.40.2")
        assert "wvtt" not in p.stream_info.codecs


def test_default_and_names_follow_the_renditions() -> None:
    renditions, segments = fixtures.catalogue_renditions(), fixtures.catalogue_segments()
    from dataclasses import replace
    changed = [replace(r, default=True) if r.id == "audio_fra" else
               replace(r, name="") if r.id == "audio" else
               replace(r, name="English") if r.id == "sub_eng_2" else r for r in renditions]
    pl = m3u8.loads(build_master(changed, segments))
    audio = {m.uri: m for m in pl.media if m.type == "AUDIO"}
    assert (audio["audio/media.m3u8"].name, audio["audio/media.m3u8"].default) == ("audio", "NO")
    assert audio["audio_fra/media.m3u8"].default == "YES"
    assert [m.name for m in pl.media if m.type == "SUBTITLES"] == [
        "English", "English (2)", "Français (forcés)"]


@pytest.mark.parametrize("query", ["", QUERY])
def test_subtitle_media_playlist(query: str) -> None:
    (sub,) = [r for r in fixtures.catalogue_renditions() if r.id == "sub_eng"]
    segs = fixtures.catalogue_segments()["sub_eng"]
    text = build_media(sub, segs, query)
    golden(f"sub_eng_media{'_token' if query else ''}.m3u8", text)
    pl = m3u8.loads(text)
    suffix = f"?{query}" if query else ""
    assert not pl.segment_map  # no init segment for WebVTT
    assert [s.uri for s in pl.segments] == [f"{n}.vtt{suffix}" for n in range(1, 5)]
    assert [s.duration for s in pl.segments] == pytest.approx([4.004, 4.004, 4.004, 2.002])
    assert pl.target_duration == 5


@pytest.mark.parametrize("query", ["", QUERY])
def test_mpd_adaptation_set_per_language(query: str) -> None:
    renditions, segments = fixtures.catalogue_renditions(), fixtures.catalogue_segments()
    text = build_mpd(fixtures.ASSET, renditions, segments, query)
    golden("catalogue_manifest_token.mpd" if query else "catalogue_manifest.mpd", text)
    mpd = MPEGDASHParser.parse(text)  # the schema-shaped parser accepts it
    # The end of the presentation: the video's 14.014 s; the audio's 672768 samples
    # less the 1024 of priming end at 14.0 s.
    assert mpd.media_presentation_duration == "PT14.014S"
    root = ET.fromstring(text)
    sets = root.findall("d:Period/d:AdaptationSet", NS)
    summary = [(s.get("contentType"), s.get("lang"), s.find("d:Role", NS).get("value")  # type: ignore[union-attr]
                if s.find("d:Role", NS) is not None else None,
                [r.get("id") for r in s.findall("d:Representation", NS)]) for s in sets]
    assert summary == [
        ("video", None, None, ["v1080", "v720"]),
        ("audio", "en", "main", ["audio"]),
        ("audio", "fr", "alternate", ["audio_fra"]),
        ("text", "en", "subtitle", ["sub_eng"]),
        ("text", "en", "caption", ["sub_eng_2"]),
        ("text", "fr", "forced-subtitle", ["sub_fra_forced"]),
    ]
    assert len({s.get("id") for s in sets}) == len(sets)
    # The rendition's name as the AdaptationSet's Label (the name in a player's
    # track menu), placed before the Role as the schema orders them.
    assert [[label.text for label in s.findall("d:Label", NS)] for s in sets] == [
        [], ["English"], ["Français"], ["English"], ["English (SDH)"], ["Français (forcés)"]]
    for s in sets[1:]:
        tags = [c.tag.split("}")[1] for c in s]
        assert tags.index("Label") < tags.index("Role") < tags.index("Representation")
    # Audio priming: the init's edit list alone skips it (the browser applies it);
    # a presentationTimeOffset as well would shift the audio twice in dash.js and
    # Shaka (timestampOffset = Period@start - PTO), so no template carries one.
    templates = root.findall("d:Period/d:AdaptationSet/d:Representation/d:SegmentTemplate", NS)
    assert len(templates) == 4
    assert all(t.get("presentationTimeOffset") is None for t in templates)
    # Text: a sidecar WebVTT file per rendition.
    for s in sets[3:]:
        assert s.get("mimeType") == "text/vtt"
        rep = s.find("d:Representation", NS)
        assert rep is not None
        base = rep.find("d:BaseURL", NS)
        assert base is not None
        suffix = f"?{query}" if query else ""
        assert base.text == f"{rep.get('id')}/subtitles.vtt{suffix}"
        assert int(rep.get("bandwidth") or 0) > 0


@pytest.mark.parametrize(("code", "tag"), [
    ("eng", "en"), ("fre", "fr"), ("fra", "fr"), ("fr", "fr"), ("fr-CA", "fr"), ("ger", "de"),
    ("yue", "yue"), ("und", None), ("", None), ("e\"n", None), ("english", None),
])
def test_languages_are_bcp47(code: str, tag: str | None) -> None:
    assert bcp47(code) == tag


def test_text_codec_string() -> None:
    from packager import codec_string
    assert codec_string("webvtt", b"") == "wvtt"


KID = "0123456789abcdef0123456789abcdef"


def encrypted(scheme: str) -> list[Rendition]:
    from dataclasses import replace
    return [replace(r, encryption=scheme, key_id=KID) if r.kind != "text" else r
            for r in fixtures.catalogue_renditions()]


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_encrypted_media_playlist_names_its_key(scheme: str) -> None:
    (audio,) = [r for r in encrypted(scheme) if r.id == "audio"]
    text = build_media(audio, fixtures.catalogue_segments()["audio"], QUERY,
                       key_uri=f"/keys/a1b2c3/{KID}?{QUERY}")
    golden(f"audio_media_{scheme}.m3u8", text)
    pl = m3u8.loads(text)
    (key,) = pl.keys
    assert key.method == ("SAMPLE-AES" if scheme == "cbcs" else "SAMPLE-AES-CTR")
    assert (key.uri, key.keyformat) == (f"/keys/a1b2c3/{KID}?{QUERY}", "identity")
    assert key.iv is None  # CMAF: the IVs are in the segments (senc / tenc)
    lines = text.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("#EXT-X-KEY"))) < lines.index(
        next(x for x in lines if x.startswith("#EXT-X-MAP")))
    with pytest.raises(ValueError, match="key URI"):
        build_media(audio, fixtures.catalogue_segments()["audio"])


def test_encrypted_mpd_signals_scheme_kid_and_clearkey() -> None:
    renditions, segments = encrypted("cenc"), fixtures.catalogue_segments()
    text = build_mpd(fixtures.ASSET, renditions, segments,
                     clearkey_url="https://origin.example/keys/a1b2c3")
    golden("catalogue_manifest_cenc.mpd", text)
    MPEGDASHParser.parse(text)
    root = ET.fromstring(text)
    cenc = "{urn:mpeg:cenc:2013}default_KID"
    for aset in root.findall("d:Period/d:AdaptationSet", NS):
        protections = aset.findall("d:ContentProtection", NS)
        if aset.get("contentType") == "text":
            assert not protections  # WebVTT stays clear
            continue
        mp4, clearkey = protections
        assert (mp4.get("schemeIdUri"), mp4.get("value"), mp4.get(cenc)) == (
            "urn:mpeg:dash:mp4protection:2011", "cenc", "01234567-89ab-cdef-0123-456789abcdef")
        assert clearkey.get("schemeIdUri") == "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"
        laurl = clearkey.find("{https://dashif.org/CPS}Laurl")
        assert laurl is not None and laurl.text == "https://origin.example/keys/a1b2c3"
        # ContentProtection comes before Role and the Representations (schema order).
        tags = [c.tag.split("}")[1] for c in aset]
        assert tags.index("ContentProtection") < tags.index("Representation")
    from dataclasses import replace
    mixed = [replace(r, key_id="f" * 32) if r.id == "v720" else r for r in renditions]
    with pytest.raises(ValueError, match="share"):
        build_mpd(fixtures.ASSET, mixed, segments)
