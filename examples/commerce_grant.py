"""A commerce service grants playback after a purchase.

When an order is paid, the shop asks cdlc-stream for playback URLs for the
buyer (PlaybackService.IssuePlayback with a PURCHASE entitlement naming the
order) and hands the HLS URL to the buyer's player. Only the generated client
code of proto/cdlc/stream/v1 is used (make it with ``python proto/generate.py``).

    CDLC_GRPC=127.0.0.1:50051 CDLC_GRPC_TOKEN=... \\
        python examples/commerce_grant.py ASSET_ID --order ORDER --viewer VIEWER \\
        [--ttl 86400] [--client-ip 203.0.113.7] [--max-height 1080]

CDLC_GRPC_TOKEN is the API key or a JWT with the scope playback:issue; leave it
unset for an origin without auth (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc

# The generated code lives in proto/gen (its modules import each other as
# cdlc.stream.v1.*). A service of your own would vendor or package it instead.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proto" / "gen"))

from cdlc.stream.v1 import playback_pb2, playback_pb2_grpc


async def grant(target: str, token: str | None, args: argparse.Namespace) -> int:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(target) as channel:
        playback = playback_pb2_grpc.PlaybackServiceStub(channel)
        try:
            reply = await playback.IssuePlayback(
                playback_pb2.IssuePlaybackRequest(
                    asset_id=args.asset_id, viewer_id=args.viewer,
                    entitlement=playback_pb2.Entitlement(
                        kind=playback_pb2.ENTITLEMENT_KIND_PURCHASE, reference=args.order),
                    ttl_seconds=args.ttl, client_ip=args.client_ip,
                    max_height=args.max_height),
                metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND / FAILED_PRECONDITION: the title is not (yet) playable;
            # PERMISSION_DENIED: this service's token lacks playback:issue.
            print(f"playback refused: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"order {args.order}: grant {reply.grant_id}, "
          f"valid until {reply.expires_at.ToDatetime().isoformat()}Z")
    print(f"HLS:  {reply.hls_url}")
    print(f"DASH: {reply.dash_url}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Issue playback for a paid order.")
    parser.add_argument("asset_id")
    parser.add_argument("--order", required=True, help="the paid order's id")
    parser.add_argument("--viewer", required=True, help="the buyer's id")
    parser.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (max 7 days)")
    parser.add_argument("--client-ip", default="", help="bind the URLs to this address")
    parser.add_argument("--max-height", type=int, default=0, help="highest rendition")
    args = parser.parse_args()
    target = os.environ.get("CDLC_GRPC", "127.0.0.1:50051")
    return asyncio.run(grant(target, os.environ.get("CDLC_GRPC_TOKEN") or None, args))


if __name__ == "__main__":
    sys.exit(main())
