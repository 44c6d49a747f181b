"""Run the real origin (origin.app.create_app over the embedded backends of a data
dir) as its own process, for the edge and player tests and bench/edge.py:

    python -m tests.e2e.origin_main --data-dir D --port P [--signing-key-hex K]

It wires the same parts as `cdlc serve` (SQLite store, local objects, in-process
cache) without the engine, so these tests do not wait on the transcoder.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--signing-key-hex", default="")
    args = ap.parse_args(argv)
    key = bytes.fromhex(args.signing_key_hex) if args.signing_key_hex else None
    data_dir: Path = args.data_dir

    async def factory() -> web.Application:
        from metadata import open_cache, open_objects, open_store
        from origin.app import OriginDeps, create_app

        deps = OriginDeps(
            store=open_store("", data_dir), objects=open_objects("", data_dir),
            cache=open_cache(""), signing_key=key,
        )
        return create_app(deps)

    from origin.server import run

    logging.basicConfig(level=logging.WARNING)
    run(factory, args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
