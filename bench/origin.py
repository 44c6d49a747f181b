"""Origin serving speed against nginx serving the same bytes statically, one run.

    .venv/bin/python -m bench.origin [--seconds 5] [--repeats 3] [--connections 64]

Both servers get the same files: a 2 MiB media segment and the HLS master
playlist the origin builds (nginx serves a static copy of those bytes). For the
playlist a third server shows the ceiling aiohttp itself sets here: one route
answering the same bytes and headers (FLOOR_CODE). The origin
runs as `cdlc serve` does (origin.server.run over SQLite + in-process LRU + the
local object store, access log off) with 1 and 2 workers; nginx with as many
worker processes, sendfile on, access log off. wrk (64 connections, keep-alive)
measures req/s, MB/s and p99 latency; each figure is the median of `repeats` runs,
next to nginx's from the same run, with the ratio. Targets: segment req/s >= 0.5x
nginx, master playlist >= 0.3x nginx, origin p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cdn.edge import free_port
from metadata import open_objects, open_store
from metadata.models import Asset, Rendition, Segment, media_key
from tests.conftest import wait_http

ASSET = "bench1"
SEGMENT_BYTES = 2 * 2**20
N_SEGMENTS = 30


async def publish(data_dir: Path) -> None:
    """A published asset: v720 and audio, N segments of 2 MiB (video) each."""
    store, objects = open_store("", data_dir), open_objects("", data_dir)
    seg = os.urandom(SEGMENT_BYTES)
    rends = [
        Rendition(ASSET, "v720", "video", "h264", "avc1.64001f", 90000, 4_000_000,
                  width=1280, height=720, frame_rate="25"),
        Rendition(ASSET, "v360", "video", "h264", "avc1.64001e", 90000, 800_000,
                  width=640, height=360, frame_rate="25"),
        Rendition(ASSET, "audio", "audio", "aac", "mp4a.40.2", 48000, 128_000,
                  sample_rate=48000, channels=2),
    ]
    segs = []
    for r in rends:
        await objects.put_bytes(media_key(ASSET, r.id, "init.mp4"), os.urandom(800))
        for n in range(1, N_SEGMENTS + 1):
            await objects.put_bytes(media_key(ASSET, r.id, f"{n}.m4s"),
                                    seg if r.id == "v720" else seg[: 200_000])
            dur = 4 * r.timescale
            segs.append(Segment(ASSET, r.id, n, (n - 1) * dur, dur, SEGMENT_BYTES))
    await store.publish(Asset(ASSET, duration=4.0 * N_SEGMENTS), rends, segs)
    await store.close()


ORIGIN_CODE = """
from pathlib import Path
from metadata import open_cache, open_objects, open_store
from origin.app import OriginDeps, create_app
from origin.server import run

async def factory():
    d = Path({data!r})
    return create_app(OriginDeps(open_store("", d), open_objects("", d), open_cache(""),
                                 close_backends=True))

run(factory, "127.0.0.1", {port}, {workers})
"""

# The ceiling aiohttp itself sets on this machine: the same bytes and headers from
# one route, nothing else (no metadata, cache, metrics or middleware), served by
# the same server code. The origin can only approach it.
FLOOR_CODE = """
from aiohttp import web
from origin.server import run

BODY = open({body!r}, "rb").read()
HEADERS = {headers!r}

async def handler(request):
    return web.Response(body=BODY, headers=HEADERS)

async def factory():
    app = web.Application()
    app.router.add_get("/vod/{{asset}}/master.m3u8", handler)
    app.router.add_get("/healthz", handler)
    return app

run(factory, "127.0.0.1", {port}, {workers})
"""

NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp4 mp4 m4s;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {root};
        location /vod/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
            add_header Access-Control-Allow-Origin "*";
        }}
    }}
}}
"""


@dataclass
class Result:
    rps: float
    mbps: float
    p99_ms: float


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_SIZES = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}


def wrk(url: str, seconds: int, connections: int) -> Result:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    assert m, out
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", out)
    assert p99, out
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    return Result(rps, float(m.group(1)) * _SIZES[m.group(2)],
                  float(p99.group(1)) * _UNITS[p99.group(2)])


def median(results: list[Result]) -> Result:
    return Result(statistics.median(r.rps for r in results),
                  statistics.median(r.mbps for r in results),
                  statistics.median(r.p99_ms for r in results))


class Server:
    def __init__(self, argv: list[str], health: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_http(health)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        print("needs wrk and nginx (Makefile APT_PACKAGES: wrk nginx-light)", file=sys.stderr)
        return 2
    repo = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="cdlc-bench-origin-"))
    try:
        data = tmp / "data"
        asyncio.run(publish(data))
        # nginx's workers run as nobody: let them read the static tree.
        static = tmp / "static"
        seg_path = static / "vod" / ASSET / "v720" / "1.m4s"
        seg_path.parent.mkdir(parents=True)
        shutil.copyfile(data / "objects" / media_key(ASSET, "v720", "1.m4s"), seg_path)
        rows = []
        floors = []
        for workers in [int(w) for w in args.workers.split(",")]:
            port = free_port()
            origin = Server(
                [sys.executable, "-c",
                 ORIGIN_CODE.format(data=str(data), port=port, workers=workers)],
                f"http://127.0.0.1:{port}/healthz", cwd=repo,
            )
            try:
                base = f"http://127.0.0.1:{port}/vod/{ASSET}"
                with urllib.request.urlopen(f"{base}/master.m3u8") as resp:
                    (static / "vod" / ASSET / "master.m3u8").write_bytes(resp.read())
                    served_headers = {k: v for k, v in resp.headers.items()
                                      if k.lower() not in ("content-length", "date", "server",
                                                           "connection", "keep-alive")}
                for p in [tmp, *tmp.rglob("*")]:
                    if p.is_dir():
                        p.chmod(0o755)
                    else:
                        p.chmod(0o644)
                nport = free_port()
                conf = tmp / f"nginx-{workers}.conf"
                conf.write_text(textwrap.dedent(NGINX_CONF.format(
                    workers=workers, tmp=tmp, port=nport, root=static)))
                nginx = Server(["nginx", "-c", str(conf), "-p", str(tmp)],
                               f"http://127.0.0.1:{nport}/vod/{ASSET}/master.m3u8")
                fport = free_port()
                floor = Server(
                    [sys.executable, "-c", FLOOR_CODE.format(
                        body=str(static / "vod" / ASSET / "master.m3u8"),
                        headers=served_headers, port=fport, workers=workers)],
                    f"http://127.0.0.1:{fport}/healthz", cwd=repo,
                )
                try:
                    nbase = f"http://127.0.0.1:{nport}/vod/{ASSET}"
                    fbase = f"http://127.0.0.1:{fport}/vod/{ASSET}"
                    for what, path in (("2 MiB segment", "v720/1.m4s"),
                                       ("master playlist", "master.m3u8")):
                        o_runs, n_runs, f_runs = [], [], []
                        for _ in range(args.repeats):  # interleaved: same machine state
                            o_runs.append(wrk(f"{base}/{path}", args.seconds, args.connections))
                            n_runs.append(wrk(f"{nbase}/{path}", args.seconds, args.connections))
                            if path == "master.m3u8":
                                f_runs.append(wrk(f"{fbase}/{path}", args.seconds,
                                                  args.connections))
                        rows.append((workers, what, median(o_runs), median(n_runs)))
                        if f_runs:
                            floors.append((workers, median(o_runs), median(n_runs),
                                           median(f_runs)))
                        print(f"  done: {workers} worker(s), {what}", file=sys.stderr, flush=True)
                finally:
                    floor.stop()
                    nginx.stop()
            finally:
                origin.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nwrk -t2 -c{args.connections} -d{args.seconds}s, median of {args.repeats} "
          f"(origin and nginx interleaved)\n")
    print("| workers | object | origin req/s | nginx req/s | ratio | origin MB/s | nginx MB/s "
          "| origin p99 ms | nginx p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workers, what, o, n in rows:
        print(f"| {workers} | {what} | {o.rps:,.0f} | {n.rps:,.0f} | {o.rps / n.rps:.2f}x "
              f"| {o.mbps:,.1f} | {n.mbps:,.1f} | {o.p99_ms:.2f} | {n.p99_ms:.2f} |")
    print("\nMaster playlist against the aiohttp floor (one route, the same bytes and "
          "headers, same server code):\n")
    print("| workers | origin req/s | aiohttp floor req/s | nginx req/s | origin / floor "
          "| floor / nginx | floor p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for workers, o, n, f in floors:
        print(f"| {workers} | {o.rps:,.0f} | {f.rps:,.0f} | {n.rps:,.0f} | {o.rps / f.rps:.2f}x "
              f"| {f.rps / n.rps:.2f}x | {f.p99_ms:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
