"""Key routes: the content keys of encrypted assets, to viewers with a playback token.

- ``GET /keys/{asset}/{kid}``: the raw 16-byte key of that KID (32 hex digits, or
  the UUID form), for HLS players (EXT-X-KEY with KEYFORMAT "identity", RFC 8216
  §4.3.2.4; packager/hls.py): SAMPLE-AES for cenc/cbcs assets, METHOD=AES-128
  for whole-segment ``aes-128`` ones (engine/segment_crypto.py).
  ``?format=clearkey`` answers the ClearKey license of that one key instead.
- ``POST /keys/{asset}/clearkey``: a W3C ClearKey license (Encrypted Media
  Extensions §9.1.4, a JSON Web Key Set): the request body is the EME license
  request ``{"kids": [base64url, ...], "type": "temporary"}`` (§9.1.3) the browser's
  CDM made; the answer is ``{"keys": [{"kty": "oct", "kid": b64url, "k": b64url}],
  "type": "temporary"}`` with those of the asked KIDs that belong to the asset (an
  empty or absent ``kids`` asks for all of them). ``GET`` answers all of them.
  The DASH MPD names this URL as the ClearKey ``dashif:Laurl`` (packager/dash.py).

Every answer needs a valid playback token for that asset (``?token=``, checked by
cdn.tokens.verify as the playback routes check it, client binding included): no
token, a bad or expired one, or one for another asset is a 403, before any key is
looked up, so a viewer cannot even learn which KIDs exist. With no signing key
configured every key request is a 403: keys are never served openly. Answers are
``Cache-Control: no-store`` (an edge or a browser cache must not keep a key) and
carry CORS headers, since players on other origins fetch them.

Install with ``add_key_routes(app, key_store, signing_key)``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import AsyncIterator, Collection
from typing import Any

from aiohttp import hdrs, web

from cdn.tokens import TokenError, verify
from metadata.keys import ContentKey, KeyStore, kid_from_text
from metadata.models import ASSET_ID_RE
from origin.bodies import read_bounded

# 32 hex digits or the UUID form; kid_from_text decides (a bad one is a 404).
log = logging.getLogger(__name__)
_KID_PATH = r"[0-9a-fA-F-]{32,36}"
_B64URL = re.compile(r"[A-Za-z0-9_-]{22}={0,2}")  # 16 bytes, padding tolerated
_MAX_REQUEST = 16 * 1024
_MAX_KIDS = 64

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Date",
}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Accept, Origin",
    "Access-Control-Max-Age": "86400",
}
_NO_STORE = {**CORS, hdrs.CACHE_CONTROL: "no-store", "Pragma": "no-cache"}


def b64url(raw: bytes) -> str:
    """base64url without padding (RFC 4648 §5), as JWK (RFC 7517) and EME use it."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def clearkey_license(keys: Collection[ContentKey]) -> dict[str, Any]:
    """The ClearKey license of these keys (EME §9.1.4)."""
    return {"keys": [{"kty": "oct", "kid": b64url(k.kid), "k": b64url(k.key)} for k in keys],
            "type": "temporary"}


def _error(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers=_NO_STORE)


def _unavailable(exc: Exception) -> web.Response:
    """The key store is out: 503 with Retry-After (RFC 9110 §15.6.4), never cached."""
    log.warning("key store read failed: %r", exc)
    return web.Response(status=503, text="key store unavailable, retry later",
                        headers={**_NO_STORE, hdrs.RETRY_AFTER: "1"})


class KeyRoutes:
    """Handlers of /keys/... over one key store (module docstring)."""

    def __init__(self, store: KeyStore, signing_key: bytes | None, *,
                 trusted_proxies: Collection[str] = ()) -> None:
        self.store = store
        self.signing_key = signing_key
        self.trusted_proxies = frozenset(trusted_proxies)

    def _client_ip(self, request: web.Request) -> str | None:
        # As origin/playback.py: a trusted edge names the viewer in X-Real-IP.
        peer = request.remote
        if peer in self.trusted_proxies:
            return request.headers.get("X-Real-IP", peer)
        return peer

    def _refusal(self, request: web.Request, asset_id: str) -> web.Response | None:
        """None when the request may have the asset's keys, else the answer."""
        if not ASSET_ID_RE.fullmatch(asset_id):
            return _error(400, "invalid asset id")
        if self.signing_key is None:
            return _error(403, "keys are served to playback tokens only; no signing key is set")
        token = request.query.get("token")
        if not token:
            return _error(403, "invalid or missing playback token")
        try:
            verify(self.signing_key, token, asset_id, client_ip=self._client_ip(request))
        except TokenError:
            return _error(403, "invalid or missing playback token")
        return None

    async def raw_key(self, request: web.Request) -> web.StreamResponse:
        asset_id = request.match_info["asset"]
        refused = self._refusal(request, asset_id)
        if refused is not None:
            return refused
        try:
            kid = kid_from_text(request.match_info["kid"])
        except ValueError:
            return _error(404, "no such key")
        try:
            key = await self.store.get(asset_id, kid)
        except Exception as exc:
            return _unavailable(exc)
        if key is None:
            return _error(404, "no such key")
        if request.query.get("format") == "clearkey":
            return web.json_response(clearkey_license([key]), headers=_NO_STORE)
        return web.Response(body=key.key, content_type="application/octet-stream",
                            headers=_NO_STORE)

    async def clearkey(self, request: web.Request) -> web.StreamResponse:
        asset_id = request.match_info["asset"]
        refused = self._refusal(request, asset_id)
        if refused is not None:
            return refused
        wanted: set[bytes] | None = None
        if request.method == hdrs.METH_POST:
            body = await read_bounded(request.content, _MAX_REQUEST)
            if len(body) > _MAX_REQUEST:
                return _error(413, "license request too large")
            try:
                wanted = _asked_kids(body)
            except ValueError as exc:
                return _error(400, f"bad ClearKey license request: {exc}")
        try:
            keys = await self.store.for_asset(asset_id)
        except Exception as exc:
            return _unavailable(exc)
        if wanted:
            keys = [k for k in keys if k.kid in wanted]
        if not keys:
            return _error(404, "no such key")
        return web.json_response(clearkey_license(keys), headers=_NO_STORE)

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers=PREFLIGHT)


KEYS = web.AppKey("keys", KeyRoutes)


def _asked_kids(body: bytes) -> set[bytes] | None:
    """The KIDs of an EME license request (§9.1.3); None: all (an empty body)."""
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not JSON") from None
    kids = doc.get("kids") if isinstance(doc, dict) else None
    if kids is None:
        return None
    if not isinstance(kids, list) or len(kids) > _MAX_KIDS:
        raise ValueError(f"kids must be a list of at most {_MAX_KIDS} base64url KIDs")
    out = set()
    for kid in kids:
        if not isinstance(kid, str) or not _B64URL.fullmatch(kid):
            raise ValueError(f"bad kid {str(kid)[:40]!r}")
        try:
            out.add(base64.urlsafe_b64decode(kid.rstrip("=") + "=="))
        except (binascii.Error, ValueError):
            raise ValueError(f"bad kid {kid!r}") from None
    return out


def add_key_routes(app: web.Application, key_store: KeyStore, signing_key: bytes | None, *,
                   trusted_proxies: Collection[str] = (), close_store: bool = False
                   ) -> KeyRoutes:
    """Install /keys/{asset}/{kid} and /keys/{asset}/clearkey on ``app`` (before it
    starts). ``close_store``: close the key store with the app."""
    routes = KeyRoutes(key_store, signing_key, trusted_proxies=trusted_proxies)
    app[KEYS] = routes
    r = app.router
    ck = r.add_resource("/keys/{asset}/clearkey", name="keys_clearkey")
    ck.add_route("POST", routes.clearkey)
    ck.add_route("GET", routes.clearkey)
    ck.add_route("OPTIONS", routes.preflight)
    raw = r.add_resource(f"/keys/{{asset}}/{{kid:{_KID_PATH}}}", name="keys_raw")
    raw.add_route("GET", routes.raw_key)
    raw.add_route("OPTIONS", routes.preflight)

    if close_store:
        async def closing(app: web.Application) -> AsyncIterator[None]:
            yield
            await key_store.close()

        app.cleanup_ctx.append(closing)
    return routes
