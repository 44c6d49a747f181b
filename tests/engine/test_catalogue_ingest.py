"""A master with its languages: `cdlc ingest --audio LANG=FILE --subtitles LANG=FILE`
publishes every audio language and the subtitles as renditions, the origin serves
them in both manifests and the WebVTT cue files; a bad subtitle file is refused
with its line number before anything runs."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import m3u8

from cdn.edge import free_port
from tests.conftest import make_env
from tests.media import ffmpeg, make_master

VTT = """WEBVTT

00:00:00.500 --> 00:00:02.000
Hello from the harbour.

00:00:03.000 --> 00:00:04.500
Boats come in.
"""


def test_sidecar_audio_and_subtitles_are_served(tmp_path: Path) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=6, width=320, height=240)
    dub = tmp_path / "dub.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000:duration=6",
           str(dub))
    subs = tmp_path / "subs.vtt"
    subs.write_text(VTT)
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    proc = env.run("ingest", str(master), "--id", "langs", "--ladder", "240:300",
                   "--audio", f"fr={dub}", "--subtitles", f"en={subs}", "--json")
    assert proc.returncode == 0, proc.stderr
    ids = {r["id"]: r for r in json.loads(proc.stdout)["renditions"]}
    assert {"v240", "audio", "storyboard"} <= set(ids) and len(ids) == 5, ids
    port = free_port()
    server = env.serve(port)
    try:
        base = f"http://127.0.0.1:{port}/vod/langs"
        with urllib.request.urlopen(f"{base}/master.m3u8", timeout=10) as resp:
            playlist = m3u8.loads(resp.read().decode())
        media = {(m.type, m.language): m for m in playlist.media}
        assert ("AUDIO", "fr") in media and ("SUBTITLES", "en") in media, playlist.dumps()
        sub = media[("SUBTITLES", "en")]
        with urllib.request.urlopen(f"{base}/{sub.uri}", timeout=10) as resp:
            cues = m3u8.loads(resp.read().decode())
        first = cues.segments[0].uri
        assert first.endswith(".vtt")
        rid = sub.uri.split("/")[0]
        with urllib.request.urlopen(f"{base}/{rid}/{first}", timeout=10) as resp:
            text = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/vtt")
        assert text.startswith("WEBVTT") and "Hello from the harbour." in text
        with urllib.request.urlopen(f"{base}/manifest.mpd", timeout=10) as resp:
            mpd = resp.read().decode()
        assert 'lang="fr"' in mpd and "text/vtt" in mpd
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_bad_subtitle_file_is_refused_with_its_line(tmp_path: Path) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=240)
    bad = tmp_path / "bad.srt"
    bad.write_text("1\n00:00:02,000 --> 00:00:01,000\nbackwards\n")
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    proc = env.run("ingest", str(master), "--id", "badsubs", "--ladder", "240:300",
                   "--subtitles", f"en={bad}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "bad.srt:2" in lines[0], lines
    missing = env.run("ingest", str(master), "--id", "nosubs", "--subtitles",
                      f"en={tmp_path / 'nope.vtt'}")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert env.run("status", "nosubs").returncode == 1  # refused before anything was kept
