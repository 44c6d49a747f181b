"""A real nginx edge (cdn/nginx.py) in front of a small upstream that speaks the
origin's caching contract (segments immutable for a year, manifests
short TTL, 404 for unknown assets) and counts what reaches it, so a test can tell
a cache hit from a fetch at the source, not from the edge's own say-so."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cdn.edge import NGINX, NginxEdge
from cdn.tokens import TEMPLATE_HEADER, TOKEN_PLACEHOLDER

IMMUTABLE = "public, max-age=31536000, immutable"
MANIFEST_TTL = 1


def segment_bytes(asset: str, rendition: str, name: str) -> bytes:
    """Deterministic, distinct bodies (64 KiB) so a wrong object shows up."""
    seed = hashlib.sha256(f"{asset}/{rendition}/{name}".encode()).digest()
    return seed * 2048


class FakeOrigin:
    """Assets with renditions and segments; hits[path] counts upstream requests."""

    def __init__(self) -> None:
        self.assets: dict[str, dict[str, int]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.tokens_seen: list[str | None] = []
        self.templates_asked = 0
        self.delay = 0.0
        self.forbidden: set[str] = set()
        # Paths whose body breaks off half-way (a store that dies mid-stream):
        # the whole length announced, half sent, the connection aborted.
        self.broken: set[str] = set()
        self.server: TestServer | None = None

    def add(self, asset: str, renditions: dict[str, int]) -> None:
        self.assets[asset] = renditions

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/vod/{asset}/poster.jpg", self.poster)
        app.router.add_get("/vod/{asset}/{name}", self.manifest)
        app.router.add_get("/vod/{asset}/{rendition}/{name}", self.media)
        return app

    def _count(self, request: web.Request) -> None:
        self.hits[request.path] += 1
        self.tokens_seen.append(request.query.get("token"))

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        asset = request.match_info["asset"]
        if asset not in self.assets:
            raise web.HTTPNotFound()
        # Like the origin: child URLs carry the viewer's token, or the marker of
        # its place when the edge asks for the shared template.
        template = request.headers.get(TEMPLATE_HEADER) == "1"
        self.templates_asked += template
        token = TOKEN_PLACEHOLDER if template else request.query.get("token")
        body = f"#EXTM3U\n# {request.path} {self.hits[request.path]}\n"
        if token:
            body += f"v360/media.m3u8?token={token}\n"
        return web.Response(text=body, content_type="application/vnd.apple.mpegurl",
                            headers={"Cache-Control": f"max-age={MANIFEST_TTL}"})

    async def media(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["name"] == "media.m3u8":
            return await self.manifest(request)
        self._count(request)
        if request.path in self.forbidden:
            return web.Response(status=403, headers={"Cache-Control": "max-age=60"})
        asset, rendition, name = (request.match_info[k] for k in ("asset", "rendition", "name"))
        count = self.assets.get(asset, {}).get(rendition)
        ok = count is not None and (
            name in ("init.mp4", "poster.jpg")
            or (name[-4:] in (".m4s", ".jpg") and name[:-4].isdigit()
                and 1 <= int(name[:-4]) <= count)
        )
        if not ok:
            raise web.HTTPNotFound()
        if self.delay:
            await asyncio.sleep(self.delay)
        body = segment_bytes(asset, rendition, name)
        if request.path in self.broken:
            return await self._break_off(request, body)
        return web.Response(body=body, content_type="video/iso.segment", headers={
            "Cache-Control": IMMUTABLE,
            "ETag": '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        })

    async def poster(self, request: web.Request) -> web.StreamResponse:
        """/vod/{asset}/poster.jpg: the storyboard's poster, immutable like media."""
        self._count(request)
        asset = request.match_info["asset"]
        if "storyboard" not in self.assets.get(asset, {}):
            raise web.HTTPNotFound()
        return web.Response(body=segment_bytes(asset, "", "poster.jpg"),
                            content_type="image/jpeg", headers={"Cache-Control": IMMUTABLE})

    async def _break_off(self, request: web.Request, body: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": IMMUTABLE,
                                           "Content-Type": "video/iso.segment"})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()


@pytest.fixture
async def origin() -> AsyncIterator[FakeOrigin]:
    fake = FakeOrigin()
    fake.add("a1", {"v360": 3, "audio": 3})
    fake.server = TestServer(fake.app(), host="127.0.0.1")
    await fake.server.start_server()
    yield fake
    await fake.stop()


EdgeFactory = Callable[..., NginxEdge]


@pytest.fixture
def make_edge(tmp_path: Path) -> Iterator[EdgeFactory]:
    """make_edge(origin_url, **render_options) -> a started edge, stopped after."""
    if shutil.which(NGINX) is None:
        pytest.skip("nginx not installed (make setup)")
    started: list[NginxEdge] = []

    def make(origin_url: str, **options: Any) -> NginxEdge:
        options.setdefault("worker_processes", 1)
        edge = NginxEdge(origin_url, tmp_path / f"edge{len(started)}", **options)
        started.append(edge)
        return edge.start()

    yield make
    for edge in started:
        edge.stop()
