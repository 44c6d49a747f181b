"""A test page and the player libraries it loads, served from a loopback port of
their own: a real local page (a page fulfilled by Playwright's router has no
address space, and Chromium's local-network checks then block 127.0.0.1)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from tests.e2e.conftest import LIBS


@contextlib.contextmanager
def local_page(name: str, html: str, libs: Sequence[str]) -> Iterator[str]:
    """Serve ``/{name}`` (``html``) and ``/lib/{lib}`` for each of ``libs`` (keys
    of LIBS); yields the page's URL."""
    files = {f"/{name}": (html.encode(), "text/html; charset=utf-8")}
    files |= {f"/lib/{lib}": (LIBS[lib].read_bytes(), "text/javascript") for lib in libs}

    class Page(http.server.BaseHTTPRequestHandler):
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

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{name}"
    finally:
        server.shutdown()
        server.server_close()
