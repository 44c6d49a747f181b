"""hls.js, dash.js and Shaka Player play the asset through the nginx edge in headless
Chromium: 8 s of playback without a player error, a seek to the middle that
resumes, a quality switch when the rendition is forced (seen on the <video>
element's own videoHeight, not only in the player's events), every request of the
player answered by the edge without an error, and a screenshot of each in
test-output/e2e/."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import OUTPUT, Stack

PLAYERS = [
    pytest.param("hlsjs", "master.m3u8", id="hlsjs"),
    pytest.param("dashjs", "manifest.mpd", id="dashjs"),
    pytest.param("shaka", "manifest.mpd", id="shaka-dash"),
    pytest.param("shaka", "master.m3u8", id="shaka-hls"),
]
PLAY_SECONDS = 8.0


def state(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("""() => ({
        t: document.getElementById('video').currentTime,
        duration: document.getElementById('video').duration,
        height: document.getElementById('video').videoHeight,
        paused: document.getElementById('video').paused,
        rendered: E2E.rendered, switches: E2E.switches, heights: E2E.heights,
        errors: E2E.errors, log: E2E.log })""")
    return result


def wait(page: Any, condition: str, what: str, timeout: float) -> None:
    """Wait for a JS condition; on timeout fail with the page's own record."""
    try:
        # A fatal error ends the wait at once; the check below reports it.
        page.wait_for_function(f"({condition}) || E2E.errors.some((e) => e.fatal)",
                               timeout=timeout * 1000, polling=100)
    except Exception as exc:
        pytest.fail(f"{what}: not within {timeout}s ({type(exc).__name__}); page: {state(page)}")
    fatal = [e for e in state(page)["errors"] if e["fatal"]]
    assert not fatal, f"player error while waiting for {what}: {fatal}"


@pytest.mark.parametrize(("player", "manifest"), PLAYERS)
def test_player_plays_through_the_edge(
    stack: Stack, browser_context: Any, page_origin: str, player: str, manifest: str,
    request: pytest.FixtureRequest,
) -> None:
    page = browser_context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    started = time.monotonic()
    try:
        src = stack.url(manifest)
        page.goto(f"{page_origin}/player.html?player={player}&src={quote(src, safe='')}")
        wait(page, "E2E.ready && E2E.heights.length >= 2", "manifest loaded", 20)
        wait(page, "document.getElementById('video').currentTime > 0.5", "playback started", 20)

        # Force a rendition other than the one on screen; the <video> must show it.
        s = state(page)
        heights = sorted({h for h in s["heights"] if h})
        target = heights[0] if s["height"] != heights[0] else heights[-1]
        page.evaluate(f"E2E.force({target})")
        wait(page, f"document.getElementById('video').videoHeight === {target}",
             f"switch to {target}p", 15)

        wait(page, f"document.getElementById('video').currentTime >= {PLAY_SECONDS}",
             f"{PLAY_SECONDS} s of playback", 25)
        s = state(page)
        assert s["duration"] == pytest.approx(stack.asset.duration, abs=0.3)

        middle = s["duration"] / 2
        page.evaluate(f"document.getElementById('video').currentTime = {middle}")
        wait(page, f"(() => {{ const v = document.getElementById('video');"
                   f" return !v.seeking && v.currentTime >= {middle + 1.0}"
                   f" && v.currentTime < {middle + 4.0}; }})()",
             "playback resumed after the seek", 15)
        page.screenshot(path=str(OUTPUT / f"{request.node.callspec.id}.png"))

        s = state(page)
        assert len(s["rendered"]) >= 2 and target in s["rendered"], s
        assert not s["paused"]
        assert not [e for e in s["errors"] if e["fatal"]], s["errors"]
    except BaseException:
        print(f"{player} console:\n" + "\n".join(console[-40:]))
        raise
    finally:
        page.close()

    # Every request of the player went through the edge and got a good answer.
    stack.edge.reopen_logs()
    time.sleep(0.3)
    lines = [ln for ln in stack.edge.access_log.read_text().splitlines()
             if f"/vod/{stack.asset.asset_id}/" in ln]
    statuses = {int(m.group(1)) for ln in lines
                if (m := re.search(r'HTTP/[\d.]+" (\d{3}) ', ln))}
    assert lines and statuses <= {200, 206, 304}, statuses
    print(f"{player}: {time.monotonic() - started:.1f}s, rendered {s['rendered']}, "
          f"non-fatal player events: {len(s['errors'])}")
