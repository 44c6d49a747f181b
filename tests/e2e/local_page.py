"""A test page and the player libraries it loads, served from a loopback port of
their own: a real local page (a page fulfilled by Playwright's router has no
address space, and Chromium's local-network checks then block 127.0.0.1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from tests.e2e.conftest import LIBS, serve_files


@contextlib.contextmanager
def local_page(name: str, html: str, libs: Sequence[str]) -> Iterator[str]:
    """Serve ``/{name}`` (``html``) and ``/lib/{lib}`` for each of ``libs`` (keys
    of LIBS); yields the page's URL."""
    files = {f"/{name}": (html.encode(), "text/html; charset=utf-8")}
    files |= {f"/lib/{lib}": (LIBS[lib].read_bytes(), "text/javascript") for lib in libs}

    with serve_files(files) as base:
        yield f"{base}/{name}"
