"""The content-ops console: static files at /console/ (index.html, app.js,
style.css and the npm libraries build.sh copies into static/vendor/), and one
JSON routes the page needs beside the admin API: a key check for the sign-in
form, and the preview player's playback URL (with a token when playback tokens are
on).

Nothing is loaded from a CDN: the libraries are pinned in origin/console/package.json
and copied at `make setup` (origin/console/build.sh).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import hdrs, web

from cdn import tokens
from origin.admin import problem
from origin.playback import ASSET_RE

STATIC = Path(__file__).resolve().parent / "static"
PREVIEW_TOKEN_TTL = 3600

Authorise = Callable[[web.Request], bool]


def add_console_routes(app: web.Application, static_dir: Path = STATIC, *,
                       authorise: Authorise | None = None,
                       signing_key: bytes | None = None) -> None:
    """Serve the console at /console/ from ``static_dir``; with ``signing_key`` (the
    playback tokens' key) the page gets preview tokens from
    GET /v1/console/preview/{id} (API key needed when ``authorise`` is given)."""
    index = static_dir / "index.html"

    async def page(request: web.Request) -> web.StreamResponse:
        resp = web.FileResponse(index, headers={hdrs.CACHE_CONTROL: "no-cache"})
        # The console's own files only; media and API calls go to this origin.
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; "
            "img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    async def bare(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/console/")

    async def preview(request: web.Request) -> web.StreamResponse:
        if authorise is not None and not authorise(request):
            return problem(401, "missing or wrong API key")
        asset_id = request.match_info["id"]
        if not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        query = ""
        if signing_key:
            query = "?token=" + tokens.sign_for(signing_key, asset_id, PREVIEW_TOKEN_TTL)
        return web.json_response({
            "hls": f"/vod/{asset_id}/master.m3u8{query}",
            "dash": f"/vod/{asset_id}/manifest.mpd{query}",
            "poster": f"/vod/{asset_id}/poster.jpg{query}",
            "expires_in": PREVIEW_TOKEN_TTL if signing_key else None,
        }, headers={hdrs.CACHE_CONTROL: "no-store"})

    async def whoami(request: web.Request) -> web.StreamResponse:
        """204 when the key is good (the sign-in form's check), else 401."""
        if authorise is not None and not authorise(request):
            return problem(401, "missing or wrong API key")
        return web.Response(status=204, headers={hdrs.CACHE_CONTROL: "no-store"})

    r = app.router
    r.add_get("/v1/console/whoami", whoami, name="console_whoami")
    r.add_get("/console", bare, name="console_bare")
    r.add_get("/console/", page, name="console_index")
    r.add_get("/v1/console/preview/{id}", preview, name="console_preview")
    r.add_static("/console/", static_dir, name="console_static", append_version=False)
