"""An encrypted (CMAF 'cenc') asset plays in Shaka Player (DASH) in headless
Chromium: the browser's ClearKey CDM (EME) asks the origin's license route
(/keys/{asset}/clearkey, with the viewer's playback token) for the key, and the
video decrypts and plays. Without a valid token for that asset the license request
is refused and nothing plays.

The asset comes from `cdlc ingest --encryption cenc`; the origin is the real app
(origin.app.create_app, which installs the key routes of origin.keys),
served on loopback from a thread of this test."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cdn.edge import free_port
from cdn.tokens import sign_for
from tests.conftest import make_env
from tests.e2e.local_page import local_page
from tests.media import make_master

SIGNING = b"e2e-encrypted-signing-key"
ASSET = "e2eenc"          # cenc (AES-CTR)
CBCS_ASSET = "e2ecbcs"    # cbcs (AES-CBC, 1:9 pattern)

# The page: Shaka Player, the license server set to the origin's ClearKey route
# with the viewer's token (see the comment in the page for why the page names it).
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>encrypted</title></head>
<body><video id="video" muted playsinline width="640" height="360"></video>
<script src="/lib/shaka-player.compiled.js"></script>
<script>
'use strict';
const params = new URLSearchParams(location.search);
const E2E = window.E2E = {errors: [], licenses: 0, licenseUris: [], ready: false};
const video = document.getElementById('video');
video.addEventListener('error', () => E2E.errors.push('media element error ' +
  (video.error ? video.error.code + ' ' + video.error.message : '?')));
(async () => {
  try {
    shaka.polyfill.installAll();
    const player = new shaka.Player();
    await player.attach(video);
    player.addEventListener('error', (e) => E2E.errors.push(
      'shaka ' + e.detail.code + ' ' + JSON.stringify(e.detail.data || []).slice(0, 300)));
    player.getNetworkingEngine().registerResponseFilter((type, response) => {
      if (type === shaka.net.NetworkingEngine.RequestType.LICENSE) E2E.licenses += 1;
    });
    // The MPD's ClearKey dashif:Laurl is a path from the root (/keys/...), which
    // Shaka fetches against the page's origin instead of resolving it against the
    // MPD (RFC 3986 §5.2), and for ClearKey Shaka prefers a manifest's license URL
    // over a configured one. So the page resolves it the standard way in a request
    // filter: the license request goes where the MPD says, on the MPD's origin.
    player.getNetworkingEngine().registerRequestFilter((type, request) => {
      if (type !== shaka.net.NetworkingEngine.RequestType.LICENSE) return;
      const given = new URL(request.uris[0], location.href);
      const url = new URL(given.pathname + given.search, params.get('src'));
      // The refusal test swaps the viewer's token for another one.
      if (params.has('licenseToken')) url.searchParams.set('token', params.get('licenseToken'));
      request.uris = [url.href];
      E2E.licenseUris.push(request.uris[0]);
    });
    await player.load(params.get('src'));
    E2E.ready = true;
    E2E.keySystem = player.keySystem();
    await video.play();
  } catch (e) {
    E2E.errors.push('start: ' + (e && e.code ? 'shaka ' + e.code + ' ' +
      JSON.stringify(e.data || []).slice(0, 300) : String(e && e.message || e)));
  }
})();
</script></body></html>
"""


@dataclass
class KeyOrigin:
    """The origin app with key routes, on its own event loop in a thread."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        from metadata import open_cache, open_objects, open_store
        from origin.app import OriginDeps, create_app

        deps = OriginDeps(store=open_store("", self.data_dir),
                          objects=open_objects("", self.data_dir), cache=open_cache(""),
                          signing_key=SIGNING, close_backends=True)
        app = create_app(deps)  # the key routes come with it (over the key store beside)

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            self.requests.append(f"{request.method} {request.path} {response.status}")
            return response

        app.middlewares.append(record)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> KeyOrigin:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(20)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(20)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    with local_page("encrypted.html", PAGE, ["shaka-player.compiled.js"]) as url:
        yield url


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyOrigin]:
    root = tmp_path_factory.mktemp("e2e-enc")
    master = make_master(root / "master.mp4", seconds=8, width=640, height=360, fps="25")
    env = make_env(root / "data", CDLC_PRESET="ultrafast")
    for asset_id, scheme in ((ASSET, "cenc"), (CBCS_ASSET, "cbcs")):
        proc = env.run("ingest", str(master), "--id", asset_id, "--ladder", "360:800,180:300",
                       "--segment-seconds", "2", "--encryption", scheme, "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
    server = KeyOrigin(env.data_dir).start()
    try:
        yield server
    finally:
        server.stop()


def _open(browser_context: Any, page_url: str, origin: KeyOrigin, token: str,
          license_token: str | None = None, asset_id: str = ASSET) -> Any:
    from urllib.parse import urlencode

    query = {"src": f"{origin.url}/vod/{asset_id}/manifest.mpd?token={token}"}
    if license_token is not None:
        query["licenseToken"] = license_token
    page = browser_context.new_page()
    page.goto(f"{page_url}?{urlencode(query)}")
    return page


@pytest.mark.parametrize("asset_id", [ASSET, CBCS_ASSET])
def test_encrypted_asset_plays_in_shaka_through_clearkey(
        browser_context: Any, page_url: str, origin: KeyOrigin, asset_id: str) -> None:
    token = sign_for(SIGNING, asset_id, 600)
    page = _open(browser_context, page_url, origin, token, asset_id=asset_id)
    try:
        page.wait_for_function("document.getElementById('video').currentTime > 2.5"
                               " || E2E.errors.length > 0", timeout=30_000)
        state = page.evaluate("({errors: E2E.errors, licenses: E2E.licenses,"
                              " licenseUris: E2E.licenseUris,"
                              " keySystem: E2E.keySystem || '',"
                              " t: document.getElementById('video').currentTime,"
                              " h: document.getElementById('video').videoHeight})")
        assert state["errors"] == [], json.dumps(state)
        assert state["t"] > 2.5 and state["h"] in (180, 360)
        assert state["keySystem"] == "org.w3.clearkey"
        # The key came from the license route the MPD names, with the token.
        assert state["licenses"] >= 1
        assert set(state["licenseUris"]) == {
            f"{origin.url}/keys/{asset_id}/clearkey?token={token}"}
        assert f"POST /keys/{asset_id}/clearkey 200" in origin.requests, origin.requests
    finally:
        page.close()


def test_without_a_token_for_the_asset_nothing_plays(browser_context: Any, page_url: str,
                                                     origin: KeyOrigin) -> None:
    # The manifest and segments with the asset's token; the license request with
    # another asset's: the key is refused, so nothing decrypts.
    before = len(origin.requests)
    page = _open(browser_context, page_url, origin, sign_for(SIGNING, ASSET, 600),
                 sign_for(SIGNING, "someone-else", 600))
    try:
        page.wait_for_function("E2E.errors.length > 0", timeout=30_000)
        errors = page.evaluate("E2E.errors")
        t = page.evaluate("document.getElementById('video').currentTime")
        # Shaka's LICENSE_REQUEST_FAILED (6007) on the 403.
        assert any("shaka 6007" in e for e in errors), errors
        assert t < 0.5
        assert f"POST /keys/{ASSET}/clearkey 403" in origin.requests[before:]
    finally:
        page.close()
