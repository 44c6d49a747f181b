"""Watch-event intake against its backing store's raw append rate.

    python -m bench.events [--seconds 5] [--connections 64] [--backends sqlite,redis]

For each backend (the SQLite log in a temp metadata.db; Redis Streams at
127.0.0.1:6379 when one answers):

- **ceiling**: the store's raw append rate with nothing of ours: SQLite inserts of
  20 rows per transaction (the log's schema and pragmas), Redis XADD pipelined 20
  at a time;
- **HTTP**: ``POST /v1/events`` with batches of 20 fresh events from
  ``--connections`` keep-alive connections, against the intake in a server
  process of its own (origin.events over the same store): driven by wrk (two
  threads, a Lua script that writes each batch; what the store holds afterwards
  is what was accepted) and, beside it, by a Python aiohttp client; events per
  second accepted and the request latency p50/p99 of each;
- **gRPC**: ``RecordWatchEvents`` client streams (8 at once) against the same
  server, each message a batch of 20 events (``events``); events per second
  accepted.

The ceiling is measured before and after the loads and averaged (both are
printed): on a shared machine the others' load drifts during a run. The ratios
HTTP / ceiling and gRPC / ceiling are what the bar (>= 0.3x) is about. The
client and the server share this machine's cores, as the ceiling's loop does
not: the ratios are conservative. The aiohttp client costs about as much CPU per
event as the server (measured: ~57 against ~40 µs), so on two cores it halves
what the server can show; wrk (C, as bench/origin.py uses) costs a few µs, so
its row is the intake's own rate; both are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BATCH = 20
GRPC_STREAMS = 8
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


_TEMPLATE = ('{"event_id":"%s-%d","session_id":"%s","asset_id":"bench","viewer_id":"v",'
             '"type":"heartbeat","time":%.3f,"position_seconds":%.1f,'
             '"rendition_id":"v720","bitrate":3000000}')


def _event(session: str, n: int) -> dict[str, Any]:
    return {"event_id": f"{session}-{n}", "session_id": session, "asset_id": "bench",
            "viewer_id": "v", "type": "heartbeat", "time": time.time(),
            "position_seconds": float(n), "rendition_id": "v720", "bitrate": 3_000_000}


# -- the ceilings ----------------------------------------------------------------------

def sqlite_ceiling(path: Path, seconds: float) -> float:
    from metadata.event_log_sqlite import _SCHEMA

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(_SCHEMA)
    session, n, t0 = uuid.uuid4().hex, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rows = []
        for _ in range(BATCH):
            e = _event(session, n)
            rows.append((e["event_id"], e["time"], json.dumps(e)))
            n += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR IGNORE INTO watch_events (event_id, recorded_at, body)"
                         " VALUES (?,?,?)", rows)
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


async def redis_ceiling(prefix: str, seconds: float) -> float:
    import redis.asyncio as aioredis

    client: Any = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    session, n, t0 = uuid.uuid4().hex, 0, time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            pipe = client.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.xadd(f"{prefix}:raw", {"e": json.dumps(_event(session, n))},
                          maxlen=1_000_000, approximate=True)
                n += 1
            await pipe.execute()
        return n / (time.perf_counter() - t0)
    finally:
        await client.delete(f"{prefix}:raw")
        await client.aclose()


# -- the server ------------------------------------------------------------------------

def serve(backend: str, data: Path, http_port: int, grpc_port: int) -> None:
    import grpc.aio
    from aiohttp import web

    from metadata.event_log import open_event_log
    from origin.events import EventIntake, IntakeLimits, add_event_routes
    from origin.grpc_events import EventServicer
    from origin.grpc_proto import events_pb2_grpc

    async def main() -> None:
        intake = EventIntake(open_event_log(backend, data),
                             limits=IntakeLimits(rate=1e9, burst=1e9))
        app = web.Application()
        add_event_routes(app, intake)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", http_port).start()
        server = grpc.aio.server()
        events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(intake), server)
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the load ---------------------------------------------------------------------------

# wrk's request() builds each batch: 20 fresh ids per request (prefix: this run,
# this thread), the same fields as _TEMPLATE.
_WRK_LUA = """
local counter, thread_no = 0, 0
setup = function(thread) thread:set("no", thread_no); thread_no = thread_no + 1 end
init = function(args) prefix = args[1] .. "-" .. no .. "-" end
request = function()
  local parts, now = {}, os.time()
  for i = 1, {batch} do
    counter = counter + 1
    parts[i] = string.format('{"event_id":"%s%d","session_id":"%s","asset_id":"bench",'
      .. '"viewer_id":"v","type":"heartbeat","time":%d,"position_seconds":%d,'
      .. '"rendition_id":"v720","bitrate":3000000}', prefix, counter, prefix, now, counter)
  end
  return wrk.format("POST", nil, {["Content-Type"] = "text/plain"},
                    "[" .. table.concat(parts, ",") .. "]")
end
""".replace("{batch}", str(BATCH))
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_load(url: str, connections: int, seconds: float, work: Path,
             count: Any) -> dict[str, float]:
    """POST batches with wrk; accepted = what the store gained (``count()``)."""
    script = work / "events.lua"
    script.write_text(_WRK_LUA)
    before = count()
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), url, "--", uuid.uuid4().hex],
        check=True, capture_output=True, text=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    wall = max(1, round(seconds))
    accepted = count() - before

    def pct(name: str) -> float:
        m = re.search(rf"{name}%\s+([\d.]+)(us|ms|s|m)\b", out)
        assert m, out
        return float(m.group(1)) * _UNITS[m.group(2)]
    return {"events_per_s": accepted / wall, "p50_ms": pct("50"), "p99_ms": pct("99")}


def store_count(backend: str, data: Path) -> Any:
    """A function counting the events the server's log holds."""
    if not backend:
        def sqlite_count() -> int:
            conn = sqlite3.connect(data / "metadata.db")
            try:
                return int(conn.execute("SELECT COUNT(*) FROM watch_events").fetchone()[0])
            finally:
                conn.close()
        return sqlite_count
    prefix = backend.split("prefix=", 1)[1]

    def redis_count() -> int:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            return int(client.xlen(f"{prefix}:log"))
        finally:
            client.close()
    return redis_count

async def http_load(url: str, connections: int, seconds: float) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    accepted = 0
    end = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        sid, n = uuid.uuid4().hex, 0
        while time.perf_counter() < end:
            # Built by formatting, not json.dumps of dicts: the load generator
            # shares the cores with the server, so it should cost little.
            now = time.time()
            body = "[" + ",".join(_TEMPLATE % (sid, n + i, sid, now, float(n + i))
                                  for i in range(BATCH)) + "]"
            n += BATCH
            t0 = time.perf_counter()
            async with session.post(url, data=body,
                                    headers={"Content-Type": "text/plain"}) as r:
                doc = await r.json()
            latencies.append(time.perf_counter() - t0)
            accepted += int(doc["accepted"])

    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"events_per_s": accepted / wall,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000}


async def grpc_load(target: str, seconds: float) -> float:
    import grpc.aio
    from google.protobuf.timestamp_pb2 import Timestamp

    from origin.grpc_proto import events_pb2, events_pb2_grpc

    end = time.perf_counter() + seconds
    accepted = 0

    async def stream(stub: Any) -> None:
        nonlocal accepted
        sid = uuid.uuid4().hex

        async def gen() -> Any:
            n = 0
            ts = Timestamp()
            ts.GetCurrentTime()
            while time.perf_counter() < end:
                yield events_pb2.RecordWatchEventsRequest(events=[events_pb2.WatchEvent(
                    event_id=f"{sid}-{i}", session_id=sid, asset_id="bench", viewer_id="v",
                    type=events_pb2.WATCH_EVENT_TYPE_HEARTBEAT, time=ts,
                    position_seconds=float(i), rendition_id="v720", bitrate=3_000_000)
                    for i in range(n, n + BATCH)])
                n += BATCH
                # Let the other streams' messages (and the server) have the loop.
                await asyncio.sleep(0)
        reply = await stub.RecordWatchEvents(gen())
        accepted += reply.accepted

    async with grpc.aio.insecure_channel(target) as ch:
        stub = events_pb2_grpc.EventServiceStub(ch)
        t0 = time.perf_counter()
        await asyncio.gather(*(stream(stub) for _ in range(GRPC_STREAMS)))
        wall = time.perf_counter() - t0
    return accepted / wall


def run_backend(name: str, seconds: float, connections: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cdlc-bench-events-"))
    prefix = f"bench:events:{uuid.uuid4().hex}"
    backend = "" if name == "sqlite" else f"redis://127.0.0.1:6379/0?prefix={prefix}"

    def raw_rate(n: int) -> float:
        if name == "sqlite":
            return sqlite_ceiling(tmp / f"ceiling{n}.db", seconds)
        return asyncio.run(redis_ceiling(f"{prefix}:{n}", seconds))

    # The ceiling before and after the loads, averaged: on a shared machine the
    # load of others drifts, and one ceiling taken first alone skews the ratios.
    before = raw_rate(0)
    http_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.events", "--serve", backend or "sqlite",
         "--data", str(tmp), "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the events server did not start")
        url = f"http://127.0.0.1:{http_port}/v1/events"
        wrk = (wrk_load(url, connections, seconds, tmp, store_count(backend, tmp))
               if shutil.which("wrk") else None)
        http = asyncio.run(http_load(url, connections, seconds))
        grpc_rate = asyncio.run(grpc_load(f"127.0.0.1:{grpc_port}", seconds))
    finally:
        proc.terminate()
        proc.wait(10)
    after = raw_rate(1)
    if name == "redis":
        asyncio.run(_drop(prefix))
    ceiling = (before + after) / 2
    return {"backend": name, "ceiling": ceiling, "before": before, "after": after,
            "wrk": wrk, "http": http["events_per_s"],
            "http_p50_ms": http["p50_ms"], "http_p99_ms": http["p99_ms"], "grpc": grpc_rate}


async def _drop(prefix: str) -> None:
    import redis.asyncio as aioredis

    client: Any = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=10_000)]
    for i in range(0, len(keys), 10_000):
        await client.delete(*keys[i:i + 10_000])
    await client.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--backends", default="sqlite,redis")
    ap.add_argument("--serve", default="", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--http-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--grpc-port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve("" if args.serve == "sqlite" else args.serve, args.data, args.http_port,
              args.grpc_port)
        return 0
    rows = []
    for name in args.backends.split(","):
        if name == "redis" and not _redis_up():
            print("redis: nothing answers on 127.0.0.1:6379, skipped", file=sys.stderr)
            continue
        rows.append(run_backend(name, args.seconds, args.connections))
    print(f"| backend | raw append ev/s (before / after) | HTTP ev/s, wrk | HTTP / raw | "
          f"p50 / p99 ms ({args.connections} conns) | HTTP ev/s, aiohttp client | "
          f"HTTP / raw | p50 / p99 ms | gRPC ev/s ({GRPC_STREAMS} streams) | gRPC / raw |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w = r["wrk"]
        wrk_cells = (f"{w['events_per_s']:,.0f} | **{w['events_per_s'] / r['ceiling']:.2f}x** | "
                     f"{w['p50_ms']:.1f} / {w['p99_ms']:.1f}") if w else "- | - | -"
        print(f"| {r['backend']} | {r['ceiling']:,.0f} ({r['before']:,.0f} / "
              f"{r['after']:,.0f}) | {wrk_cells} | {r['http']:,.0f} | "
              f"**{r['http'] / r['ceiling']:.2f}x** | {r['http_p50_ms']:.1f} / "
              f"{r['http_p99_ms']:.1f} | {r['grpc']:,.0f} | **{r['grpc'] / r['ceiling']:.2f}x** |")
    print(f"(HTTP and gRPC: batches of {BATCH} events per request or message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
