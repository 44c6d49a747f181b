"""HLS and DASH builders against golden files, parsed by the m3u8 and mpegdash
libraries, plus the rules of RFC 8216 / ISO/IEC 23009-1 checked directly."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from metadata.models import Segment
from packager import build_iframes, build_master, build_media, build_mpd
from tests.packager import fixtures

DATA = Path(__file__).parent / "data"
QUERY = "token=abc.DEF-123"


def golden(name: str, text: str) -> None:
    """Compare with tests/packager/data/<name>; CDLC_UPDATE_GOLDEN=1 rewrites it."""
    path = DATA / name
    if os.environ.get("CDLC_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


def peak(segs: list[Segment], timescale: int) -> int:
    return math.ceil(max(Fraction(s.size * 8 * timescale, s.duration) for s in segs))


def average(segs: list[Segment], timescale: int) -> int:
    return math.ceil(Fraction(sum(s.size for s in segs) * 8 * timescale,
                              sum(s.duration for s in segs)))


@pytest.mark.parametrize("query", ["", QUERY])
def test_master_playlist(query: str) -> None:
    renditions, segments = fixtures.renditions(), fixtures.segments()
    text = build_master(renditions, segments, query)
    golden("master_token.m3u8" if query else "master.m3u8", text)

    pl = m3u8.loads(text)
    assert pl.is_variant and pl.version == 7 and pl.is_independent_segments
    suffix = f"?{query}" if query else ""
    (audio,) = pl.media
    assert (audio.type, audio.group_id, audio.language, audio.default, audio.channels) == (
        "AUDIO", "audio", "en", "YES", "2")
    assert audio.uri == f"audio/media.m3u8{suffix}"
    audio_peak = peak(segments["audio"], 48000)
    audio_avg = average(segments["audio"], 48000)
    assert [p.uri for p in pl.playlists] == [f"{r}/media.m3u8{suffix}" for r in fixtures.DIMENSIONS]
    for p, rid in zip(pl.playlists, fixtures.DIMENSIONS, strict=True):
        info = p.stream_info
        # BANDWIDTH: peak segment bitrate from real sizes, plus the audio it plays with.
        assert info.bandwidth == peak(segments[rid], 90000) + audio_peak
        assert info.average_bandwidth == average(segments[rid], 90000) + audio_avg
        assert info.codecs == f"{fixtures.CODECS[rid]},mp4a.40.2"
        assert info.resolution == fixtures.DIMENSIONS[rid]
        assert info.frame_rate == pytest.approx(29.97)
        assert info.audio == "audio"
    assert [p.uri for p in pl.iframe_playlists] == [
        f"{r}/iframes.m3u8{suffix}" for r in fixtures.DIMENSIONS]
    for p, rid in zip(pl.iframe_playlists, fixtures.DIMENSIONS, strict=True):
        iframe_segs = [replace(s, size=s.iframe_size) for s in segments[rid]]
        assert p.iframe_stream_info.bandwidth == peak(iframe_segs, 90000)
        assert p.iframe_stream_info.codecs == fixtures.CODECS[rid]


@pytest.mark.parametrize("query", ["", QUERY])
@pytest.mark.parametrize("rid", ["v1080", "audio"])
def test_media_playlist(rid: str, query: str) -> None:
    rendition = next(r for r in fixtures.renditions() if r.id == rid)
    segs = fixtures.segments()[rid]
    text = build_media(rendition, segs, query)
    golden(f"{rid}_media{'_token' if query else ''}.m3u8", text)

    pl = m3u8.loads(text)
    suffix = f"?{query}" if query else ""
    assert pl.version == 7 and pl.playlist_type == "vod" and pl.is_endlist
    assert pl.segment_map[0].uri == f"init.mp4{suffix}"
    assert [s.uri for s in pl.segments] == [f"{n}.m4s{suffix}" for n in range(1, len(segs) + 1)]
    # Exact durations, and RFC 8216 §4.3.3.1: EXTINF rounded <= TARGETDURATION.
    assert [s.duration for s in pl.segments] == pytest.approx(
        [s.duration / rendition.timescale for s in segs], abs=1e-6)
    assert all(round(s.duration) <= pl.target_duration for s in pl.segments)
    assert pl.target_duration == math.ceil(max(s.duration for s in segs) / rendition.timescale)


def test_iframe_playlist() -> None:
    v1080 = fixtures.renditions()[0]
    segs = fixtures.segments()["v1080"]
    text = build_iframes(v1080, segs, QUERY)
    golden("v1080_iframes_token.m3u8", text)
    pl = m3u8.loads(text)
    assert pl.is_i_frames_only
    assert [s.byterange for s in pl.segments] == [f"{s.iframe_size}@0" for s in segs]
    assert [s.uri for s in pl.segments] == [f"{s.number}.m4s?{QUERY}" for s in segs]


@pytest.mark.parametrize("query", ["", QUERY])
def test_mpd(query: str) -> None:
    renditions, segments = fixtures.renditions(), fixtures.segments()
    text = build_mpd(fixtures.ASSET, renditions, segments, query)
    golden("manifest_token.mpd" if query else "manifest.mpd", text)

    mpd = MPEGDASHParser.parse(text)
    assert mpd.type == "static"
    assert mpd.profiles == "urn:mpeg:dash:profile:isoff-live:2011"
    assert mpd.media_presentation_duration == "PT14.016S"  # end of audio: 672768 / 48000 s
    (period,) = mpd.periods
    video, audio = period.adaptation_sets
    assert (video.content_type, video.mime_type, audio.content_type) == (
        "video", "video/mp4", "audio")
    by_id = {r.id: r for r in renditions}
    for aset in (video, audio):
        for rep in aset.representations:
            r = by_id[rep.id]
            segs = segments[r.id]
            assert rep.codecs == r.codec_string
            assert rep.bandwidth == peak(segs, r.timescale)
            (template,) = rep.segment_templates
            q = f"?{query}" if query else ""
            assert template.initialization == f"$RepresentationID$/init.mp4{q}"
            assert template.media == f"$RepresentationID$/$Number$.m4s{q}"
            assert (template.start_number, template.timescale) == (1, r.timescale)
            # Expand the timeline: it must give back every segment's start and duration.
            expanded, t = [], 0
            for s in template.segment_timelines[0].Ss:
                t = s.t if s.t is not None else t
                for _ in range((s.r or 0) + 1):
                    expanded.append((t, s.d))
                    t += s.d
            assert expanded == [(s.start, s.duration) for s in segs]
            if r.kind == "video":
                assert (rep.width, rep.height, rep.sar, rep.frame_rate) == (
                    r.width, r.height, "1:1", "30000/1001")
            else:
                assert rep.audio_sampling_rate == "48000"
                assert rep.audio_channel_configurations[0].value == "2"


def test_mpd_timeline_marks_gaps() -> None:
    renditions = fixtures.renditions()[-1:]
    segs = fixtures.segments()["audio"]
    gapped = [*segs[:2], *(replace(s, start=s.start + 1024) for s in segs[2:])]
    mpd = MPEGDASHParser.parse(build_mpd(fixtures.ASSET, renditions, {"audio": gapped}))
    ss = mpd.periods[0].adaptation_sets[0].representations[0].segment_templates[0] \
        .segment_timelines[0].Ss
    assert [(s.t, s.d, s.r) for s in ss] == [
        (0, 192512, 1), (gapped[2].start, 192512, None), (None, 95232, None)]


def test_audio_only_master() -> None:
    audio = fixtures.renditions()[-1]
    pl = m3u8.loads(build_master([audio], fixtures.segments()))
    (variant,) = pl.playlists
    assert variant.uri == "audio/media.m3u8" and variant.stream_info.codecs == "mp4a.40.2"
    assert not pl.media and not pl.iframe_playlists


def test_bad_inputs_raise_value_error() -> None:
    renditions, segments = fixtures.renditions(), fixtures.segments()
    with pytest.raises(ValueError, match="numbered"):
        build_media(renditions[0], segments["v1080"][1:])
    with pytest.raises(ValueError, match="not a video"):
        build_iframes(renditions[-1], segments["audio"])
    with pytest.raises(ValueError, match="no renditions"):
        build_master([], {})
    with pytest.raises(ValueError, match="timescale"):
        build_media(replace(renditions[0], timescale=0), segments["v1080"])
    with pytest.raises(ValueError, match="timescale"):
        build_mpd(fixtures.ASSET, [replace(renditions[0], timescale=0)], segments)
    with pytest.raises(ValueError, match="quoted-string"):
        build_master([replace(renditions[-1], name='e"n'), renditions[0]], segments)


def test_rules_hold_for_random_indexes() -> None:
    """RFC 8216 §4.3.3.1 and the DASH timeline over 200 random segment indexes:
    TARGETDURATION >= every EXTINF rounded, EXTINF sums to the track, the
    SegmentTimeline expands back to the index, BANDWIDTH >= every segment's rate."""
    import random

    rng = random.Random(8216)
    base = fixtures.renditions()[0]
    for _ in range(200):
        timescale = rng.choice([1000, 12800, 15360, 48000, 90000])
        rendition = replace(base, id="v", timescale=timescale)
        segs, start = [], rng.randrange(0, 5 * timescale)
        for n in range(1, rng.randint(2, 40)):
            duration = rng.randint(timescale // 10, 10 * timescale)
            segs.append(Segment("a", "v", n, start, duration, rng.randint(1, 5_000_000),
                                iframe_size=rng.randint(1, 100_000)))
            start += duration + (rng.choice([0, 0, 0, 7]))  # occasional gap
        media = m3u8.loads(build_media(rendition, segs))
        assert all(round(s.duration) <= media.target_duration for s in media.segments)
        assert sum(s.duration for s in media.segments) == pytest.approx(
            sum(s.duration for s in segs) / timescale, abs=1e-5 * len(segs))
        master = m3u8.loads(build_master([rendition], {"v": segs}))
        assert master.playlists[0].stream_info.bandwidth >= max(
            s.size * 8 * timescale / s.duration for s in segs) - 1e-6
        mpd = MPEGDASHParser.parse(build_mpd(fixtures.ASSET, [rendition], {"v": segs}))
        ss = mpd.periods[0].adaptation_sets[0].representations[0].segment_templates[0] \
            .segment_timelines[0].Ss
        expanded, t = [], 0
        for s in ss:
            t = s.t if s.t is not None else t
            for _ in range((s.r or 0) + 1):
                expanded.append((t, s.d))
                t += s.d
        assert expanded == [(s.start, s.duration) for s in segs]


# -- encryption in media and I-frame playlists (RFC 8216 §4.3.2.4) -------------------

KID = "0123456789abcdef0123456789abcdef"
KEY_URI = f"/keys/a1b2c3/{KID}?{QUERY}"


def _in_blocks(segs: list[Segment]) -> list[Segment]:
    """Sizes as AES-128 leaves them: whole 16-byte blocks (engine/segment_crypto.py)."""
    return [replace(s, size=s.size + 16 - s.size % 16,
                    iframe_size=s.iframe_size + 16 - s.iframe_size % 16) for s in segs]


@pytest.mark.parametrize("scheme", ["aes-128", "cbcs", "cenc"])
def test_encrypted_media_and_iframe_playlists_carry_the_key(scheme: str) -> None:
    """The media playlist and the I-frame playlist of an encrypted rendition carry
    the same EXT-X-KEY. AES-128 follows the EXT-X-MAP (the init segment is clear,
    the IV is each segment's media sequence number: no IV attribute); SAMPLE-AES
    methods precede it."""
    v1080 = replace(fixtures.renditions()[0], encryption=scheme, key_id=KID.upper())
    segs = fixtures.segments()["v1080"]
    if scheme == "aes-128":
        segs = _in_blocks(segs)
    media = build_media(v1080, segs, QUERY, key_uri=KEY_URI)
    iframes = build_iframes(v1080, segs, QUERY, key_uri=KEY_URI)
    name = scheme.replace("-", "")
    golden(f"v1080_media_{name}.m3u8", media)
    golden(f"v1080_iframes_{name}.m3u8", iframes)
    for text in (media, iframes):
        lines = text.splitlines()
        (key_line,) = [n for n in lines if n.startswith("#EXT-X-KEY:")]
        map_at = lines.index(f'#EXT-X-MAP:URI="init.mp4?{QUERY}"')
        pl = m3u8.loads(text)
        (key,) = pl.keys
        assert key.uri == KEY_URI
        if scheme == "aes-128":
            assert key_line == f'#EXT-X-KEY:METHOD=AES-128,URI="{KEY_URI}"'
            assert lines.index(key_line) == map_at + 1
            assert key.iv is None and key.keyformat is None
            # The map is declared before the key: m3u8 sees no key on it.
            assert pl.segment_map[0].uri == f"init.mp4?{QUERY}"
        else:
            assert lines.index(key_line) == map_at - 1
            assert key.method == ("SAMPLE-AES" if scheme == "cbcs" else "SAMPLE-AES-CTR")
            assert key.keyformat == "identity"
        # The key applies to every segment (one tag, before the first EXTINF).
        assert lines.index(key_line) < next(i for i, n in enumerate(lines)
                                            if n.startswith("#EXTINF"))
        assert all(s.key is not None and s.key.uri == KEY_URI for s in pl.segments)
    assert [s.byterange for s in m3u8.loads(iframes).segments] == [
        f"{s.iframe_size}@0" for s in segs]


def test_encrypted_playlists_need_a_key_uri_and_a_kid() -> None:
    v1080, segs = fixtures.renditions()[0], _in_blocks(fixtures.segments()["v1080"])
    aes = replace(v1080, encryption="aes-128", key_id=KID)
    for build in (build_media, build_iframes):
        with pytest.raises(ValueError, match="a key URI is needed"):
            build(aes, segs, QUERY)
        with pytest.raises(ValueError, match="32 hex digits"):
            build(replace(aes, key_id="xyz"), segs, QUERY, key_uri=KEY_URI)
        with pytest.raises(ValueError, match="unknown encryption 'aes-256'"):
            build(replace(aes, encryption="aes-256"), segs, QUERY, key_uri=KEY_URI)
        with pytest.raises(ValueError, match="quoted-string"):
            build(aes, segs, QUERY, key_uri='/keys/"x"')
    # An I-frame range that is not whole AES blocks cannot decrypt alone.
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        build_iframes(aes, fixtures.segments()["v1080"], QUERY, key_uri=KEY_URI)
        # A clear rendition ignores a key URI: nothing to decrypt.
        assert "#EXT-X-KEY" not in build(v1080, segs, QUERY, key_uri=KEY_URI)
