"""Who may call the API: one Authenticator for the gRPC servers and the REST admin.

A caller presents ``Authorization: Bearer TOKEN`` (gRPC metadata ``authorization``;
``X-API-Key: KEY`` is accepted too). TOKEN is either

- the API key (``CDLC_API_KEY``): every scope; or
- a JWT from the platform's authorization server (RFC 7519), signed RS256 or
  ES256 (RFC 7518 §3.3, §3.4) and verified against its JWKS (RFC 7517;
  ``CDLC_JWKS``: a file path or an http(s) URL). ``iss`` must be
  ``CDLC_JWT_ISSUER``, ``aud`` must hold ``CDLC_JWT_AUDIENCE`` (default
  ``cdlc-stream``), ``exp`` is required and ``exp``/``nbf`` are checked (with a
  small leeway for clock skew). The scopes are the space-separated ``scope``
  claim (RFC 8693 §4.2): assets:read, assets:write, playback:issue,
  events:write, events:read.

Only RS256 and ES256 are accepted, whatever the token's header says: ``none`` and
the HMAC algorithms are refused before any key is looked at, so a token "signed"
with the public key as an HMAC secret never verifies (the classic algorithm
confusion). Keys are looked up by ``kid`` and must match the algorithm (an RSA
key for RS256, a P-256 key for ES256). The key set is cached; a ``kid`` it does
not hold makes it fetch the set again, at most once per ``refresh_seconds``, so
the authorization server can rotate keys and a flood of made-up kids costs one
fetch per interval. Signature checks are PyJWT's (over ``cryptography``).

A JWT that verified is remembered (by its exact text, with its principal) until
its ``exp``: a platform service sends the same token on every call for its
lifetime, and checking its signature again each time (an RSA or ECDSA verify and
PyJWT's parsing: 0.2-0.3 ms on this machine) would cost more than the
rest of a unary call. Nothing about a token's claims can change before ``exp``;
a refetch of the key set forgets every remembered token (a key may have gone).
Only tokens that verified are remembered, and at most ``MAX_REMEMBERED`` of them
(of at most ``MAX_REMEMBERED_CHARS`` each), so a flood of junk costs memory
nothing.

Missing or bad credentials raise Unauthenticated (gRPC UNAUTHENTICATED, HTTP
401); a valid caller without the scope raises PermissionDenied
(PERMISSION_DENIED, 403). A JWKS that cannot be fetched raises AuthUnavailable
(a ConnectionError: UNAVAILABLE, 503), so an outage of the authorization server
is not reported as the caller's fault. With neither an API key nor a JWKS
configured every call is allowed: the servers then bind loopback only (checked
at start-up by the caller of ``open_for``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from origin.bodies import read_bounded

log = logging.getLogger(__name__)

ASSETS_READ = "assets:read"
ASSETS_WRITE = "assets:write"
PLAYBACK_ISSUE = "playback:issue"
EVENTS_WRITE = "events:write"
EVENTS_READ = "events:read"
SCOPES = frozenset({ASSETS_READ, ASSETS_WRITE, PLAYBACK_ISSUE, EVENTS_WRITE, EVENTS_READ})

ALGORITHMS = ("RS256", "ES256")
DEFAULT_AUDIENCE = "cdlc-stream"
_MAX_JWKS_BYTES = 1 << 20
MAX_REMEMBERED = 4096
MAX_REMEMBERED_CHARS = 4096
_RETRY_FIRST_LOAD_SECONDS = 1.0


class Unauthenticated(Exception):
    """No credentials, or credentials that do not verify (401 / UNAUTHENTICATED)."""


class PermissionDenied(Exception):
    """A verified caller without the scope the operation needs (403 /
    PERMISSION_DENIED)."""


class AuthUnavailable(ConnectionError):
    """The JWKS could not be read: the caller is not at fault (503 / UNAVAILABLE)."""


@dataclass(frozen=True)
class Principal:
    """A verified caller: ``via`` is "api-key", "jwt" or "open" (no auth configured)."""

    subject: str
    scopes: frozenset[str]
    via: str

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(f"the caller lacks the scope {scope}")


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` value (RFC 6750 §2.1)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("the Authorization header is not 'Bearer TOKEN'")
    return value.strip()


class KeySet:
    """A JWKS, read from a file or an http(s) URL, cached by ``kid``; fetched again
    for a kid it lacks, at most once per ``refresh_seconds``."""

    def __init__(self, source: str, *, refresh_seconds: float = 30.0,
                 fetch_timeout: float = 5.0) -> None:
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.fetch_timeout = fetch_timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._failed_at: float | None = None
        self._failure = ""
        self._lock = asyncio.Lock()
        self.fetches = 0      # successful reads of the key set
        self.attempts = 0     # reads tried

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key named ``kid`` (or the only key, for a token without kid)."""
        if self._loaded_at is None:
            await self._refresh(force=True)
        found = self._find(kid)
        if found is None:
            await self._refresh(force=False)
            found = self._find(kid)
        if found is None:
            raise Unauthenticated(f"no key {kid!r} in the JWKS" if kid else
                                  "the token names no key (kid) and the JWKS has several")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            if not force and self._loaded_at is not None and \
                    now - self._loaded_at < self.refresh_seconds:
                return  # fetched recently: an unknown kid stays unknown until then
            if force and self._loaded_at is not None:
                return  # another caller loaded it while this one waited
            if self._loaded_at is None and self._failed_at is not None and \
                    now - self._failed_at < _RETRY_FIRST_LOAD_SECONDS:
                # Never loaded and just failed: callers are refused at once
                # rather than each waiting on another fetch.
                raise AuthUnavailable(f"cannot read the JWKS: {self._failure}")
            self.attempts += 1
            try:
                raw = await self._read()
            except Exception as exc:
                if self._loaded_at is not None:
                    # Keep the keys we have; try again after the interval.
                    self._loaded_at = now
                    log.warning("JWKS refresh from %s failed: %s", self.source, exc)
                    return
                self._failed_at, self._failure = now, str(exc) or type(exc).__name__
                raise AuthUnavailable(f"cannot read the JWKS: {self._failure}") from exc
            self._keys = _parse_jwks(raw)
            self._loaded_at = now
            self.fetches += 1

    async def _read(self) -> bytes:
        if self.source.startswith(("http://", "https://")):
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(self.source, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise OSError(f"{self.source} answered {resp.status}")
                body = await read_bounded(resp.content, _MAX_JWKS_BYTES)
                if len(body) > _MAX_JWKS_BYTES:
                    raise OSError(f"{self.source}: JWKS larger than 1 MiB")
                return body
        path = Path(self.source.removeprefix("file://"))
        return await asyncio.to_thread(path.read_bytes)


def _parse_jwks(raw: bytes) -> dict[str, jwt.PyJWK]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise AuthUnavailable(f"the JWKS is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise AuthUnavailable("the JWKS has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC") or "d" in entry:
            continue  # only public signing keys; a private key in a JWKS is a mistake
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWKError as exc:
            log.warning("JWKS key %r skipped: %s", entry.get("kid"), exc)
            continue
        if key.algorithm_name not in ALGORITHMS:
            continue
        keys[str(entry.get("kid", ""))] = key
    return keys


class Authenticator:
    """Checks credentials and scopes (module docstring)."""

    def __init__(self, *, api_key: str | None = None, jwks: str | None = None,
                 issuer: str | None = None, audience: str = DEFAULT_AUDIENCE,
                 leeway_seconds: float = 30.0, refresh_seconds: float = 30.0) -> None:
        if jwks and not issuer:
            raise ValueError("CDLC_JWKS is set but CDLC_JWT_ISSUER is not: "
                             "tokens of any issuer using those keys would be accepted")
        self.api_key = api_key or None
        self.keys = KeySet(jwks, refresh_seconds=refresh_seconds) if jwks else None
        self.issuer = issuer or None
        self.audience = audience or DEFAULT_AUDIENCE
        self.leeway = leeway_seconds
        # Verified JWTs: token -> (its exp, Unix seconds; the caller), see the
        # module docstring; valid for the key set of fetch number _remembered_for.
        self._remembered: dict[str, tuple[float, Principal]] = {}
        self._remembered_for = 0
        self.verifications = 0  # full JWT checks run (what remembering saves)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Authenticator:
        """From CDLC_API_KEY, CDLC_JWKS, CDLC_JWT_ISSUER, CDLC_JWT_AUDIENCE."""
        env = os.environ if environ is None else environ
        return cls(api_key=env.get("CDLC_API_KEY") or None,
                   jwks=env.get("CDLC_JWKS") or None,
                   issuer=env.get("CDLC_JWT_ISSUER") or None,
                   audience=env.get("CDLC_JWT_AUDIENCE") or DEFAULT_AUDIENCE)

    @property
    def enabled(self) -> bool:
        """False when nothing is configured: every call is allowed (loopback only)."""
        return self.api_key is not None or self.keys is not None

    async def authenticate(self, token: str | None) -> Principal:
        """The caller presenting ``token``; Unauthenticated when it does not verify."""
        if not self.enabled:
            return Principal("anonymous", SCOPES, "open")
        if not token:
            raise Unauthenticated("credentials required: Authorization: Bearer TOKEN")
        # aiohttp keeps a header's non-UTF-8 bytes as surrogates: compare the bytes.
        if self.api_key is not None and hmac.compare_digest(
                token.encode("utf-8", "surrogateescape"), self.api_key.encode()):
            return Principal("api-key", SCOPES, "api-key")
        if not token.isascii():  # neither the key nor a JWT (base64url and dots)
            raise Unauthenticated("the token is not ASCII")
        if self.keys is None or token.count(".") != 2:
            raise Unauthenticated("wrong API key" if self.keys is None else
                                  "the token is neither the API key nor a JWT")
        if self._remembered_for != self.keys.fetches:
            self._remembered.clear()  # the key set was fetched again
            self._remembered_for = self.keys.fetches
        held = self._remembered.get(token)
        if held is not None:
            if time.time() < held[0]:
                return held[1]
            del self._remembered[token]  # past exp: verified afresh (leeway, refusal)
        principal, expires = await self._verify_jwt(token)
        # No await between the key lookup in _verify_jwt and here: the token was
        # verified with the key set as it is now (fetched again inside, maybe).
        if self._remembered_for != self.keys.fetches:
            self._remembered.clear()
            self._remembered_for = self.keys.fetches
        if time.time() < expires and len(token) <= MAX_REMEMBERED_CHARS:
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[token] = (expires, principal)
        return principal

    async def _verify_jwt(self, token: str) -> tuple[Principal, float]:
        """The caller a JWT names and its ``exp``; Unauthenticated when it does
        not verify."""
        assert self.keys is not None
        self.verifications += 1
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:  # not decodable, or a header PyJWT refuses (kid, crit)
            raise Unauthenticated(f"malformed JWT: {exc}") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthenticated(f"JWT algorithm {alg!r} refused; use RS256 or ES256")
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        if key.algorithm_name != alg:
            raise Unauthenticated(f"key {kid!r} is for {key.algorithm_name}, not {alg}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the JWT has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("the JWT is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(f"the JWT is not for audience {self.audience!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the JWT's issuer is not trusted") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the JWT does not verify: {exc}") from exc
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        # exp is required and PyJWT has checked it is a number.
        return (Principal(str(claims.get("sub", "")), scopes & SCOPES, "jwt"),
                float(claims["exp"]))

    async def authorize(self, authorization: str | None, x_api_key: str | None,
                        scope: str) -> Principal:
        """The caller of a request with these headers, holding ``scope``;
        Unauthenticated or PermissionDenied."""
        token = bearer(authorization) if authorization else (x_api_key or None)
        principal = await self.authenticate(token)
        principal.require(scope)
        return principal

    async def check_http(self, authorization_header: str | None, x_api_key: str | None,
                         scope: str) -> None:
        """For the REST admin: raise Unauthenticated (answer 401 with
        ``WWW-Authenticate: Bearer``), PermissionDenied (403) or AuthUnavailable
        (503); return when the request may go on."""
        await self.authorize(authorization_header, x_api_key, scope)
