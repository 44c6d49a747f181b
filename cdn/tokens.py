"""Playback tokens: HMAC-SHA256 signed, per asset, with an expiry and an optional
client binding. The origin checks them (origin/), and the nginx edge checks the
SAME format with njs, so the format below is the contract; change it only with a
new version prefix.

Format (version 1)
------------------

A token is three fields joined by ``.`` (all ASCII, URL-safe, no escaping needed
in a query string)::

    token   = EXPIRES "." BIND "." SIG
    EXPIRES = 1*DIGIT            ; expiry, Unix time in whole seconds (UTC), decimal,
                                 ; no sign, no leading zeros (except "0")
    BIND    = "a" / "ip"         ; "a": any client; "ip": bound to the client address
    SIG     = 43base64url-char   ; base64url (RFC 4648 §5) of the 32-byte MAC,
                                 ; without "=" padding

    MAC     = HMAC-SHA256(key, MESSAGE)              ; RFC 2104, FIPS 180-4
    MESSAGE = "cdlc1" LF ASSET LF EXPIRES LF CLIENT  ; LF = "\\n" (0x0A), UTF-8
    CLIENT  = ""                 when BIND is "a"
            = the client's IP address as text, when BIND is "ip" (the address
              the verifier sees: the TCP peer, or the edge's $remote_addr);
              IPv4 dotted quad, IPv6 in its compressed RFC 5952 form

``ASSET`` is the asset id exactly as it appears in the playback path
``/vod/{asset}/...``. ``key`` is the raw bytes of ``CDLC_SIGNING_KEY`` (UTF-8).

A token is valid for a request of ``/vod/{asset}/...`` when, and only when:

1. it splits into exactly three fields, EXPIRES is all digits, BIND is "a" or "ip",
   SIG is 43 characters;
2. ``now <= EXPIRES`` (now in whole Unix seconds);
3. the recomputed MAC over the request's asset (and, for "ip", the request's
   client address) equals SIG, compared in constant time.

Anything else (tampered field, other asset, other client, expired) is a 403.
Players carry the token as the query parameter ``token=``; the origin appends
that query to every URL inside the manifests it builds.

Example (key ``b"k"``, asset ``a1``, expires ``2000000000``, unbound)::

    MESSAGE = b"cdlc1\\na1\\n2000000000\\n"
    token   = "2000000000.a." + base64url(HMAC-SHA256(b"k", MESSAGE)).rstrip("=")

njs sketch for the edge::

    var c = require('crypto');
    var mac = c.createHmac('sha256', key).update('cdlc1\\n' + asset + '\\n' + exp
              + '\\n' + (bind === 'ip' ? r.remoteAddress : '')).digest('base64url');

This module imports nothing of ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

VERSION = "cdlc1"
BIND_ANY = "a"
BIND_IP = "ip"


class TokenError(ValueError):
    """Why a token was refused: ``reason`` is one of malformed, expired, signature."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"playback token refused: {reason}")
        self.reason = reason


def _mac(key: bytes, asset_id: str, expires: str, client: str) -> bytes:
    message = f"{VERSION}\n{asset_id}\n{expires}\n{client}".encode()
    return hmac.digest(key, message, hashlib.sha256)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign(key: bytes, asset_id: str, expires: int, client_ip: str | None = None) -> str:
    """A token for ``asset_id`` valid until ``expires`` (Unix seconds, inclusive);
    bound to ``client_ip`` when given."""
    if expires < 0:
        raise ValueError("expires must be a non-negative Unix time")
    exp = str(int(expires))
    bind = BIND_IP if client_ip else BIND_ANY
    return f"{exp}.{bind}.{_b64(_mac(key, asset_id, exp, client_ip or ''))}"


def sign_for(key: bytes, asset_id: str, ttl: float, client_ip: str | None = None) -> str:
    """A token that expires ``ttl`` seconds from now."""
    return sign(key, asset_id, int(time.time() + ttl), client_ip)


def check(
    key: bytes,
    token: str,
    asset_id: str,
    *,
    client_ip: str | None = None,
    now: float | None = None,
) -> int:
    """Verify ``token`` for ``asset_id``; return its expiry or raise TokenError."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed")
    exp, bind, sig = parts
    if not exp.isdigit() or not exp.isascii() or len(exp) > 12 or (len(exp) > 1 and exp[0] == "0"):
        raise TokenError("malformed")
    if bind not in (BIND_ANY, BIND_IP) or len(sig) != 43:
        raise TokenError("malformed")
    if not sig.isascii():
        raise TokenError("malformed")
    expires = int(exp)
    if (time.time() if now is None else now) > expires:
        raise TokenError("expired")
    client = (client_ip or "") if bind == BIND_IP else ""
    if bind == BIND_IP and not client:
        raise TokenError("signature")
    # Compare the canonical text (as the edge does): one MAC has one spelling.
    if not hmac.compare_digest(sig, _b64(_mac(key, asset_id, exp, client))):
        raise TokenError("signature")
    return expires


def verify(
    key: bytes,
    token: str,
    asset_id: str,
    *,
    client_ip: str | None = None,
    now: float | None = None,
) -> bool:
    """True when ``token`` is valid for ``asset_id`` (see the module docstring)."""
    try:
        check(key, token, asset_id, client_ip=client_ip, now=now)
    except TokenError:
        return False
    return True


# Manifests with tokens on: the origin builds each manifest once with this marker
# where the viewer's token goes in child URLs, and puts the viewer's token in when
# it answers a viewer. An edge that sends TEMPLATE_HEADER: 1 gets the marker as is,
# caches one copy for every viewer and substitutes the token it has just verified
# (cdn/nginx.py, sub_filter). The marker is URL- and XML-safe and can never be a
# token (tokens start with a digit).
TOKEN_PLACEHOLDER = "__CDLC_TOKEN__"
TEMPLATE_HEADER = "X-Cdlc-Token-Template"
