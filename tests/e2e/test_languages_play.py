"""A catalogue title plays in hls.js, dash.js and Shaka Player (over DASH and over
HLS) with its languages: a master with English and French audio (a 440 Hz and an
880 Hz tone) and an English subtitle stream (mov_text), plus a French WebVTT
sidecar, ingested with
`cdlc ingest --subtitles fr=FILE`, served by `cdlc serve` behind the nginx edge
with playback tokens. Each player, through its own API, lists both audio languages
and both text tracks, switches the audio to French (it reports the French track
as playing, fetches the French segments and the picture keeps moving), and shows
the expected cue of the subtitle track it is told to enable while the video is
inside that cue's time. The player's MSE timestampOffsets put audio and video on
the same timeline (the A/V start itself is judged from the boxes in
tests/packager/test_catalogue_real.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cdn import tokens
from cdn.edge import NginxEdge
from tests.conftest import make_env
from tests.e2e.asset import BuiltAsset
from tests.e2e.conftest import PAGES, Stack
from tests.e2e.servers import OriginProcess
from tests.e2e.test_players import state, wait
from tests.media import ffmpeg

ASSET = "e2elangs"
KEY = b"e2e-languages-key"
# Longer than Shaka's 10 s buffering goal: its HLS text engine, made when the
# first text track is chosen, waits for the timestamp offset of the next video
# append, so a title whose picture is all buffered by then would show no cue.
SECONDS = 24
FRAME = 1024 / 48000  # one AAC frame at 48 kHz, seconds

# (start, end, text) of the cues: the English ones in the master's mov_text
# stream, the French ones in the sidecar; the second cue is long enough to be
# seen while the picture plays on.
EN_CUES = [(1.0, 3.0, "Hello harbour."), (4.5, 9.0, "Boats come in.")]
FR_CUES = [(1.0, 3.0, "Bonjour le port."), (4.5, 9.0, "Les bateaux rentrent.")]

PLAYERS = [
    pytest.param("hlsjs", "master.m3u8", id="hlsjs"),
    pytest.param("dashjs", "manifest.mpd", id="dashjs"),
    pytest.param("shaka", "manifest.mpd", id="shaka-dash"),
    pytest.param("shaka", "master.m3u8", id="shaka-hls"),
]


def _stamp(seconds: float, sep: str) -> str:
    whole = int(seconds)
    return f"00:00:{whole:02d}{sep}{round((seconds - whole) * 1000):03d}"


def write_srt(path: Path, cues: list[tuple[float, float, str]]) -> Path:
    blocks = [f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{text}\n"
              for i, (a, b, text) in enumerate(cues, start=1)]
    path.write_text("\n".join(blocks))
    return path


def write_vtt(path: Path, cues: list[tuple[float, float, str]]) -> Path:
    blocks = [f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{text}\n" for a, b, text in cues]
    path.write_text("WEBVTT\n\n" + "\n".join(blocks))
    return path


def make_language_master(d: Path) -> tuple[Path, Path]:
    """(master.mp4, French sidecar .vtt): H.264 640x360 25 fps, AAC eng (440 Hz)
    and fra (880 Hz), a mov_text eng stream; every stream tagged with its language."""
    srt = write_srt(d / "en.srt", EN_CUES)
    vtt = write_vtt(d / "fr.vtt", FR_CUES)
    master = d / "master.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={SECONDS}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
           "-f", "lavfi", "-i", f"sine=frequency=880:sample_rate=48000:duration={SECONDS}",
           "-i", str(srt), "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "96k", "-c:s", "mov_text",
           "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
           "-metadata:s:s:0", "language=eng", str(master))
    return master, vtt


@pytest.fixture(scope="module")
def languages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e-langs")
    master, vtt = make_language_master(root)
    env = make_env(root / "data", CDLC_PRESET="veryfast", CDLC_GOP_SECONDS="2",
                   CDLC_ENCODER="cpu")
    proc = env.run("ingest", str(master), "--id", ASSET, "--ladder", "360:700,240:300",
                   "--segment-seconds", "2", "--subtitles", f"fr={vtt}", "--json",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # What the ingest kept: two videos, both audio languages, both subtitle tracks.
    kinds = sorted(r["kind"] for r in summary["renditions"])
    assert kinds == ["audio", "audio", "image", "text", "text", "video", "video"], summary
    asset = BuiltAsset(ASSET, float(summary["duration"]),
                       {r["id"]: int(r["segments"]) for r in summary["renditions"]},
                       source="cdlc ingest")
    origin = OriginProcess(env.data_dir, signing_key=KEY, cli=True).start()
    edge = NginxEdge(origin.url, root / "edge", signing_key=KEY, worker_processes=1)
    try:
        edge.start()
        yield Stack(edge, origin, asset, tokens.sign_for(KEY, ASSET, 3600))
    finally:
        edge.stop()
        origin.stop()


def wait_text(page: Any, condition: str, what: str, timeout: float = 15) -> None:
    """wait(), failing with the <video> element's text tracks and their cues."""
    try:
        wait(page, condition, what, timeout)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc}; text tracks: {page.evaluate('LANG.textState()')}")


@pytest.mark.parametrize(("player", "manifest"), PLAYERS)
def test_player_lists_switches_audio_and_shows_subtitles(
    languages: Stack, browser_context: Any, page_origin: str, player: str, manifest: str,
) -> None:
    stack = languages
    page = browser_context.new_page()
    page.add_init_script(path=str(PAGES / "languages.js"))
    console: list[str] = []
    requests: list[tuple[float, str]] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("request", lambda r: requests.append((time.monotonic(), r.url)))
    answers: list[tuple[int, str]] = []
    page.on("response", lambda r: answers.append((r.status, r.url)))
    try:
        src = stack.url(manifest)
        page.goto(f"{page_origin}/player.html?player={player}&src={quote(src, safe='')}")
        wait(page, "E2E.ready", "manifest loaded", 20)
        wait(page, "document.getElementById('video').currentTime > 0.5", "playback started", 20)

        # Both languages and both text tracks, by the player's own API.
        audio = page.evaluate("LANG.api().audio()")
        text = page.evaluate("LANG.api().text()")
        assert sorted(t["lang"] for t in audio) == ["en", "fr"], audio
        assert sorted(t["lang"] for t in text) == ["en", "fr"], text
        # With the names a track menu shows (HLS NAME, DASH Label).
        names = {"en": "English", "fr": "French"}
        assert {t["lang"]: t["name"] for t in audio} == names, audio
        assert {t["lang"]: t["name"] for t in text} == names, text
        assert page.evaluate("LANG.api().playing()") == "en"  # DEFAULT=YES / Role main

        # Switch the audio to French: the player says French plays, it fetched
        # French segments, and the picture moves on after the switch.
        page.evaluate("LANG.api().watch()")
        switched_at = time.monotonic()
        t0 = page.evaluate("document.getElementById('video').currentTime")
        page.evaluate("LANG.api().selectAudio('fr')")
        wait(page, "LANG.played.includes('fr') && LANG.api().playing() === 'fr'",
             "the player reports French audio playing", 15)
        wait(page, f"document.getElementById('video').currentTime > {t0 + 1.5}",
             "playback continues after the audio switch", 15)
        french = [u for at, u in requests if at >= switched_at
                  and re.search(rf"/vod/{ASSET}/audio_fra/\d+\.m4s", u)]
        assert french, [u for _, u in requests][-20:]

        # A subtitle track on, the picture inside its second cue: that cue shows.
        for language, cues in (("fr", FR_CUES), ("en", EN_CUES)):
            start, end, expected = cues[1]
            page.evaluate(f"LANG.api().selectText('{language}')")
            # The track's cues fetched first: seeking while dash.js 5.2 still
            # loads a sidecar file, it gets the whole file yet keeps no cue of
            # it (seen here one run in three), and never asks again.
            wait_text(page, f"LANG.loaded('{language}')", f"the {language} text track loaded")
            t = page.evaluate("document.getElementById('video').currentTime")
            if not start <= t < end - 2.5:
                page.evaluate(f"document.getElementById('video').currentTime = {start + 0.3}")
            wait_text(page, f"LANG.activeCues().some((c) => c.text === {expected!r})",
                      f"the {language} cue {expected!r} shown")
            shown = page.evaluate("({cues: LANG.activeCues(),"
                                  " t: document.getElementById('video').currentTime})")
            (cue,) = [c for c in shown["cues"] if c["text"] == expected]
            # At its time: the cue keeps the times of its file, and the picture is
            # inside it while it shows.
            assert (cue["start"], cue["end"]) == (pytest.approx(start, abs=0.05),
                                                  pytest.approx(end, abs=0.05)), cue
            assert start - 0.05 <= shown["t"] <= end + 0.05, shown
            assert cue["mode"] == "showing", cue

        # Where the player put each track on the timeline: the browser applies the
        # audio's edit list itself, so the player must shift audio and video alike
        # (a presentationTimeOffset of the priming made dash.js and Shaka pull the
        # audio one AAC frame ahead).
        offsets = page.evaluate("LANG.offsets()")
        by_type = {o["mime"].split("/")[0]: o["offset"] for o in offsets}
        assert set(by_type) == {"audio", "video"}, offsets
        assert abs(by_type["audio"] - by_type["video"]) < FRAME / 2, offsets

        s = state(page)
        assert not [e for e in s["errors"] if e["fatal"]], s["errors"]
        assert not s["paused"], s
        # Every request of the player went through the edge and was answered.
        media = [(status, url) for status, url in answers if f"/vod/{ASSET}/" in url]
        assert media and all(status in (200, 206, 304) for status, _ in media), media
        assert all(url.startswith(stack.edge.url) for _, url in media), media
    except BaseException:
        print(f"{player} console:\n" + "\n".join(console[-40:]))
        raise
    finally:
        page.close()
