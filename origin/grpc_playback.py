"""PlaybackService: signed playback URLs for a platform's entitled viewers.

``issue_playback`` holds the rules (plain function, the servicer is thin): the
request is checked (asset id, an entitlement kind, ttl within 1 s..7 days, a
client address that parses, max_height >= 0), then the origin must have a
signing key (else FAILED_PRECONDITION), then the asset must exist (NOT_FOUND) and
be READY (FAILED_PRECONDITION). The token is the playback token of cdn/tokens.py
(``sign``: the format the origin and the edge verify), bound to the client
address when one is given. The URLs point at the edge when one is configured,
else at the origin's public base URL. Every grant is recorded
(metadata.grants); max_height and the viewer are kept there, for playback to
enforce.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

import grpc

from cdn.tokens import MAX_HEIGHT_LIMIT, sign
from metadata.grants import Grant, GrantStore, new_grant_id
from metadata.jobs import FailedPrecondition, RequestError, check_asset_id
from metadata.models import JobState
from origin.application import Application
from origin.grpc_convert import timestamp
from origin.grpc_errors import mapped
from origin.grpc_proto import playback_pb2

Context = grpc.aio.ServicerContext[Any, Any]

MAX_TTL_SECONDS = 7 * 24 * 3600
MAX_PAGE = 1000
KIND_TO_TEXT: dict[playback_pb2.EntitlementKind, str] = {
    playback_pb2.ENTITLEMENT_KIND_PURCHASE: "purchase",
    playback_pb2.ENTITLEMENT_KIND_RENTAL: "rental",
    playback_pb2.ENTITLEMENT_KIND_SUBSCRIPTION: "subscription",
}
KIND_FROM_TEXT = {v: k for k, v in KIND_TO_TEXT.items()}


@dataclass(frozen=True)
class PlaybackConfig:
    signing_key: bytes | None
    base_url: str              # the edge's base URL, else the origin's public one


@dataclass(frozen=True)
class Issued:
    grant: Grant
    token: str
    hls_url: str
    dash_url: str


def _client_ip(text: str) -> str:
    """The address in the form the verifier compares (RFC 5952 for IPv6)."""
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise RequestError(f"client_ip {text!r} is not an IPv4 or IPv6 address") from None


async def issue_playback(application: Application, grants: GrantStore,
                         config: PlaybackConfig, *, asset_id: str, viewer_id: str,
                         kind: str, reference: str, ttl_seconds: int, client_ip: str,
                         max_height: int) -> Issued:
    """Check, sign and record one grant (module docstring)."""
    if not asset_id:
        raise RequestError("asset_id is required")
    check_asset_id(asset_id)
    if kind not in KIND_FROM_TEXT:
        raise RequestError("entitlement.kind must be PURCHASE, RENTAL or SUBSCRIPTION")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise RequestError(f"ttl_seconds must be within 1..{MAX_TTL_SECONDS} (7 days), "
                           f"got {ttl_seconds}")
    if not 0 <= max_height <= MAX_HEIGHT_LIMIT:
        raise RequestError(f"max_height must be within 0..{MAX_HEIGHT_LIMIT}, got {max_height}")
    if len(viewer_id) > 256 or len(reference) > 256:
        raise RequestError("viewer_id and entitlement.reference are at most 256 characters")
    ip = _client_ip(client_ip)
    if not config.signing_key:
        raise FailedPrecondition("playback tokens are off on this origin (no CDLC_SIGNING_KEY)")
    view = await application.get(asset_id)
    if view.asset.state != JobState.READY:
        raise FailedPrecondition(f"asset {asset_id} is {view.asset.state}, not ready")
    now = time.time()
    # The token's expiry, as cdn.tokens.sign_for reckons it (whole seconds): it is
    # the grant's too, so it is computed once here rather than read back by
    # verifying the token (a second HMAC per call).
    expires = int(now + ttl_seconds)
    # Token version 2 names the viewer and the height limit: the origin and the
    # edge list and serve only the renditions the grant allows.
    token = sign(config.signing_key, asset_id, expires, ip or None,
                 viewer=viewer_id, max_height=max_height)
    grant = Grant(id=new_grant_id(now), asset_id=asset_id, viewer_id=viewer_id,
                  entitlement_kind=kind, entitlement_reference=reference,
                  max_height=max_height, client_ip=ip, issued_at=now, expires_at=expires)
    await grants.put(grant)
    base = config.base_url.rstrip("/")
    return Issued(grant, token, f"{base}/vod/{asset_id}/master.m3u8?token={token}",
                  f"{base}/vod/{asset_id}/manifest.mpd?token={token}")


def grant_message(grant: Grant) -> playback_pb2.Grant:
    return playback_pb2.Grant(
        grant_id=grant.id, asset_id=grant.asset_id, viewer_id=grant.viewer_id,
        entitlement=playback_pb2.Entitlement(kind=KIND_FROM_TEXT[grant.entitlement_kind],
                                             reference=grant.entitlement_reference),
        max_height=grant.max_height, client_ip=grant.client_ip,
        issued_at=timestamp(grant.issued_at), expires_at=timestamp(grant.expires_at))


class PlaybackServicer:
    """cdlc.stream.v1.PlaybackService."""

    def __init__(self, application: Application, grants: GrantStore,
                 config: PlaybackConfig) -> None:
        self.application, self.grants, self.config = application, grants, config

    @mapped
    async def IssuePlayback(self, request: playback_pb2.IssuePlaybackRequest,
                            context: Context) -> playback_pb2.IssuePlaybackResponse:
        issued = await issue_playback(
            self.application, self.grants, self.config, asset_id=request.asset_id,
            viewer_id=request.viewer_id, kind=KIND_TO_TEXT.get(request.entitlement.kind, ""),
            reference=request.entitlement.reference, ttl_seconds=request.ttl_seconds,
            client_ip=request.client_ip, max_height=request.max_height)
        return playback_pb2.IssuePlaybackResponse(
            hls_url=issued.hls_url, dash_url=issued.dash_url, token=issued.token,
            expires_at=timestamp(issued.grant.expires_at), grant_id=issued.grant.id)

    @mapped
    async def ListGrants(self, request: playback_pb2.ListGrantsRequest,
                         context: Context) -> playback_pb2.ListGrantsResponse:
        if not request.asset_id:
            raise RequestError("asset_id is required")
        check_asset_id(request.asset_id)
        size = request.page_size or 50
        if not 1 <= size <= MAX_PAGE:
            raise RequestError(f"page_size must be within 1..{MAX_PAGE}, got {size}")
        page = await self.grants.list_for_asset(request.asset_id, limit=size,
                                                after=request.page_token or None)
        return playback_pb2.ListGrantsResponse(
            grants=[grant_message(g) for g in page],
            next_page_token=page[-1].id if len(page) == size else "")
