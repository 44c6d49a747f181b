"""The harness page (/player.html) with one player on one manifest, for tests
that pin a rendition through the player's own API and judge what then plays."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote


@contextlib.contextmanager
def harness_page(browser_context: Any, page_origin: str, player: str,
                 src: str, start: str = "") -> Iterator[Any]:
    """The page with ``player`` on ``src``, once the player has its manifest; the
    page's last console lines are printed when the test fails inside. ``start``:
    the codec family (e.g. ``av01``) hls.js begins with."""
    page = browser_context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    first = f"&start={quote(start, safe='')}" if start else ""
    try:
        page.goto(f"{page_origin}/player.html?player={player}&src={quote(src, safe='')}"
                  + first)
        page.wait_for_function("E2E.ready", timeout=20_000)
        yield page
    except BaseException:
        print(f"{player} console:\n" + "\n".join(console[-40:]))
        raise
    finally:
        page.close()


def assert_plays(page: Any, holds: str) -> None:
    """``holds`` (a JS condition on what plays) comes true, the picture's time then
    moves on 1.5 s with it still true, and the player reported no fatal error."""
    page.wait_for_function(holds, timeout=15_000)
    start = page.evaluate("document.getElementById('video').currentTime")
    page.wait_for_function(
        f"document.getElementById('video').currentTime > {start} + 1.5", timeout=15_000)
    assert page.evaluate(holds) is True, holds
    errors = page.evaluate("E2E.errors")
    assert not [e for e in errors if e["fatal"]], errors
