"""Edge benchmark: Zipf-distributed segment requests (s = 1.0) over 100 assets,
replayed with wrk through the nginx edge (cdn/nginx.py) in front of the real origin,
beside nginx serving the same files statically, in the same run.

Figures (medians of --reps runs, loopback only):
- static req/s: nginx with `root` on the object store, same request list;
- edge req/s, warm: the edge once every object is cached (all HITs), and its
  ratio to static (target >= 0.9);
- origin offload: share of requests that never reached the origin, counted by the
  origin's own /metrics, cold (the first --seconds from an empty cache) and warm
  (target >= 95 %);
- edge req/s with playback tokens on (njs HMAC per request), for the record.

    python -m bench.edge [--assets 100] [--requests 100000] [--seconds 3] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdn import tokens
from cdn.edge import NGINX, NginxEdge, free_port, wait_port
from cdn.nginx import default_worker_user
from tests.e2e.asset import Rung, clone_asset, make_asset
from tests.e2e.servers import OriginProcess

LUA = """
-- Replays a request list (one path a line), each thread from its own offset.
local paths = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  i = (tonumber(args[2]) or 0) % #paths
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""

STATIC_CONF = """
{user}
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 100000;
    open_file_cache max=20000 inactive=60s;
    open_file_cache_valid 1s;
    access_log {dir}/access.log combined buffer=64k flush=1s;
    default_type video/mp4;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /vod/ {{
            alias {objects}/media/;
            # What players get from the edge too (the same response headers).
            add_header Cache-Control "public, max-age=31536000, immutable";
            add_header Access-Control-Allow-Origin "*" always;
            add_header Access-Control-Expose-Headers "X-Cache, Content-Range, Age" always;
        }}
    }}
}}
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    non_2xx: int
    cpu_us: float = 0.0  # nginx worker CPU (user + system) per request, microseconds


def nginx_cpu_seconds(master_pid: int) -> float:
    """User + system CPU time of the workers of the nginx master `master_pid`
    (proc(5): fields 14 and 15 of /proc/PID/stat), in seconds."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:  # ppid
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, paths_file: Path, script: Path, seconds: float, connections: int,
            threads: int, nginx_pid: int) -> WrkResult:
    """One wrk run; also the server's CPU per request, which a loaded, shared
    machine disturbs far less than req/s (it does not count time spent waiting)."""
    cpu0 = nginx_cpu_seconds(nginx_pid)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
         "--latency", "-s", str(script), url, "--", str(paths_file), "0"],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    n = int(m.group(1))
    return WrkResult(n, float(m.group(2)) * scale, float(rps.group(1)),
                     int(bad.group(1)) if bad else 0,
                     (nginx_cpu_seconds(nginx_pid) - cpu0) / max(n, 1) * 1e6)


def origin_requests(origin_url: str) -> int:
    text = urllib.request.urlopen(origin_url + "/metrics", timeout=5).read().decode()
    total = 0.0
    for m in re.finditer(r"^cdlc_origin_requests_total\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
        if 'route="metrics"' not in m.group(1):
            total += float(m.group(2))
    return int(total)


def zipf_paths(catalog: list[str], n: int, s: float, seed: int) -> list[str]:
    """n draws from a Zipf law of exponent s over the catalog, popularity ranks
    shuffled so that hot objects are spread over assets and renditions."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(catalog) + 1, dtype=np.float64)
    p = ranks ** -s
    p /= p.sum()
    order = rng.permutation(len(catalog))
    picks = rng.choice(len(catalog), size=n, p=p)
    return [catalog[order[k]] for k in picks]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=100)
    ap.add_argument("--requests", type=int, default=100_000, help="length of the request list")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of one wrk run")
    ap.add_argument("--turns", type=int, default=3,
                    help="static/edge/edge+tokens runs in turn, per rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="nginx workers, edge and static")
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--json", action="store_true", help="print the medians as JSON too")
    args = ap.parse_args(argv)
    for tool in ("wrk", NGINX, "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"bench.edge: {tool} is needed (make setup installs it)", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="cdlc-bench-edge-"))
    try:
        return _run(args, work)
    finally:
        if not os.environ.get("CDLC_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    data = work / "data"
    t0 = time.monotonic()
    # One real encode, published under --assets ids as copies: a real catalog has
    # distinct bytes per object, and with hard links the static baseline would serve
    # 15 hot inodes from the CPU cache while the edge reads 1,500 cache files.
    base = make_asset(data, "bench000", seconds=12, ladder=(Rung(240, 426, 300),))
    assets = [base] + [clone_asset(data, "bench000", f"bench{i:03d}")
                       for i in range(1, args.assets)]
    catalog = [f"/vod/{a.asset_id}/{r}/{name}" for a in assets for r, n in a.renditions.items()
               for name in ["init.mp4", *(f"{k}.m4s" for k in range(1, n + 1))]]
    paths = zipf_paths(catalog, args.requests, args.zipf, seed=1)
    unique = len(set(paths))
    plain = work / "paths.txt"
    plain.write_text("\n".join(paths) + "\n")
    key = b"bench-edge-key"
    signed_tokens = {a.asset_id: tokens.sign_for(key, a.asset_id, 86400) for a in assets}
    with_tokens = work / "paths-token.txt"
    with_tokens.write_text("\n".join(f"{p}?token={signed_tokens[p.split('/')[2]]}"
                                     for p in paths) + "\n")
    script = work / "replay.lua"
    script.write_text(LUA)
    print(f"catalog: {len(catalog)} objects in {args.assets} assets; request list "
          f"{len(paths)} (zipf s={args.zipf}, {unique} distinct); setup "
          f"{time.monotonic() - t0:.1f}s", flush=True)

    static_dir = work / "static"
    static_dir.mkdir()
    sport = free_port()
    (static_dir / "nginx.conf").write_text(textwrap.dedent(STATIC_CONF.format(
        user=f"user {u};" if (u := default_worker_user(data)) else "", workers=args.workers,
        dir=static_dir, port=sport, objects=(data / "objects").resolve())))
    static = subprocess.Popen([NGINX, "-c", str(static_dir / "nginx.conf")],
                              stderr=subprocess.DEVNULL)
    rows: dict[str, list[float]] = {k: [] for k in (
        "static_rps", "edge_warm_rps", "ratio", "offload_cold", "offload_warm",
        "edge_token_rps", "token_ratio", "static_cpu", "edge_cpu", "token_cpu")}
    try:
        wait_port("127.0.0.1", sport)

        def wrk(url: str, paths_file: Path, pid: int) -> WrkResult:
            return run_wrk(url, paths_file, script, args.seconds, args.connections,
                           args.threads, pid)

        with OriginProcess(data, cli=True) as origin, \
                OriginProcess(data, signing_key=key, cli=True) as tok_origin:
            for rep in range(args.reps):
                edge = NginxEdge(origin.url, work / f"edge{rep}", worker_processes=args.workers)
                tok_edge = NginxEdge(tok_origin.url, work / f"edge-tok{rep}", signing_key=key,
                                     worker_processes=args.workers)
                with edge, tok_edge:
                    # Cold: an empty cache takes the request list as it comes.
                    before = origin_requests(origin.url)
                    cold = wrk(edge.url, plain, edge.pid)
                    _check(cold, "edge cold")
                    cold_fetches = origin_requests(origin.url) - before
                    # Then every object in (a plain pass over the catalog), and
                    # static, edge and edge-with-tokens measured in turns, so each
                    # ratio compares runs a few seconds apart on this shared box.
                    _warm(edge.url, catalog)
                    _warm(tok_edge.url, [f"{p}?token={signed_tokens[p.split('/')[2]]}"
                                         for p in catalog])
                    before = origin_requests(origin.url)
                    turns = []
                    for _ in range(args.turns):
                        st = wrk(f"http://127.0.0.1:{sport}", plain, static.pid)
                        ed = wrk(edge.url, plain, edge.pid)
                        tk = wrk(tok_edge.url, with_tokens, tok_edge.pid)
                        for r, what in ((st, "static"), (ed, "edge warm"), (tk, "edge tokens")):
                            _check(r, what)
                        turns.append((st, ed, tk))
                    warm_fetches = origin_requests(origin.url) - before
                st_rps = statistics.median(t[0].rps for t in turns)
                ed_rps = statistics.median(t[1].rps for t in turns)
                tk_rps = statistics.median(t[2].rps for t in turns)
                rows["static_rps"].append(st_rps)
                rows["edge_warm_rps"].append(ed_rps)
                rows["ratio"].append(statistics.median(t[1].rps / t[0].rps for t in turns))
                rows["offload_cold"].append(1 - cold_fetches / cold.requests)
                rows["offload_warm"].append(
                    1 - warm_fetches / sum(t[1].requests for t in turns))
                rows["edge_token_rps"].append(tk_rps)
                rows["token_ratio"].append(statistics.median(t[2].rps / t[0].rps for t in turns))
                for key_, i in (("static_cpu", 0), ("edge_cpu", 1), ("token_cpu", 2)):
                    rows[key_].append(statistics.median(t[i].cpu_us for t in turns))
                print(f"rep {rep + 1}: static {st_rps:,.0f} req/s | edge warm {ed_rps:,.0f} "
                      f"req/s ({rows['ratio'][-1]:.2f}x) | offload cold "
                      f"{rows['offload_cold'][-1]:.1%} warm {rows['offload_warm'][-1]:.2%} | "
                      f"edge+tokens {tk_rps:,.0f} req/s ({rows['token_ratio'][-1]:.2f}x) | "
                      f"CPU/req static {rows['static_cpu'][-1]:.1f} us, edge "
                      f"{rows['edge_cpu'][-1]:.1f} us, tokens {rows['token_cpu'][-1]:.1f} us",
                      flush=True)
    finally:
        static.terminate()
        static.wait()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print()
    print(f"| figure (median of {args.reps}) | value |")
    print("|---|---|")
    print(f"| nginx static, req/s | {med['static_rps']:,.0f} |")
    print(f"| edge, warm (HIT), req/s | {med['edge_warm_rps']:,.0f} |")
    print(f"| edge / static | {med['ratio']:.2f}x (target >= 0.9) |")
    print(f"| origin offload, cold start (first {args.seconds:g} s) | "
          f"{med['offload_cold']:.1%} |")
    print(f"| origin offload, warm | {med['offload_warm']:.2%} (target >= 95%) |")
    print(f"| edge with tokens (njs HMAC), req/s | {med['edge_token_rps']:,.0f} "
          f"({med['token_ratio']:.2f}x static) |")
    print(f"| nginx worker CPU per request: static / edge / edge+tokens | "
          f"{med['static_cpu']:.1f} / {med['edge_cpu']:.1f} / {med['token_cpu']:.1f} us "
          f"(static/edge {med['static_cpu'] / med['edge_cpu']:.2f}x) |")
    if args.json:
        print(json.dumps(med))
    return 0


def _warm(base: str, paths: list[str]) -> None:
    for p in paths:
        with urllib.request.urlopen(base + p, timeout=10) as r:
            r.read()


def _check(result: WrkResult, what: str) -> None:
    if result.non_2xx:
        raise RuntimeError(f"{what}: {result.non_2xx} non-2xx responses")


if __name__ == "__main__":
    raise SystemExit(main())
