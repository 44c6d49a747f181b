"""A phone's portrait capture packaged without re-encoding (`cdlc ingest --copy`),
played by hls.js, dash.js and Shaka through the nginx edge. The master stores
its pictures sideways (320x180, the top half white) with a display matrix that
turns them; the copy keeps them as coded and writes the same quarter turn into
its tkhd. Before, it wrote a unity matrix and the asset played sideways; then the
copy refused such masters.

The judge is Chromium itself: each player's <video> must show what Chromium shows
playing the master file directly (same size, the white half on the same side),
and the manifests must state the size a viewer sees (180x320)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cdn import tokens
from tests.e2e.conftest import KEY, Stack, serve_files
from tests.e2e.test_players import wait
from tests.media import make_rotated_master

ASSET = "portraitcopy"

# Draws the <video> into a canvas: its size, and which side is white (the coded
# top half, turned: left for a quarter turn one way, right for the other).
_LOOK = """(v) => {
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const at = (x, y) => g.getImageData(Math.floor(x * c.width), Math.floor(y * c.height),
                                      1, 1).data[0];
  return {size: [v.videoWidth, v.videoHeight],
          white: {left: at(0.25, 0.5) > 128, right: at(0.75, 0.5) > 128,
                  top: at(0.5, 0.25) > 128, bottom: at(0.5, 0.75) > 128}};
}"""

_REFERENCE_PAGE = b"<!doctype html><video id=video muted playsinline src=/master.mp4></video>"


@pytest.fixture(scope="module")
def portrait(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rotated master, ingested with --copy into the stack's data dir."""
    master = make_rotated_master(tmp_path_factory.mktemp("portrait") / "phone.mp4",
                                 seconds=6.0, rotate=90)
    cdlc = Path(sys.executable).parent / "cdlc"
    env = {**os.environ, "CDLC_DATA_DIR": str(stack.origin.data_dir)}
    proc = subprocess.run([str(cdlc), "ingest", str(master), "--id", ASSET, "--copy",
                           "--segment-seconds", "2", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return master


def _url(stack: Stack, manifest: str) -> str:
    token = tokens.sign_for(KEY, ASSET, 3600)
    return f"{stack.edge.url}/vod/{ASSET}/{manifest}?token={token}"


def _reference(browser_context: Any, master: Path) -> dict[str, Any]:
    """What Chromium shows playing the master itself (a page of the same origin as
    the file, so the canvas may be read)."""
    files = {"/ref.html": (_REFERENCE_PAGE, "text/html"),
             "/master.mp4": (master.read_bytes(), "video/mp4")}
    with serve_files(files) as base:
        page = browser_context.new_page()
        try:
            page.goto(f"{base}/ref.html")
            page.evaluate("document.getElementById('video').play()")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5",
                                   timeout=20_000, polling=100)
            look: dict[str, Any] = page.evaluate(_LOOK, page.locator("#video").element_handle())
            return look
        finally:
            page.close()


def test_the_manifests_state_the_size_a_viewer_sees(stack: Stack, portrait: Path) -> None:
    with urllib.request.urlopen(_url(stack, "master.m3u8"), timeout=10) as resp:
        playlist = resp.read().decode()
    assert "RESOLUTION=180x320" in playlist, playlist
    with urllib.request.urlopen(_url(stack, "manifest.mpd"), timeout=10) as resp:
        mpd = resp.read().decode()
    assert 'width="180"' in mpd and 'height="320"' in mpd, mpd


@pytest.mark.parametrize("player", ["hlsjs", "dashjs", "shaka"])
def test_players_show_the_copy_as_chromium_shows_the_master(
        stack: Stack, browser_context: Any, page_origin: str, portrait: Path,
        player: str) -> None:
    reference = _reference(browser_context, portrait)
    assert reference["size"] == [180, 320], reference  # Chromium turns the master
    assert reference["white"]["left"] != reference["white"]["right"], reference
    page = browser_context.new_page()
    try:
        src = _url(stack, "master.m3u8" if player == "hlsjs" else "manifest.mpd")
        page.goto(f"{page_origin}/player.html?player={player}&src={quote(src, safe='')}")
        wait(page, "document.getElementById('video').currentTime > 0.5", f"{player} playing", 30)
        look = page.evaluate(_LOOK, page.locator("#video").element_handle())
        errors = page.evaluate("E2E.errors")
        assert not [e for e in errors if e["fatal"]], errors
        print(json.dumps({"player": player, "copy": look, "master": reference}))
        assert look == reference
    finally:
        page.close()
