"""Catalogue packaging, subtitles: our WebVTT and SRT readers (strict, errors with
the line), text streams of masters (mov_text, subrip, webvtt, ass) and sidecar
files as WebVTT renditions: segmented N.vtt with X-TIMESTAMP-MAP (RFC 8216 §3.5)
plus one subtitles.vtt for DASH. Cue times are checked to survive, with ffprobe
as an independent reader of what we wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

import native
from tests.media import ffmpeg, ffprobe

SEGMENT = 2.0

VTT = """WEBVTT - a header line

NOTE a comment
that spans lines

STYLE
::cue { color: yellow }

intro
00:00.250 --> 00:01.500 line:0 align:start
Hello <b>there</b>
second line

00:00:02.000 --> 00:00:03.999
Across the cut at 2 s? No: inside.

00:00:01.900 --> 00:00:02.100
Across the cut
"""

SRT = ("\ufeff1\r\n00:00:00,500 --> 00:00:01,000\r\n"
       "<font color=\"red\">Red</font> & <i>it</i>\r\n\r\n"
       "2\r\n00:00:03,100 --> 00:00:05,000 X1:10 X2:20 Y1:1 Y2:2\r\n3 < 4\r\n")

CUES_VTT = [(250, 1500, "Hello <b>there</b>\nsecond line", "line:0 align:start"),
            (1900, 2100, "Across the cut", ""),
            (2000, 3999, "Across the cut at 2 s? No: inside.", "")]


def cues(items: list[native.Cue]) -> list[tuple[int, int, str, str]]:
    return [(c.start_ms, c.end_ms, c.text, c.settings) for c in items]


def test_webvtt_reader() -> None:
    assert cues(native.parse_subtitles(VTT.encode(), "webvtt")) == CUES_VTT


def test_encodings() -> None:
    """WebVTT is UTF-8 (refused otherwise, with the line); SRT from old tools may be
    Latin-1 / Windows-1252 and is converted."""
    with pytest.raises(native.InvalidDataError, match=r"x\.vtt:4: not UTF-8"):
        native.parse_subtitles(b"WEBVTT\n\n00:01.000 --> 00:02.000\nFran\xe7ais\n", "webvtt",
                               "x.vtt")
    (cue,) = native.parse_subtitles(b"1\n00:00:01,000 --> 00:00:02,000\nFran\xe7ais\n", "srt")
    assert cue.text == "Français"
    (cue,) = native.parse_subtitles("1\n00:00:01,000 --> 00:00:02,000\nFrançais\n".encode(), "srt")
    assert cue.text == "Français"


def test_srt_reader() -> None:
    got = cues(native.parse_subtitles(SRT.encode(), "srt"))
    assert got == [(500, 1000, "Red &amp; <i>it</i>", ""), (3100, 5000, "3 &lt; 4", "")]


@pytest.mark.parametrize(("fmt", "text", "where"), [
    ("webvtt", "WEBVTTX\n", r"x\.vtt:1: a WebVTT file starts"),
    ("webvtt", "hello\n", r"x\.vtt:1:"),
    ("webvtt", "WEBVTT\n\n00:01.000 --> 00:00.500\nbackwards\n", r"x\.vtt:3: cue ends before"),
    ("webvtt", "WEBVTT\n\n00:01.000 -> 00:02.000\ntext\n", r"x\.vtt:4: expected a cue timing"),
    ("webvtt", "WEBVTT\n\n1:00.000 --> 1:02.000\ntext\n", r"x\.vtt:3: bad timing"),
    ("webvtt", "WEBVTT\n\n00:01.000 --> 00:02.000\na\n00:03.000 --> 00:04.000\nb\n",
     r"x\.vtt:5: cue text holds '-->'"),
    ("webvtt", "WEBVTT\n00:01.000 --> 00:02.000\ntext\n",
     r"x\.vtt:2: cue timing in the file header"),
    ("srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\nx\n00:00:03,000 --> 00:00:04,000\nno\n",
     r"x\.vtt:5: expected a cue number"),
    ("srt", "1\n00:00:01,000 --> 00:00:61,000\nbad seconds\n", r"x\.vtt:2: bad timing"),
    ("srt", "1\n00:00:01,000 --> 00:00:02,000\na\n2\n00:00:03,000 --> 00:00:04,000\nb\n",
     r"x\.vtt:5: timing line inside the text of the cue at line 2"),
    ("srt", "1\n", r"x\.vtt:1: cue 1 has no timing line"),
    ("srt", "1\n00:00:01,000 --> 00:00:02,000\n\x00\n", r"x\.vtt:3: a NUL byte"),
])
def test_bad_files_are_refused_with_the_line(fmt: str, text: str, where: str) -> None:
    with pytest.raises(native.InvalidDataError, match=where):
        native.parse_subtitles(text.encode(), fmt, "x.vtt")


def parse_segment(path: Path) -> list[tuple[int, int, str, str]]:
    text = path.read_text()
    lines = text.split("\n")
    assert lines[0] == "WEBVTT"
    # RFC 8216 §3.5: the map of the cue clock onto the media's (which starts at 0).
    assert lines[1] == "X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"
    return cues(native.parse_subtitles(text.encode(), "webvtt", str(path)))


CueRow = tuple[int, int, str, str]


def check_text_rendition(out: Path, r: native.RenditionResult, expected: list[CueRow],
                         total_ms: int) -> None:
    assert r.track.kind == native.TrackKind.TEXT and r.track.codec == "webvtt"
    assert r.track.timescale == 1000
    seg_ms = int(SEGMENT * 1000)
    assert [(s.number, s.start, s.duration) for s in r.segments] == [
        (n + 1, n * seg_ms, min(seg_ms, total_ms - n * seg_ms))
        for n in range((total_ms + seg_ms - 1) // seg_ms)]
    seen: list[tuple[int, int, str, str]] = []
    for s in r.segments:
        path = out / r.id / f"{s.number}.vtt"
        assert s.size == path.stat().st_size
        got = parse_segment(path)
        # Every cue of a segment overlaps it; cues across a cut are in both.
        for c in got:
            assert c[0] < s.start + s.duration and c[1] > s.start, (s.number, c)
            if c not in seen:
                seen.append(c)
    assert sorted(seen) == sorted(expected)
    whole = (out / r.id / "subtitles.vtt").read_bytes()
    assert cues(native.parse_subtitles(whole, "webvtt")) == sorted(expected)
    # ffmpeg's WebVTT demuxer reads the same times.
    packets = ffprobe(out / r.id / "subtitles.vtt", "-show_entries",
                      "packet=pts_time,duration_time")["packets"]
    assert [(round(float(p["pts_time"]) * 1000), round(float(p["duration_time"]) * 1000))
            for p in packets] == [(c[0], c[1] - c[0]) for c in sorted(expected)]


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """5 s 160x120 H.264 + AAC with an English subrip stream (MKV) and a mov_text
    one flagged forced (MP4), plus sidecar files."""
    d = tmp_path_factory.mktemp("text")
    srt = d / "in.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nHello\n\n"
                   "2\n00:00:01,800 --> 00:00:02,400\n{\\i1}Across{\\i0} the cut\n\n"
                   "3\n00:00:04,000 --> 00:00:04,900\nLast words\n")
    base = d / "base.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=5",
           "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=5",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac", str(base))
    mkv = d / "m.mkv"
    ffmpeg("-i", str(base), "-i", str(srt), "-map", "0", "-map", "1", "-c", "copy", "-c:s", "srt",
           "-metadata:s:s:0", "language=eng", str(mkv))
    mp4 = d / "m.mp4"
    ffmpeg("-i", str(base), "-i", str(srt), "-map", "0", "-map", "1", "-c", "copy",
           "-c:s", "mov_text", "-metadata:s:s:0", "language=spa", "-disposition:s:0", "forced",
           str(mp4))
    vtt = d / "de.vtt"
    vtt.write_text(VTT)
    sdh = d / "en_sdh.srt"
    sdh.write_bytes(SRT.encode())
    return {"mkv": mkv, "mp4": mp4, "vtt": vtt, "sdh": sdh}


# libavcodec's subrip decoder drops the ASS-style {\i1} of an SRT cue (it reads
# HTML-style <i>): the second cue comes out plain.
MASTER_CUES = [(500, 1500, "Hello", ""), (1800, 2400, "Across the cut", ""),
               (4000, 4900, "Last words", "")]


@pytest.mark.parametrize("path", ["transcode", "copy"])
def test_master_text_and_sidecars_become_webvtt(master: dict[str, Path], tmp_path: Path,
                                                path: str) -> None:
    sidecars = [native.SubtitleSidecar(master["vtt"], "de"),
                native.SubtitleSidecar(master["sdh"], "en", "English (SDH)", sdh=True)]
    out = tmp_path / "out"
    if path == "transcode":
        result = native.Transcoder(master["mkv"], out, [native.Rung("v120", 120, 200_000)],
                                   segment_seconds=SEGMENT, gop_seconds=1.0, preset="ultrafast",
                                   subtitle_sidecars=sidecars).run()
    else:
        result = native.package_copy(master["mkv"], out, SEGMENT, subtitle_sidecars=sidecars)
    text = {r.id: r for r in result.renditions if r.track.kind == native.TrackKind.TEXT}
    assert list(text) == ["sub_eng", "sub_deu", "sub_eng_2"]
    flags = {k: (r.track.language, r.track.name, r.track.forced, r.track.sdh)
             for k, r in text.items()}
    assert flags == {"sub_eng": ("eng", "English", False, False),
                     "sub_deu": ("deu", "German", False, False),
                     "sub_eng_2": ("eng", "English (SDH)", False, True)}
    total = round(result.duration_seconds * 1000)
    assert total == 5000
    check_text_rendition(out, text["sub_eng"], MASTER_CUES, total)
    check_text_rendition(out, text["sub_deu"], CUES_VTT, total)
    sdh = [(500, 1000, "Red &amp; <i>it</i>", ""), (3100, 5000, "3 &lt; 4", "")]
    check_text_rendition(out, text["sub_eng_2"], sdh, total)
    assert not [s for s in result.skipped if s.kind == "subtitle"]


def test_mov_text_forced_flag_is_carried(master: dict[str, Path], tmp_path: Path) -> None:
    result = native.package_copy(master["mp4"], tmp_path / "out", SEGMENT)
    (sub,) = [r for r in result.renditions if r.track.kind == native.TrackKind.TEXT]
    assert (sub.id, sub.track.language, sub.track.forced) == ("sub_spa_forced", "spa", True)
    check_text_rendition(tmp_path / "out", sub, MASTER_CUES, 5000)


def test_ass_of_the_master_becomes_webvtt(master: dict[str, Path], tmp_path: Path) -> None:
    ass = tmp_path / "m.mkv"
    ffmpeg("-i", str(master["mkv"]), "-map", "0", "-c", "copy", "-c:s", "ass", str(ass))
    result = native.package_copy(ass, tmp_path / "out", SEGMENT)
    (sub,) = [r for r in result.renditions if r.track.kind == native.TrackKind.TEXT]
    check_text_rendition(tmp_path / "out", sub, MASTER_CUES, 5000)


ASS_EVENTS = [
    # italic, bold, underline on and off; positions, colours and \iclip dropped
    ("0:00:00.50", "0:00:01.50", r"{\pos(10,10)\i1}Off screen{\i0}, {\b1\c&H0000FF&}loud{\b0} "
                                 r"{\iclip(0,0,9,9)\u1}under{\u0}"),
    # a weight for bold, \r resetting, spans across a line break; overlapping
    # spans come out nested
    ("0:00:01.60", "0:00:02.40", r"{\b700}Bold {\i1}both{\b0} italic\Nnext{\r} plain"),
    # tags left open close at the end; a line blank but for tags goes; & < > escaped
    ("0:00:02.50", "0:00:03.00", r"{\i1}\N5 < 6 & 7{\u1}"),
    # nothing to show: no cue
    ("0:00:03.10", "0:00:03.50", r"{\i1}{\i0}"),
]


def test_ass_italic_bold_underline_become_webvtt_spans(tmp_path: Path) -> None:
    """WebVTT cue text has <i>, <b> and <u> (W3C WebVTT §4.2.2) and nothing for an
    ASS position, colour or clip: those three are kept as spans, always nested,
    and the rest goes. Italics carry meaning in subtitles (a voice off screen, a
    song), and a sidecar SRT's <i> was already kept."""
    script = tmp_path / "s.ass"
    script.write_text(
        "[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, "
        "Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
        "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
        "Alignment, MarginL, MarginR, MarginV, Encoding\nStyle: Default,Arial,20,&H00FFFFFF,"
        "&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1\n\n"
        "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, "
        "Effect, Text\n"
        + "".join(f"Dialogue: 0,{a},{b},Default,,0,0,0,,{text}\n" for a, b, text in ASS_EVENTS))
    mkv = tmp_path / "m.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-i", str(script),
           "-map", "0", "-map", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
           "-c:s", "copy", str(mkv))
    result = native.package_copy(mkv, tmp_path / "out", SEGMENT)
    (sub,) = [r for r in result.renditions if r.track.kind == native.TrackKind.TEXT]
    check_text_rendition(tmp_path / "out", sub, [
        (500, 1500, "<i>Off screen</i>, <b>loud</b> <u>under</u>", ""),
        (1600, 2400, "<b>Bold <i>both</i></b><i> italic\nnext</i> plain", ""),
        (2500, 3000, "<i>5 &lt; 6 &amp; 7<u></u></i>", ""),
    ], 4000)


def test_bad_sidecar_fails_before_media_work(master: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.srt"
    bad.write_text("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:09,000 --> 00:00:03,000\nx\n")
    out = tmp_path / "out"
    with pytest.raises(native.InvalidDataError, match=r"bad\.srt:6: cue ends before it starts"):
        native.package_copy(master["mkv"], out, SEGMENT,
                            subtitle_sidecars=[native.SubtitleSidecar(bad, "en")])
    with pytest.raises(native.InvalidDataError, match=r"bad\.srt:6:"):
        native.Transcoder(master["mkv"], out, [native.Rung("v120", 120, 200_000)],
                          subtitle_sidecars=[native.SubtitleSidecar(bad, "en")]).run()
    assert not out.exists()
    with pytest.raises(native.NotFoundError):
        native.package_copy(master["mkv"], out, SEGMENT,
                            subtitle_sidecars=[native.SubtitleSidecar(tmp_path / "none.vtt", "en")])


def test_subtitles_off_lists_the_stream(master: dict[str, Path], tmp_path: Path) -> None:
    result = native.package_copy(master["mkv"], tmp_path / "out", SEGMENT, subtitles=False)
    assert not [r for r in result.renditions if r.track.kind == native.TrackKind.TEXT]
    (skip,) = result.skipped
    assert (skip.kind, skip.codec) == ("subtitle", "subrip")
