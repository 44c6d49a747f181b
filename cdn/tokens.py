"""Playback tokens: HMAC-SHA256 signed, per asset, with an expiry, an optional
client binding and (version 2) the viewer they were issued to and the tallest
rendition they may play. The origin checks them (origin/), and the nginx edge
checks the SAME format with njs (cdn/templates/edge.js), so the formats below are
the contract; change them only with a new version prefix. Both versions stay
valid side by side: a version-1 token minted before version 2 existed keeps
playing until it expires.

Format (version 1)
------------------

A token is three fields joined by ``.`` (all ASCII, URL-safe, no escaping needed
in a query string)::

    token   = EXPIRES "." BIND "." SIG
    EXPIRES = 1*DIGIT            ; expiry, Unix time in whole seconds (UTC), decimal,
                                 ; no sign, no leading zeros (except "0"), <= 12 digits
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
A version-1 token names no viewer and sets no height limit.

Format (version 2)
------------------

Six fields; the first is the literal version ``2`` (a version-1 token has three
fields, so the field count alone tells them apart)::

    token   = "2" "." EXPIRES "." BIND "." MAXH "." VIEWER "." SIG
    MAXH    = "0" / %x31-39 0*4DIGIT   ; tallest rendition label allowed, 1..99999;
                                       ; "0": no limit
    VIEWER  = 0*1366base64url-char     ; base64url of the viewer id's UTF-8 bytes
                                       ; (at most 1024 bytes), no "=" padding;
                                       ; empty: no viewer named. Length mod 4 != 1
    EXPIRES, BIND, SIG as in version 1

    MESSAGE = "cdlc2" LF ASSET LF EXPIRES LF CLIENT LF MAXH LF VIEWER

``VIEWER`` goes into the MESSAGE as the token spells it (the base64url text, not
the decoded id): the verifier signs exactly the characters it received, so no
decoding is needed to verify and an id holding LF cannot shift the fields. The
signer writes the canonical encoding only; a verifier decodes it leniently to
*read* the viewer, and validity never depends on that decoding.

Rendition labels (what MAXH limits)
-----------------------------------

Video rendition ids are ``"v" LABEL`` where LABEL is the short side of the
picture in pixels (engine/ladder.py: ``v1080``, ``v720``; a copy-packaged
landscape master gets ``v`` + its height). Audio and subtitle ids never start
with ``v`` followed by a digit (``audio``, ``audio_fra``, ``sub_eng``). So the
verifier needs no metadata to apply a limit::

    LABEL   = the decimal digits right after a leading "v" of the rendition id
    allowed = MAXH = 0, or the id has no LABEL, or LABEL <= MAXH

(``rendition_label`` and ``allows`` below; edge.js has the same test). For a
landscape picture LABEL is its height, so MAXH is a maximum height; for a
portrait one it is the width, the "720p" class a viewer's plan names.

Validity
--------

A token is valid for a request of ``/vod/{asset}/...`` when, and only when:

1. it splits into exactly three fields (version 1) or six with the first "2"
   (version 2), each field of the syntax above;
2. ``now <= EXPIRES`` (now in whole Unix seconds);
3. the recomputed MAC over the request's asset (and, for "ip", the request's
   client address) equals SIG, compared in constant time;
4. for a request of a rendition's files (``/vod/{asset}/{rendition}/...``: init,
   segments, media and I-frame playlists), the rendition is allowed by MAXH.

Anything else (tampered field, other asset, other client, expired, a rendition
above the limit) is a 403. The top-level manifests (master playlist, MPD) of a
limited token list only the allowed renditions (origin/playback.py); when that
leaves no video rendition of an asset that has some, they are a 403 as well.
Players carry the token as the query parameter ``token=``; the origin appends
that query to every URL inside the manifests it builds.

Example (key ``b"k"``, asset ``a1``, expires ``2000000000``, unbound)::

    MESSAGE = b"cdlc1\\na1\\n2000000000\\n"
    token   = "2000000000.a." + base64url(HMAC-SHA256(b"k", MESSAGE)).rstrip("=")

    # version 2, viewer "u1" (base64url "dTE"), at most 480:
    MESSAGE = b"cdlc2\\na1\\n2000000000\\n\\n480\\ndTE"
    token   = "2.2000000000.a.480.dTE." + base64url(HMAC-SHA256(b"k", MESSAGE)).rstrip("=")

njs sketch for the edge::

    var c = require('crypto');
    var mac = c.createHmac('sha256', key).update('cdlc1\\n' + asset + '\\n' + exp
              + '\\n' + (bind === 'ip' ? r.remoteAddress : '')).digest('base64url');
    // version 2: f = token.split('.'), f[0] === '2'
    var mac2 = c.createHmac('sha256', key).update('cdlc2\\n' + asset + '\\n' + f[1]
               + '\\n' + client + '\\n' + f[3] + '\\n' + f[4]).digest('base64url');
    var label = /^v([0-9]+)/.exec(rendition);   // null: audio, subtitles
    var allowed = f[3] === '0' || !label || Number(label[1]) <= Number(f[3]);

This module imports nothing of ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import NamedTuple

VERSION = "cdlc1"
VERSION2 = "cdlc2"
BIND_ANY = "a"
BIND_IP = "ip"
MAX_HEIGHT_LIMIT = 99_999        # MAXH is at most five digits
MAX_VIEWER_BYTES = 1024          # a viewer id's UTF-8 length (VIEWER <= 1366 chars)

_EXPIRES = re.compile(r"0|[1-9][0-9]{0,11}")
_MAXH = re.compile(r"0|[1-9][0-9]{0,4}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_LABEL = re.compile(r"v([0-9]+)")
_MAX_VIEWER_CHARS = -(-MAX_VIEWER_BYTES * 4 // 3)  # 1366


class TokenError(ValueError):
    """Why a token was refused: ``reason`` is one of malformed, expired, signature."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"playback token refused: {reason}")
        self.reason = reason


class Claims(NamedTuple):
    """What a verified token says. ``viewer`` is "" and ``max_height`` 0 (no
    limit) for version 1; ``client_ip`` is the bound address, "" when unbound.
    (A NamedTuple: made on every playback request, and the cheapest to make.)"""

    version: int
    asset_id: str
    expires: int
    viewer: str
    max_height: int
    client_ip: str

    def allows(self, rendition_id: str) -> bool:
        """True when this token may play ``rendition_id`` (module docstring)."""
        return allows(self.max_height, rendition_id)


def rendition_label(rendition_id: str) -> int | None:
    """The LABEL of a video rendition id (``v720`` -> 720, ``v1080_hevc`` ->
    1080); None for ids without one (audio, subtitles)."""
    m = _LABEL.match(rendition_id)
    return int(m.group(1)) if m else None


def allows(max_height: int, rendition_id: str) -> bool:
    """True when a token limited to ``max_height`` (0 = no limit) may play
    ``rendition_id``: its LABEL is at most the limit, or it has none."""
    if not max_height:
        return True
    label = rendition_label(rendition_id)
    return label is None or label <= max_height


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _mac1(key: bytes, asset_id: str, expires: str, client: str) -> bytes:
    message = f"{VERSION}\n{asset_id}\n{expires}\n{client}".encode()
    return hmac.digest(key, message, hashlib.sha256)


def _mac2(key: bytes, asset_id: str, expires: str, client: str, maxh: str,
          viewer: str) -> bytes:
    message = f"{VERSION2}\n{asset_id}\n{expires}\n{client}\n{maxh}\n{viewer}".encode()
    return hmac.digest(key, message, hashlib.sha256)


def encode_viewer(viewer: str) -> str:
    """The VIEWER field of a viewer id (canonical base64url, no padding)."""
    raw = viewer.encode()
    if len(raw) > MAX_VIEWER_BYTES:
        raise ValueError(f"viewer id is {len(raw)} bytes; at most {MAX_VIEWER_BYTES}")
    return _b64(raw)


def decode_viewer(field: str) -> str:
    """The viewer id a VIEWER field names (lenient: see the module docstring)."""
    try:
        raw = base64.urlsafe_b64decode(field + "=" * (-len(field) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed") from None
    return raw.decode("utf-8", errors="replace")


def sign(
    key: bytes,
    asset_id: str,
    expires: int,
    client_ip: str | None = None,
    *,
    viewer: str = "",
    max_height: int = 0,
) -> str:
    """A token for ``asset_id`` valid until ``expires`` (Unix seconds, inclusive);
    bound to ``client_ip`` when given. Version 2 when a viewer or a height limit
    is given, else version 1 (the shorter token, which every edge deployed before
    version 2 also accepts). Raises ValueError for values the format cannot hold."""
    if expires < 0 or expires >= 10**12:
        raise ValueError("expires must be a Unix time within 0..999999999999")
    if not 0 <= max_height <= MAX_HEIGHT_LIMIT:
        raise ValueError(f"max_height must be within 0..{MAX_HEIGHT_LIMIT}, got {max_height}")
    exp = str(int(expires))
    bind = BIND_IP if client_ip else BIND_ANY
    client = client_ip or ""
    if not viewer and not max_height:
        return f"{exp}.{bind}.{_b64(_mac1(key, asset_id, exp, client))}"
    maxh, who = str(max_height), encode_viewer(viewer)
    sig = _b64(_mac2(key, asset_id, exp, client, maxh, who))
    return f"2.{exp}.{bind}.{maxh}.{who}.{sig}"


def sign_for(
    key: bytes,
    asset_id: str,
    ttl: float,
    client_ip: str | None = None,
    *,
    viewer: str = "",
    max_height: int = 0,
) -> str:
    """A token that expires ``ttl`` seconds from now (``sign`` for the rest)."""
    return sign(key, asset_id, int(time.time() + ttl), client_ip,
                viewer=viewer, max_height=max_height)


def verify(
    key: bytes,
    token: str,
    asset_id: str,
    *,
    client_ip: str | None = None,
    now: float | None = None,
) -> Claims:
    """Verify ``token`` for ``asset_id`` (rules 1-3 of the module docstring; rule
    4 is ``Claims.allows``, the caller's to apply to the rendition it serves).
    Returns the claims or raises TokenError."""
    parts = token.split(".")
    if len(parts) == 3:
        exp, bind, sig = parts
        maxh = who = ""
        version = 1
    elif len(parts) == 6 and parts[0] == "2":
        _, exp, bind, maxh, who, sig = parts
        version = 2
        if not (_MAXH.fullmatch(maxh) and len(who) <= _MAX_VIEWER_CHARS
                and _B64URL.fullmatch(who) and len(who) % 4 != 1):
            raise TokenError("malformed")
    else:
        raise TokenError("malformed")
    # str.isdigit accepts non-ASCII digits; the pattern does not. A SIG of other
    # ASCII characters than base64url's never equals a MAC's spelling (below).
    if not _EXPIRES.fullmatch(exp) or bind not in (BIND_ANY, BIND_IP) \
            or len(sig) != 43 or not sig.isascii():
        raise TokenError("malformed")
    expires = int(exp)
    if (time.time() if now is None else now) > expires:
        raise TokenError("expired")
    client = (client_ip or "") if bind == BIND_IP else ""
    if bind == BIND_IP and not client:
        raise TokenError("signature")
    if version == 1:
        mac = _mac1(key, asset_id, exp, client)
    else:
        mac = _mac2(key, asset_id, exp, client, maxh, who)
    # Compare the canonical text (as the edge does): one MAC has one spelling.
    if not hmac.compare_digest(sig, _b64(mac)):
        raise TokenError("signature")
    return Claims(version, asset_id, expires, decode_viewer(who) if who else "",
                  int(maxh) if maxh else 0, client)


def check(
    key: bytes,
    token: str,
    asset_id: str,
    *,
    client_ip: str | None = None,
    now: float | None = None,
) -> int:
    """Verify ``token`` for ``asset_id``; return its expiry or raise TokenError."""
    return verify(key, token, asset_id, client_ip=client_ip, now=now).expires


def is_valid(
    key: bytes,
    token: str,
    asset_id: str,
    *,
    client_ip: str | None = None,
    now: float | None = None,
) -> bool:
    """True when ``token`` is valid for ``asset_id`` (rules 1-3)."""
    try:
        verify(key, token, asset_id, client_ip=client_ip, now=now)
    except TokenError:
        return False
    return True


# Manifests with tokens on: the origin builds each manifest once with this marker
# where the viewer's token goes in child URLs, and puts the viewer's token in when
# it answers a viewer. An edge that sends TEMPLATE_HEADER: 1 gets the marker as is,
# caches one copy for every viewer (of one height class, for the top-level
# manifests) and substitutes the token it has just verified (cdn/nginx.py,
# sub_filter). The marker is URL- and XML-safe and can never be a token (tokens
# start with a digit).
TOKEN_PLACEHOLDER = "__CDLC_TOKEN__"
TEMPLATE_HEADER = "X-Cdlc-Token-Template"
