"""An asset ingested with --codecs h264,av1 offers both in one MPD and in one HLS
multivariant playlist; dash.js and Shaka Player (the MPD) and hls.js and Shaka
Player (the playlist) in headless Chromium are pinned to the AV1 rendition through
their own APIs, and the judges are the player's active variant (codec av01) and the
<video> element's picture advancing."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdn.edge import free_port
from tests.conftest import CdlcEnv, make_env
from tests.e2e.pinned import assert_plays, harness_page
from tests.media import make_master

# Pin AV1 once the manifest is in (answering the video codecs offered), then
# report the codec of what plays.
PIN = {
    "hlsjs": """() => {
        const hls = window.hls;
        const av1 = hls.levels.findIndex((l) => (l.videoCodec || '').startsWith('av01'));
        // Set again while it loads, currentLevel aborts that load and the restart
        // can find no SourceBuffer (hls.js 1.7): pin only a level not loading.
        if (hls.loadLevel !== av1) hls.currentLevel = av1;
        return hls.levels.map((l) => l.videoCodec);
    }""",
    "dashjs": """() => {
        const p = window.dashPlayer;
        const track = p.getTracksFor('video').find((t) => (t.codec || '').includes('av01'));
        p.updateSettings({streaming: {abr: {autoSwitchBitrate: {video: false}}}});
        p.setCurrentTrack(track);
        return (p.getTracksFor('video') || []).map((t) => t.codec);
    }""",
    "shaka": """() => {
        const p = window.shakaPlayer;
        p.configure({abr: {enabled: false}});
        const track = p.getVariantTracks().find((t) => (t.videoCodec || '').startsWith('av01'));
        p.selectVariantTrack(track, true);
        return p.getVariantTracks().map((t) => t.videoCodec);
    }""",
}
PLAYING = {
    "hlsjs": "(() => { const h = window.hls; const l = h.levels[h.currentLevel];"
             " return l && h.currentLevel >= 0 ? l.videoCodec : ''; })()",
    "dashjs": "(() => { const r = window.dashPlayer.getCurrentRepresentationForType('video');"
              " return r ? r.codecs : ''; })()",
    "shaka": "(window.shakaPlayer.getVariantTracks().find((t) => t.active) || {}).videoCodec",
}


@pytest.fixture(scope="module")
def av1_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The asset's base URL."""
    tmp = tmp_path_factory.mktemp("av1-e2e")
    env: CdlcEnv = make_env(tmp / "data", CDLC_PRESET="veryfast", CDLC_GOP_SECONDS="2",
                            CDLC_ENCODER="cpu")
    master = make_master(tmp / "master.mp4", seconds=6, width=640, height=360, fps="25")
    done = env.run("ingest", str(master), "--id", "av1", "--ladder", "360:800",
                   "--codecs", "h264,av1", "--segment-seconds", "2", timeout=120)
    assert done.returncode == 0, done.stderr
    port = free_port()
    server = env.serve(port)
    try:
        base = f"http://127.0.0.1:{port}/vod/av1"
        with urllib.request.urlopen(f"{base}/manifest.mpd", timeout=10) as resp:
            mpd = resp.read().decode()
        assert mpd.count('contentType="video"') == 2, mpd  # one AdaptationSet per codec
        assert 'codecs="avc1.' in mpd and 'codecs="av01.' in mpd, mpd
        with urllib.request.urlopen(f"{base}/master.m3u8", timeout=10) as resp:
            hls = resp.read().decode()
        assert 'CODECS="avc1.' in hls and 'CODECS="av01.' in hls, hls
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(("player", "manifest"), [("dashjs", "manifest.mpd"),
                                                  ("shaka", "manifest.mpd"),
                                                  ("hlsjs", "master.m3u8"),
                                                  ("shaka", "master.m3u8")])
def test_av1_rendition_plays_from_the_manifest_that_offers_h264(
    av1_origin: str, browser_context: Any, page_origin: str, player: str, manifest: str,
    tmp_path: Path,
) -> None:
    # hls.js keeps the codec family it starts on (switching families in one
    # SourceBuffer fails to append): its videoPreference starts it on AV1.
    with harness_page(browser_context, page_origin, player, f"{av1_origin}/{manifest}",
                      start="av01" if player == "hlsjs" else "") as page:
        # Shaka keeps one codec family of a manifest (its own choice, AV1 here by
        # bandwidth); dash.js and hls.js list both.
        offered = page.evaluate(PIN[player])
        assert any("av01" in c for c in offered), offered
        assert_plays(page, f"({PLAYING[player]} || '').startsWith('av01')")
        quality = page.evaluate(
            "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames")
        assert quality > 20
