"""The console in headless Chromium (Debian's, driven by Playwright) against a real
origin that runs real jobs (InProcessExecutor): sign in, upload a master through
the page (tus-js-client), watch it reach ready from the live stream without a
reload, open its page, play the preview (hls.js), delete it. Screenshots go to
test-output/console/; what must be visible is checked as a list of texts."""

from __future__ import annotations

import asyncio
import base64
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.console.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OUTPUT,
    fits_the_screen,
    invisible_texts,
    require_browser,
)
from tests.console.conftest import API_KEY, build_app
from tests.media import make_master

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class ThreadOrigin:
    """The origin app on 127.0.0.1 in a thread of its own (its own event loop), so
    the test can drive Playwright's sync API in the main thread."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            app = build_app(self.data, jobs="run", max_upload_bytes=256 * 2**20)[0]
            runner = web.AppRunner(app)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __enter__(self) -> ThreadOrigin:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[ThreadOrigin]:
    require_browser()  # the browser is the judge: missing parts fail, never skip
    with ThreadOrigin(tmp_path / "data") as o:
        yield o


def test_console_signin_upload_live_ready_preview_delete(
        origin: ThreadOrigin, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    master = make_master(tmp_path / "harbour.mp4", seconds=8, width=640, height=360, fps="25")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            # Chromium logs every answer >= 400 as a console error: those are
            # checked one by one in `refused` instead.
            page.on("console", lambda m: errors.append(f"console: {m.text}")
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None)
            refused: list[tuple[str, str, int]] = []
            page.on("response", lambda r: refused.append(
                (r.request.method, r.url.split("?")[0].split(origin.url, 1)[-1], r.status))
                if r.status >= 400 else None)
            page.goto(origin.url + "/console/")

            # Sign in: a wrong key is refused, the right one opens the console.
            expect(page.get_by_label("API key or token")).to_be_visible()
            page.get_by_label("API key or token").fill("wrong")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#signin-error")).to_contain_text("refused")
            assert refused == [("GET", "/v1/console/whoami", 401)], refused
            refused.clear()
            page.get_by_label("API key or token").fill(API_KEY)
            page.keyboard.press("Enter")
            expect(page.locator("#live-state")).to_have_text("live")

            # Keyboard: Tab reaches the drop zone, and focus is visible there.
            for _ in range(25):
                if page.evaluate("document.activeElement.id") == "drop":
                    break
                page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "drop"
            ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert ring not in ("none", ""), ring
            # Enter opens the file picker. Chromium drops a picker request that comes
            # while the page is still busy (a loaded machine): press again then.
            for attempt in range(3):
                try:
                    with page.expect_file_chooser(timeout=10_000) as chooser:
                        page.keyboard.press("Enter")
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    page.focus("#drop")
            assert chooser.value.is_multiple()

            # Record every state the asset's row shows, and that the page never reloads.
            page.evaluate("""() => {
                window.__noReload = true; window.__states = [];
                new MutationObserver(() => {
                  for (const r of document.querySelectorAll('#asset-rows tr')) {
                    const s = r.dataset.state;
                    if (window.__states.at(-1) !== s) window.__states.push(s);
                  }
                }).observe(document.getElementById('asset-rows'), {childList: true, subtree: true});
            }""")
            page.get_by_label("Ladder").fill("240:300")
            # medium: a job of a few seconds, so the row is seen moving before it is
            # ready even on a fast machine (ultrafast finished before the row showed)
            page.get_by_label("Preset").select_option("medium")
            # Drag and drop: a real File in a DataTransfer, dropped on the drop zone.
            page.evaluate("""([name, b64]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], name, {type: 'video/mp4'}));
                const drop = document.getElementById('drop');
                drop.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true}));
                drop.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
            }""", [master.name, base64.b64encode(master.read_bytes()).decode()])
            done = page.locator("li.upload[data-done=true]")
            expect(done).to_be_visible(timeout=30_000)
            asset_id = done.locator("a").inner_text()
            assert asset_id
            row = page.locator(f'#asset-rows tr[data-id="{asset_id}"]')
            expect(row).to_have_attribute("data-state", "ready", timeout=90_000)
            states = page.evaluate("window.__states")
            assert page.evaluate("window.__noReload") is True
            assert states[-1] == "ready" and len(states) >= 2, states  # seen moving, live
            expect(row.locator("progress")).to_have_attribute("value", "1")
            page.screenshot(path=str(OUTPUT / "list.png"), full_page=True)
            missing = invisible_texts(page, ["Upload masters", "Drop video masters here",
                                            "harbour.mp4", "uploaded; job started", asset_id,
                                            "Assets", "ready", "100 %", "8.0 s"])
            assert not missing, f"not visible on the list page: {missing}"

            # The asset page: renditions, URLs, the preview plays.
            row.get_by_role("link", name=asset_id).click()
            expect(page.locator("#asset-title")).to_have_text(asset_id)
            expect(page.locator("#rendition-rows tr")).to_have_count(3)  # + the storyboard
            page.wait_for_function("() => document.getElementById('preview').readyState >= 2",
                                   timeout=30_000)  # hls.js attached and buffered
            page.evaluate("document.getElementById('preview').play()")
            page.wait_for_function(
                "() => document.getElementById('preview').currentTime > 0.5", timeout=30_000)
            page.screenshot(path=str(OUTPUT / "asset.png"), full_page=True)
            missing = invisible_texts(page, [
                asset_id, "ready", "Preview", "Playback URLs", f"/vod/{asset_id}/master.m3u8",
                f"/vod/{asset_id}/manifest.mpd", "Renditions", "426\u00d7240", "avc1.", "mp4a.40.2",
                "kbit/s", "Retry", "Delete…"])
            assert not missing, f"not visible on the asset page: {missing}"
            assert page.locator("#retry").is_disabled()  # only a failed job is retried
            assert page.locator("#chart canvas").count() == 1
            # No watch events here: the stats section says so in one line.
            expect(page.locator("#stats-empty")).to_be_visible()
            assert page.locator("#stats").is_hidden()
            note = page.locator("#stats-empty").inner_text()
            assert note == "No viewing stats yet." or note.startswith("Stats unavailable: "), note

            # Phone-sized screen: one column, nothing wider than the screen.
            page.set_viewport_size({"width": 375, "height": 740})
            page.screenshot(path=str(OUTPUT / "asset-phone.png"), full_page=True)
            assert fits_the_screen(page)

            # Delete, through the confirm dialog; the list drops the row live.
            page.set_viewport_size({"width": 1100, "height": 900})
            page.get_by_role("button", name="Delete…").click()
            dialog = page.locator("dialog#confirm")
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text(f"Delete {asset_id}?")
            dialog.get_by_role("button", name="Delete", exact=True).click()
            expect(page.locator("#list-view")).to_be_visible()
            expect(row).to_have_count(0, timeout=10_000)
            assert not errors, errors
            # This origin keeps no watch events: its stats route answers 503 (or is
            # absent, 404), and the page says there are no stats instead of failing.
            assert {(m, p) for m, p, _ in refused} <= {("GET", f"/v1/assets/{asset_id}/stats")}, \
                refused
        finally:
            browser.close()
    req = urllib.request.Request(f"{origin.url}/v1/assets/{asset_id}",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("the asset is still there after the delete")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
