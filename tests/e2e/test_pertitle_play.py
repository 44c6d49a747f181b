"""A per-title asset (``--ladder auto``) whose hull kept one size down the ladder:
its two 480p rungs differ only in bitrate. hls.js (HLS) and dash.js and Shaka
Player (DASH) in headless Chromium are pinned to the lower one through their own
APIs; the judges are the player's active variant (the lower bitrate, the
rendition with its bitrate in its id) and the <video> element's time advancing."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdn.edge import free_port
from tests.conftest import CdlcEnv, make_env
from tests.e2e.pinned import assert_plays, harness_page
from tests.media import still_master

# Pin the lowest-bandwidth video variant; answer what each variant is.
PIN = {
    "hlsjs": """() => {
        const levels = window.hls.levels;
        const low = levels.reduce((b, l, i) => (l.bitrate < levels[b].bitrate ? i : b), 0);
        window.hls.currentLevel = low;
        return levels.map((l) => [l.height, l.bitrate]);
    }""",
    "dashjs": """() => {
        const p = window.dashPlayer;
        const reps = p.getRepresentationsByType('video');
        const low = reps.reduce((b, r, i) => (r.bandwidth < reps[b].bandwidth ? i : b), 0);
        p.updateSettings({streaming: {abr: {autoSwitchBitrate: {video: false}}}});
        p.setRepresentationForTypeByIndex('video', low, true);
        return reps.map((r) => [r.height, r.bandwidth]);
    }""",
    "shaka": """() => {
        const p = window.shakaPlayer;
        p.configure({abr: {enabled: false}});
        const tracks = p.getVariantTracks();
        const low = tracks.reduce((b, t) => (t.videoBandwidth < b.videoBandwidth ? t : b));
        p.selectVariantTrack(low, true);
        return tracks.map((t) => [t.height, t.videoBandwidth]);
    }""",
}
# The rendition id of what plays now.
PLAYING = {
    "hlsjs": "(() => { const h = window.hls; const l = h.levels[h.currentLevel];"
             " return l && h.currentLevel >= 0 ? String(l.url || l.uri || '') : ''; })()",
    "dashjs": "(() => { const r = window.dashPlayer.getCurrentRepresentationForType('video');"
              " return r ? r.id : ''; })()",
    "shaka": "(window.shakaPlayer.getVariantTracks().find((t) => t.active) || {})"
             ".originalVideoId || ''",
}


@pytest.fixture(scope="module")
def pertitle_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL of the asset, the lower 480p rung's id)."""
    tmp = tmp_path_factory.mktemp("pertitle-e2e")
    env: CdlcEnv = make_env(tmp / "data", CDLC_PRESET="veryfast", CDLC_ENCODER="cpu")
    master = still_master(tmp / "still.mp4", width=854, height=480, seconds=8)
    done = env.run("ingest", str(master), "--id", "pt", "--ladder", "auto",
                   "--segment-seconds", "2", "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    video = [r for r in json.loads(done.stdout)["renditions"] if r["kind"] == "video"]
    assert [r["height"] for r in video] == [480, 480], video
    low = video[1]["id"]
    assert low.startswith("v480_") and low.endswith("k"), low
    port = free_port()
    server = env.serve(port)
    try:
        base = f"http://127.0.0.1:{port}/vod/pt"
        with urllib.request.urlopen(f"{base}/master.m3u8", timeout=10) as resp:
            assert f"{low}/media.m3u8" in resp.read().decode()
        yield base, low
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(("player", "manifest"), [("hlsjs", "master.m3u8"),
                                                  ("dashjs", "manifest.mpd"),
                                                  ("shaka", "manifest.mpd")])
def test_the_lower_rung_of_one_size_plays(
    pertitle_origin: tuple[str, str], browser_context: Any, page_origin: str, player: str,
    manifest: str, tmp_path: Path,
) -> None:
    base, low = pertitle_origin
    with harness_page(browser_context, page_origin, player, f"{base}/{manifest}") as page:
        offered = page.evaluate(PIN[player])
        heights = {h for h, _ in offered}
        assert heights == {480} and len({b for _, b in offered}) == 2, offered
        assert_plays(page, f"({PLAYING[player]}).includes({json.dumps(low)})")
