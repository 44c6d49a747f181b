"""A social feed follows what friends watch.

Subscribes to cdlc-stream's watch events (EventService.SubscribeWatchEvents) and
prints one line per session start: ``viewer X started watching Y``. The cursor of
the last event handled is kept in a file, so a feed that is stopped (or loses its
connection) resumes where it was: nothing is missed, and at most the events
after the last saved cursor are seen again. Only the generated client code of
proto/cdlc/stream/v1 is used (make it with ``python proto/generate.py``).

    CDLC_GRPC=127.0.0.1:50051 CDLC_GRPC_TOKEN=... \\
        python examples/social_feed.py [--asset ASSET_ID] [--cursor-file feed.cursor]

CDLC_GRPC_TOKEN is the API key or a JWT with the scope events:read; leave it
unset for an origin without auth (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proto" / "gen"))

from cdlc.stream.v1 import events_pb2, events_pb2_grpc

# Transient failures worth reconnecting after; anything else (a bad token) ends.
RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
         grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def load_cursor(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text().strip()


def save_cursor(path: Path | None, cursor: str) -> None:
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(cursor)
        tmp.replace(path)       # atomic: a crash leaves the old or the new cursor


async def follow(target: str, token: str | None, asset: str, cursor_file: Path | None) -> int:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    cursor = load_cursor(cursor_file)
    delay = 0.5
    while True:
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                events = events_pb2_grpc.EventServiceStub(channel)  # type: ignore[no-untyped-call]
                call = events.SubscribeWatchEvents(
                    events_pb2.SubscribeWatchEventsRequest(cursor=cursor, asset_id=asset),
                    metadata=metadata)
                print("following watch events", file=sys.stderr, flush=True)
                async for item in call:
                    delay = 0.5
                    e = item.event
                    if e.type == events_pb2.WATCH_EVENT_TYPE_START:
                        print(f"viewer {e.viewer_id or '(anonymous)'} started watching "
                              f"{e.asset_id}", flush=True)
                    cursor = item.cursor
                    save_cursor(cursor_file, cursor)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRY:
                print(f"subscription refused: {exc.code().name}: {exc.details()}",
                      file=sys.stderr)
                return 1
            print(f"reconnecting after {exc.code().name}", file=sys.stderr, flush=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asset", default="", help="follow one asset only")
    ap.add_argument("--cursor-file", type=Path, default=None,
                    help="keep the last cursor here and resume from it")
    args = ap.parse_args()
    target = os.environ.get("CDLC_GRPC", "127.0.0.1:50051")
    try:
        return asyncio.run(follow(target, os.environ.get("CDLC_GRPC_TOKEN") or None,
                                  args.asset, args.cursor_file))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
