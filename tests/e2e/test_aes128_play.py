"""An HLS AES-128 asset (whole segments, AES-128-CBC, engine/segment_crypto.py)
plays in hls.js in headless Chromium: hls.js reads EXT-X-KEY METHOD=AES-128 from
the media playlists, fetches the raw key from the origin's key route
(/keys/{asset}/{kid}, with the viewer's playback token), decrypts each segment
(the IV its media sequence number) and the video plays. A key request without the
token is refused (403) and nothing plays. Beside the browser: ffprobe finds no
sample in a segment as served, and the same segment decrypted in Python with the
key is the clear CMAF fragment ffprobe reads.

The asset comes from the engine's ingest (the application layer every front door
calls); the origin is the real app (origin.app.create_app, key routes included),
on loopback in a thread of this test, as in test_encrypted_play.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from cdn.tokens import sign_for
from engine.pipeline import Services, ingest
from engine.segment_crypto import decrypt_segment, sequence_iv
from metadata import open_cache, open_objects, open_store
from metadata.jobs import JobRequest
from metadata.keys import AES_128, ContentKey, open_key_store
from tests.e2e.local_page import local_page
from tests.e2e.test_encrypted_play import SIGNING, KeyOrigin
from tests.media import make_master

ASSET = "e2eaes"

# The page: hls.js on ?src=; with ?dropKeyToken the key requests go out without
# their token (the refusal test), everything else as the playlists say.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>aes-128</title></head>
<body><video id="video" muted playsinline width="640" height="360"></video>
<script src="/lib/hls.min.js"></script>
<script>
'use strict';
const params = new URLSearchParams(location.search);
const E2E = window.E2E = {errors: [], keyUris: [], keysLoaded: 0, ready: false};
const video = document.getElementById('video');
video.addEventListener('error', () => E2E.errors.push('media element error ' +
  (video.error ? video.error.code + ' ' + video.error.message : '?')));
const hls = new Hls({
  enableWorker: true,
  xhrSetup: (xhr, url) => {
    if (!url.includes('/keys/')) return;
    const u = new URL(url);
    if (params.has('dropKeyToken')) u.searchParams.delete('token');
    E2E.keyUris.push(u.href);
    xhr.open('GET', u.href, true);
  },
});
hls.on(Hls.Events.ERROR, (_, d) => {
  if (d.fatal) E2E.errors.push('hls.js ' + d.type + ' ' + d.details +
    (d.response ? ' ' + d.response.code : ''));
});
hls.on(Hls.Events.KEY_LOADED, () => { E2E.keysLoaded += 1; });
hls.on(Hls.Events.MANIFEST_PARSED, () => {
  E2E.ready = true;
  video.play().catch((e) => E2E.errors.push('play: ' + e.message));
});
hls.loadSource(params.get('src'));
hls.attachMedia(video);
</script></body></html>
"""


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    with local_page("aes128.html", PAGE, ["hls.min.js"]) as url:
        yield url


async def _ingest(data: Path, master: Path) -> ContentKey:
    store, objects = open_store("", data), open_objects("", data)
    services = Services(store=store, objects=objects, cache=open_cache(""),
                        work_dir=data / "work")
    try:
        await ingest(services, ASSET, master,
                     JobRequest(ladder="360:800,180:300", segment_seconds=2.0,
                                preset="ultrafast", encryption=AES_128))
    finally:
        await store.close()
        await objects.close()
    keys = open_key_store("", data)
    try:
        (key,) = await keys.for_asset(ASSET)
    finally:
        await keys.close()
    return key


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeyOrigin, ContentKey]]:
    root = tmp_path_factory.mktemp("e2e-aes")
    master = make_master(root / "master.mp4", seconds=8, width=640, height=360, fps="25")
    # On a thread of its own: Playwright's sync API marks this thread's loop running.
    with ThreadPoolExecutor(1) as pool:
        key = pool.submit(asyncio.run, _ingest(root / "data", master)).result(300)
    server = KeyOrigin(root / "data").start()
    try:
        yield server, key
    finally:
        server.stop()


def _open(browser_context: Any, page_url: str, origin: KeyOrigin, token: str,
          **extra: str) -> Any:
    query = {"src": f"{origin.url}/vod/{ASSET}/master.m3u8?token={token}", **extra}
    page = browser_context.new_page()
    page.goto(f"{page_url}?{urlencode(query)}")
    return page


def test_aes128_asset_plays_in_hlsjs(browser_context: Any, page_url: str,
                                     served: tuple[KeyOrigin, ContentKey]) -> None:
    origin, key = served
    token = sign_for(SIGNING, ASSET, 600)
    page = _open(browser_context, page_url, origin, token)
    try:
        page.wait_for_function("document.getElementById('video').currentTime > 2.5"
                               " || E2E.errors.length > 0", timeout=30_000)
        state = page.evaluate("({errors: E2E.errors, keyUris: E2E.keyUris,"
                              " keysLoaded: E2E.keysLoaded,"
                              " t: document.getElementById('video').currentTime,"
                              " h: document.getElementById('video').videoHeight})")
        assert state["errors"] == [], json.dumps(state)
        assert state["t"] > 2.5 and state["h"] in (180, 360)
        # The key came from the key route the playlist names, with the token.
        assert state["keysLoaded"] >= 1
        assert set(state["keyUris"]) == {
            f"{origin.url}/keys/{ASSET}/{key.kid_hex}?token={token}"}
        assert f"GET /keys/{ASSET}/{key.kid_hex} 200" in origin.requests, origin.requests
    finally:
        page.close()


def test_a_key_request_without_the_token_is_refused(
        browser_context: Any, page_url: str, served: tuple[KeyOrigin, ContentKey]) -> None:
    origin, key = served
    before = len(origin.requests)
    page = _open(browser_context, page_url, origin, sign_for(SIGNING, ASSET, 600),
                 dropKeyToken="1")
    try:
        page.wait_for_function("E2E.errors.length > 0", timeout=30_000)
        errors = page.evaluate("E2E.errors")
        t = page.evaluate("document.getElementById('video').currentTime")
        assert any("keyLoadError" in e for e in errors), errors
        assert t < 0.5
        assert f"GET /keys/{ASSET}/{key.kid_hex} 403" in origin.requests[before:]
    finally:
        page.close()
    # The same outside a browser: no token, or another asset's, is a 403 with no key.
    for query in ("", f"?token={sign_for(SIGNING, 'another', 600)}"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{origin.url}/keys/{ASSET}/{key.kid_hex}{query}",
                                   timeout=10)
        assert refused.value.code == 403 and key.key not in refused.value.read()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


def _packets(path: Path) -> tuple[int, int]:
    """(ffprobe's exit code, the video packets it counts) for an fMP4 file."""
    proc = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                           "-show_entries", "stream=nb_read_packets", "-of", "json", str(path)],
                          capture_output=True, text=True, timeout=60)
    streams = json.loads(proc.stdout or "{}").get("streams") or [{}]
    return proc.returncode, int(streams[0].get("nb_read_packets") or 0)


def test_a_served_segment_decodes_only_with_the_key(
        served: tuple[KeyOrigin, ContentKey], tmp_path: Path) -> None:
    origin, key = served
    token = sign_for(SIGNING, ASSET, 600)
    base = f"{origin.url}/vod/{ASSET}/v360"
    init, sealed = _get(f"{base}/init.mp4?token={token}"), _get(f"{base}/2.m4s?token={token}")
    raw = tmp_path / "raw.mp4"
    raw.write_bytes(init + sealed)
    assert _packets(raw)[1] == 0  # ffprobe finds no sample in the segment as served
    clear = decrypt_segment(sealed, key.key, sequence_iv(2))
    assert clear[4:8] == b"styp" and b"moof" in clear[:200]
    decrypted = tmp_path / "decrypted.mp4"
    decrypted.write_bytes(init + clear)
    rc, packets = _packets(decrypted)
    assert rc == 0 and packets == 50  # 2 s at 25 fps: the whole fragment
