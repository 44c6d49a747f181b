"""The e2e stack: a real CMAF asset (`cdlc ingest`), the real origin with playback
tokens on (`cdlc serve`), a real nginx edge (cdn/nginx.py) in front of it, and
headless Chromium (Debian's) driven by Playwright, with the players from
node_modules (package.json) served to the page by a small file server of the test."""

from __future__ import annotations

import contextlib
import http.server
import mimetypes
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdn import tokens
from cdn.edge import NGINX, NginxEdge
from tests.e2e.asset import DEFAULT_LADDER, BuiltAsset, cdlc_ingest, make_asset
from tests.e2e.servers import ROOT, OriginProcess

CHROMIUM = os.environ.get("CDLC_CHROMIUM", "/usr/bin/chromium")
PAGES = Path(__file__).resolve().parent / "pages"
NODE_MODULES = ROOT / "node_modules"
OUTPUT = ROOT / "test-output" / "e2e"
KEY = b"e2e-signing-key"
ASSET = "e2edemo"

# What the page may load under /lib/: one file per player, pinned by package.json.
LIBS = {
    "hls.min.js": NODE_MODULES / "hls.js" / "dist" / "hls.min.js",
    "dash.all.min.js": NODE_MODULES / "dashjs" / "dist" / "modern" / "umd" / "dash.all.min.js",
    "shaka-player.compiled.js": NODE_MODULES / "shaka-player" / "dist" /
    "shaka-player.compiled.js",
}

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)


def _missing() -> str | None:
    for tool in (NGINX, "ffmpeg"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}"
    lost = [str(p) for p in LIBS.values() if not p.is_file()]
    if lost:
        return f"players not installed (make node): {lost[0]}"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright (Python) not installed"
    return None


@dataclass
class Stack:
    edge: NginxEdge
    origin: OriginProcess
    asset: BuiltAsset
    token: str

    def url(self, manifest: str) -> str:
        return f"{self.edge.url}/vod/{self.asset.asset_id}/{manifest}?token={self.token}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    why = _missing()
    if why:
        # The players are the final judges: missing parts fail, never skip silently.
        pytest.fail(f"{why}; `make setup` installs it")
    data = tmp_path_factory.mktemp("e2e-data")
    # The asset comes from the real pipeline (`cdlc ingest`); CDLC_E2E_ASSET=ffmpeg
    # uses the ffmpeg-made one instead (players and edge alone, pipeline aside).
    if os.environ.get("CDLC_E2E_ASSET", "ingest") == "ffmpeg":
        asset = make_asset(data, ASSET, seconds=12)
    else:
        from tests.media import make_master

        master = make_master(data / "master.mp4", seconds=12, width=640, height=360,
                             fps="25")
        ingested = cdlc_ingest(data, ASSET, master, DEFAULT_LADDER)
        if ingested is None:
            pytest.fail("cdlc ingest failed (see the output above); "
                        "CDLC_E2E_ASSET=ffmpeg tests the players without the pipeline")
        asset = ingested
    print(f"\ne2e asset {asset.asset_id} from {asset.source}: {asset.renditions}")
    origin = OriginProcess(data, signing_key=KEY, cli=True).start()  # `cdlc serve`
    edge = NginxEdge(origin.url, tmp_path_factory.mktemp("e2e-edge"), signing_key=KEY,
                     worker_processes=1)
    try:
        edge.start()
        yield Stack(edge, origin, asset, tokens.sign_for(KEY, asset.asset_id, 3600))
    finally:
        edge.stop()
        origin.stop()


@contextlib.contextmanager
def serve_files(files: dict[str, tuple[bytes, str]]) -> Iterator[str]:
    """``files`` (path -> body, Content-Type) on a loopback port of their own, never
    cached; anything else is a 404. Yields the base URL."""

    class Files(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = files.get(self.path.split("?", 1)[0])
            if found is None:
                self.send_error(404)
                return
            body, ctype = found
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def page_origin() -> Iterator[str]:
    """The players' pages (/player.html, /harness.js, /lib/<player file>) on their
    own loopback port: a page on another origin than the edge (CORS is real), in the
    same address space (Chromium's local-network checks would stop a non-local page
    from reaching 127.0.0.1)."""
    paths = {f"/lib/{name}": file for name, file in LIBS.items()}
    paths |= {f"/{name}": PAGES / name for name in ("player.html", "harness.js")}
    files = {path: (file.read_bytes(),
                    mimetypes.guess_type(file.name)[0] or "application/octet-stream")
             for path, file in paths.items() if file.is_file()}  # missing: 404, as asked
    with serve_files(files) as url:
        yield url


# Module scope, not session: Playwright's sync API keeps an asyncio loop marked as
# running in this thread while it is open, which would break every async test after it.
@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    why = _missing()
    if why:
        # The players are the final judges: missing parts fail, never skip silently.
        pytest.fail(f"{why}; `make setup` installs it")
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # A new, empty profile for this run (--user-data-dir).
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 660, "height": 400},
        )
        try:
            yield context
        finally:
            context.close()
