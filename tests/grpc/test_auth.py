"""Auth over real gRPC calls: the API key and JWTs from a test authorization
server (RSA and EC keys made here, a JWKS file and a JWKS URL), each bad token
refused with the right code; scopes per method; the REST helper check_http."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from origin.auth import Authenticator, AuthUnavailable, PermissionDenied, Unauthenticated
from origin.grpc_proto import assets_pb2, events_pb2, events_pb2_grpc
from tests.grpc.conftest import Keys, MakeStack, bearer, purchase

CODE = grpc.StatusCode
API_KEY = "test-api-key-0123456789"


def token(keys: Keys, *, alg: str = "RS256", kid: str | None = None, key: Any = None,
          **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"iss": keys.issuer, "aud": "cdlc-stream", "sub": "svc-commerce",
                            "iat": now, "exp": now + 300, "scope": "assets:read"}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    signer = key or (keys.rsa_key if alg == "RS256" else keys.ec_key)
    kid = kid or ("rsa-1" if alg == "RS256" else "ec-1")
    return jwt.encode(body, signer, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(keys: Keys) -> str:
    """alg=none: a header, the claims, an empty signature (RFC 7519 §6.1)."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps({"iss": keys.issuer, "aud": "cdlc-stream", "exp": now + 300,
                               "scope": "assets:read assets:write"}).encode())
    return f"{header}.{payload}."


def hs256_with_public_key(keys: Keys) -> str:
    """The algorithm-confusion attack: HMAC keyed with the RSA public key's PEM."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps({"iss": keys.issuer, "aud": "cdlc-stream", "exp": now + 300,
                               "scope": "assets:read"}).encode())
    pem = keys.rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    sig = hmac.digest(pem, f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{_b64(sig)}"


def forged_header(keys: Keys, header: dict[str, Any]) -> str:
    """A token with this header (which PyJWT refuses before any key is looked up)."""
    payload = _b64(json.dumps({"iss": keys.issuer, "aud": "cdlc-stream",
                               "exp": int(time.time()) + 300}).encode())
    return f"{_b64(json.dumps(header).encode())}.{payload}.AAAA"


async def _get(stack: Any, metadata: Any = None) -> tuple[grpc.StatusCode, str]:
    try:
        await stack.assets().GetAsset(assets_pb2.GetAssetRequest(asset_id="nope"),
                                      metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("GetAsset of an unknown asset answered")


async def test_credentials_over_grpc(make_stack: MakeStack, keys: Keys) -> None:
    auth = Authenticator(api_key=API_KEY, jwks=str(keys.jwks), issuer=keys.issuer)
    stack = await make_stack(authenticator=auth)
    # Past auth, GetAsset of an unknown id is NOT_FOUND: the call was let in.
    assert (await _get(stack, bearer(API_KEY)))[0] == CODE.NOT_FOUND
    assert (await _get(stack, (("x-api-key", API_KEY),)))[0] == CODE.NOT_FOUND
    assert (await _get(stack, bearer(token(keys))))[0] == CODE.NOT_FOUND
    assert (await _get(stack, bearer(token(keys, alg="ES256"))))[0] == CODE.NOT_FOUND
    now = int(time.time())
    refused = {
        "none": None,
        "wrong api key": bearer("wrong-key"),
        "not bearer": (("authorization", f"Basic {API_KEY}"),),
        "expired": bearer(token(keys, exp=now - 3600, iat=now - 7200)),
        "not yet": bearer(token(keys, nbf=now + 3600)),
        "no exp": bearer(token(keys, exp=None)),
        "wrong audience": bearer(token(keys, aud="another-service")),
        "wrong issuer": bearer(token(keys, iss="https://evil.test")),
        "unknown kid": bearer(token(keys, kid="rsa-2", key=keys.other)),
        "wrong key for kid": bearer(token(keys, kid="rsa-1", key=keys.other)),
        "ES256 token, RSA kid": bearer(token(keys, alg="ES256", kid="rsa-1")),
        "alg none": bearer(unsigned(keys)),
        "HS256 with the public key": bearer(hs256_with_public_key(keys)),
        "garbage": bearer("a.b.c"),
        # These two were INTERNAL (HTTP 500): PyJWT's refusal was not mapped.
        "kid not text": bearer(forged_header(keys, {"alg": "RS256", "kid": 5})),
        "crit header": bearer(forged_header(keys, {"alg": "RS256", "kid": "rsa-1",
                                                   "crit": ["exp"]})),
    }
    for name, metadata in refused.items():
        code, text = await _get(stack, metadata)
        assert code == CODE.UNAUTHENTICATED, (name, code, text)
    assert auth.keys is not None and auth.keys.fetches == 1  # unknown kids: no refetch yet

    reader = bearer(token(keys, scope="assets:read"))
    code, text = await _code(stack.assets().DeleteAsset(
        assets_pb2.DeleteAssetRequest(asset_id="x"), metadata=reader))
    assert code == CODE.PERMISSION_DENIED and "assets:write" in text
    code, _ = await _code(stack.playback().IssuePlayback(purchase("x"), metadata=reader))
    assert code == CODE.PERMISSION_DENIED
    issuer = bearer(token(keys, scope="playback:issue events:read"))
    code, _ = await _code(stack.playback().IssuePlayback(purchase("x"), metadata=issuer))
    assert code == CODE.NOT_FOUND
    events = events_pb2_grpc.EventServiceStub(stack.channel())
    code, _ = await _code(events.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="x"),
                                               metadata=reader))
    assert code == CODE.PERMISSION_DENIED
    code, _ = await _code(events.GetAssetStats(events_pb2.GetAssetStatsRequest(asset_id="x"),
                                               metadata=issuer))
    assert code == CODE.UNIMPLEMENTED
    code, _ = await _code(stack.assets().WatchAsset(
        assets_pb2.WatchAssetRequest(asset_id="x")).read())
    assert code == CODE.UNAUTHENTICATED


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def test_jwks_url_rotation_and_check_http(keys: Keys) -> None:
    """A JWKS served over HTTP: an unknown kid fetches it again, at most once per
    refresh interval, so a rotated-in key is found; check_http raises the same
    exceptions as the gRPC path; an unreachable JWKS is AuthUnavailable."""
    doc = json.loads(keys.jwks.read_text())
    served: dict[str, Any] = {"doc": doc, "hits": 0}

    async def jwks(_: web.Request) -> web.StreamResponse:
        served["hits"] += 1
        return web.json_response(served["doc"])

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        auth = Authenticator(jwks=f"http://127.0.0.1:{server.port}/.well-known/jwks.json",
                             issuer=keys.issuer, refresh_seconds=0.3)
        good = f"Bearer {token(keys, scope='assets:read assets:write')}"
        await auth.check_http(good, None, "assets:write")
        rotated = f"Bearer {token(keys, kid='rsa-2', key=keys.other)}"
        with pytest.raises(Unauthenticated):  # just fetched: not fetched again
            await auth.check_http(rotated, None, "assets:read")
        assert served["hits"] == 1
        await asyncio.sleep(0.35)
        for _ in range(5):  # a burst of unknown kids: one refetch in the interval
            with pytest.raises(Unauthenticated):
                await auth.check_http(rotated, None, "assets:read")
        assert served["hits"] == 2
        new = json.loads(RSAAlgorithm.to_jwk(keys.other.public_key()))
        new.update(kid="rsa-2", use="sig", alg="RS256")
        served["doc"] = {"keys": [*doc["keys"], new]}
        await asyncio.sleep(0.35)
        await auth.check_http(rotated, None, "assets:read")
        assert served["hits"] == 3
        with pytest.raises(PermissionDenied):
            await auth.check_http(rotated, None, "playback:issue")
        with pytest.raises(Unauthenticated):
            await auth.check_http(None, None, "assets:read")
        with pytest.raises(Unauthenticated):
            await auth.check_http("Token abc", None, "assets:read")
        with pytest.raises(Unauthenticated, match="malformed JWT"):  # REST answered 500
            await auth.check_http(f"Bearer {forged_header(keys, {'alg': 'RS256', 'kid': 5})}",
                                  None, "assets:read")
    finally:
        await server.close()
    down = Authenticator(jwks="http://127.0.0.1:1/jwks.json", issuer=keys.issuer)
    for _ in range(3):  # one fetch fails; the calls right after it do not fetch again
        with pytest.raises(AuthUnavailable):
            await down.check_http(good, None, "assets:read")
    assert down.keys is not None and down.keys.attempts == 1 and down.keys.fetches == 0
    open_auth = Authenticator()
    assert not open_auth.enabled
    await open_auth.check_http(None, None, "assets:write")
    with pytest.raises(ValueError, match="CDLC_JWT_ISSUER"):
        Authenticator(jwks=str(keys.jwks))
    env = Authenticator.from_env({"CDLC_API_KEY": API_KEY, "CDLC_JWKS": str(keys.jwks),
                                  "CDLC_JWT_ISSUER": keys.issuer, "CDLC_JWT_AUDIENCE": "x"})
    assert env.audience == "x" and env.api_key == API_KEY
    with pytest.raises(Unauthenticated, match="audience"):
        await env.check_http(good, None, "assets:read")
    await env.check_http(None, API_KEY, "events:write")


def test_jwks_file_without_public_signing_keys(tmp_path: Path, keys: Keys) -> None:
    """Private keys and encryption keys in a JWKS are not used for verifying."""
    from origin.auth import _parse_jwks

    private = json.loads(RSAAlgorithm.to_jwk(keys.rsa_key))
    private["kid"] = "priv"
    enc = json.loads(RSAAlgorithm.to_jwk(keys.rsa_key.public_key()))
    enc.update(kid="enc", use="enc")
    sig = json.loads(RSAAlgorithm.to_jwk(keys.rsa_key.public_key()))
    sig["kid"] = "sig"
    parsed = _parse_jwks(json.dumps({"keys": [private, enc, sig]}).encode())
    assert sorted(parsed) == ["sig"]
