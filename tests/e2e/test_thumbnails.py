"""The storyboard as players use it: Shaka Player and dash.js read the MPD's
thumbnail-tile AdaptationSet (through the nginx edge, with a playback token) and
hand back, for a time in the title, the sheet to load and the tile inside it; the
sheet they name loads through the edge as a JPEG whose size holds the tile. Also
the poster and the WebVTT track load through the edge."""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import quote, urljoin

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_players import wait

TILE = (160, 90)
GRID = (5, 5)


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


@pytest.mark.parametrize("player", ["shaka", "dashjs"])
def test_player_finds_the_tile_for_a_time(stack: Stack, browser_context: Any,
                                          page_origin: str, player: str) -> None:
    page = browser_context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    try:
        src = stack.url("manifest.mpd")
        page.goto(f"{page_origin}/player.html?player={player}&src={quote(src, safe='')}")
        wait(page, "E2E.ready", "manifest loaded", 20)
        at = 5.0  # the third picture of the first sheet, one every 2 s
        if player == "shaka":
            tile = page.evaluate("""async (at) => {
                const p = window.shakaPlayer;
                const [track] = p.getImageTracks();
                const t = await p.getThumbnails(track.id, at);
                return {url: t.uris[0], x: t.positionX, y: t.positionY, w: t.width,
                        h: t.height, start: t.startTime, duration: t.duration,
                        tiles: track.tilesLayout};
            }""", at)
            assert tile["tiles"] == f"{GRID[0]}x{GRID[1]}", tile
            assert tile["start"] == pytest.approx(4.0, abs=0.01), tile
            assert tile["duration"] == pytest.approx(2.0, abs=0.01), tile
        else:
            wait(page, "document.getElementById('video').currentTime > 0.2", "playback", 20)
            tile = page.evaluate("""(at) => new Promise((resolve) => {
                window.dashPlayer.provideThumbnail(at, (t) => resolve(t && {
                    url: t.url, x: t.x, y: t.y, w: t.width, h: t.height}));
            })""", at)
        assert tile is not None, console[-20:]
        assert (tile["x"], tile["y"], tile["w"], tile["h"]) == (2 * TILE[0], 0, *TILE), tile
        status, ctype, body = _get(urljoin(src, tile["url"]))
        assert (status, ctype) == (200, "image/jpeg") and body[:2] == b"\xff\xd8"
        # The JPEG's own size (SOF0 marker): a whole sheet, so the tile lies inside.
        sof = body.index(b"\xff\xc0")
        height, width = int.from_bytes(body[sof + 5:sof + 7]), int.from_bytes(body[sof + 7:sof + 9])
        assert (width, height) == (TILE[0] * GRID[0], TILE[1] * GRID[1])
    except BaseException:
        print(f"{player} console:\n" + "\n".join(console[-40:]))
        raise
    finally:
        page.close()


def test_poster_and_track_load_through_the_edge(stack: Stack) -> None:
    base = stack.url("manifest.mpd").replace("manifest.mpd", "poster.jpg")
    status, ctype, body = _get(base)
    assert (status, ctype) == (200, "image/jpeg") and body[:2] == b"\xff\xd8"
    status, ctype, text = _get(base.replace("poster.jpg", "storyboard.vtt"))
    assert status == 200 and ctype.startswith("text/vtt")
    lines = text.decode().splitlines()
    assert lines[0] == "WEBVTT" and f"?token={stack.token}#xywh=0,0,160,90" in lines[3]
    print(json.dumps({"poster_bytes": len(body), "cues": text.count(b"-->")}))
