"""Soak: the whole stack under steady load while its backends fail on a schedule.

    python -m bench.soak --minutes 10      # the soak
    python -m bench.soak --minutes 1       # quick mode: one fault cycle

A real stack on 127.0.0.1: a moto S3 server as the object store
(``CDLC_STORAGE=s3://bucket/prefix``, ``CDLC_S3_ENDPOINT``), a redis-server as the
cache (``CDLC_CACHE``), SQLite metadata, `cdlc serve` (one worker), and the nginx edge
rendered by `cdlc cdn nginx-config` in front, with ``CDLC_EDGES`` pointing the origin
at it (a delete purges it). Three small assets are ingested with `cdlc ingest`.

Load: wrk against the edge for the whole run, a Lua script cycling through every
segment, init segment and manifest of the three assets, in back-to-back 5 s runs so
each run can be placed inside or outside a fault window. Its Lua ``response()``
counts statuses and every 200 whose body length differs from its Content-Length.

Faults, every minute (seconds into the minute):

- 8: Redis SIGKILLed, 18: started again on its port (the cache falls back to the
  in-process LRU meanwhile, its breaker open);
- 26: the S3 server SIGSTOPped (connections accepted, never answered), 34: SIGCONT;
- 42: one asset deleted through the admin API; its origin URLs are fetched at
  once (each must be 404); then ingested again through the admin API (POST
  /v1/assets) and waited for until ready.

A fault window runs from the fault to its end plus ``GRACE`` seconds (breaker
cooldowns, the edge's 1 s negative cache). Beside wrk, a checker fetches one
catalog URL every 0.2 s from the origin directly (so S3 and Redis are on its path;
the edge's cache hides them from wrk) and one from the edge, reads each body whole
and compares it with Content-Length and with the bytes first seen for that URL.

Every minute: requests, req/s, non-2xx by status, p99 latency (the worst of that
minute's 5 s wrk runs), socket errors, the checker's 5xx inside and outside windows,
wrong responses, the origin's RSS. The verdict: 0 wrong responses (a short 200,
changed bytes, a deleted asset served by the origin), no 5xx outside fault windows,
RSS flat (last minute within 10 % of the first).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cdn.edge import NGINX, free_port, wait_port
from tests.media import make_master
from tests.metadata.servers import ServerProcess, make_bucket, own_moto, own_redis

ROOT = Path(__file__).resolve().parents[1]
CDLC = str(Path(sys.executable).parent / "cdlc")
ASSETS = ("soak-a", "soak-b", "soak-churn")
CHURN = "soak-churn"
RENDITIONS = ("v240", "audio")
SEGMENT_SECONDS = 2.0
MASTER_SECONDS = 8.0
CHUNK_SECONDS = 5
GRACE = 5.0
# Seconds into each minute: (what, start, end); the delete's end is when the
# asset is ready again.
SCHEDULE = (("redis killed", 8.0, 18.0), ("s3 stopped", 26.0, 34.0), ("delete+ingest", 42.0, 0))
FAULTS = {"redis": "redis killed", "s3": "s3 stopped", "delete": "delete+ingest"}

LUA = r"""
-- Cycles through a path list; counts statuses and short 200s (body length vs
-- Content-Length); done() prints them for all threads.
local paths = {}
local i = 0
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  pause_ms = tonumber(args[2]) or 0
  i = (id * 7919) % #paths
  statuses = {}
  short = 0
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
-- A pause before each request on a connection (ms): a steady load, not a stress
-- test that takes every core of a shared machine.
function delay()
  return pause_ms
end
function response(status, headers, body)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
  if status == 200 then
    local n = headers["Content-Length"] or headers["content-length"]
    if n and tonumber(n) ~= #body then short = short + 1 end
  end
end
function done(summary, latency, requests)
  local total = {}
  local wrong = 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
    wrong = wrong + t:get("short")
  end
  for k, v in pairs(total) do io.write("STATUS " .. k .. " " .. v .. "\n") end
  io.write("WRONG " .. wrong .. "\n")
  io.write(string.format("P99 %.3f\n", latency:percentile(99) / 1000))
  local e = summary.errors
  io.write(string.format("TOTAL %d %d\n", summary.requests,
                         e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Chunk:
    """One wrk run."""

    start: float
    end: float
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    short: int = 0
    p99_ms: float = 0.0
    socket_errors: int = 0


@dataclass
class Probe:
    """One checker fetch that was not a clean 2xx."""

    at: float  # sent
    done: float  # answered (or failed)
    where: str  # "origin" | "edge"
    path: str
    status: int  # 0: no status (connection failed or cut)
    what: str


@dataclass
class Run:
    t0: float
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    probe_count: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # MiB at the end of each minute
    breakers: list[tuple[float, dict[str, str]]] = field(default_factory=list)  # /readyz
    load: list[float] = field(default_factory=list)  # 1-min load average, each minute
    deletes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def in_window(self, start: float, end: float) -> bool:
        return any(start < w_end + GRACE and end > w_start for _, w_start, w_end in self.windows)


def _env(data: Path, bucket: str, endpoint: str, redis_port: int, edge: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CDLC_DATA_DIR": str(data),
            "CDLC_STORAGE": f"s3://{bucket}/soak", "CDLC_S3_ENDPOINT": endpoint,
            "CDLC_CACHE": f"redis://127.0.0.1:{redis_port}/0", "CDLC_EDGES": edge,
            "CDLC_API_KEY": "", "CDLC_SIGNING_KEY": "",
            "CDLC_SEGMENT_SECONDS": str(SEGMENT_SECONDS), "CDLC_PRESET": "ultrafast"}


def _catalog(segments: dict[str, int]) -> list[str]:
    out = []
    for asset in ASSETS:
        out += [f"/vod/{asset}/master.m3u8", f"/vod/{asset}/manifest.mpd"]
        for r in RENDITIONS:
            out += [f"/vod/{asset}/{r}/media.m3u8", f"/vod/{asset}/{r}/init.mp4"]
            out += [f"/vod/{asset}/{r}/{n}.m4s" for n in range(1, segments[r] + 1)]
    return out


def _fetch(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) with the body read whole; raises on a cut body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _multipart(fields: dict[str, str], file: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{file.name}"\r\nContent-Type: video/mp4\r\n\r\n'.encode()
                 + file.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Stack:
    """moto, Redis, `cdlc serve` and the nginx edge, started and stopped together."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.data = work / "data"
        self.master = work / "master.mp4"
        self.moto: ServerProcess | None = None
        self.redis: ServerProcess | None = None
        self.origin: subprocess.Popen[bytes] | None = None
        self.edge: subprocess.Popen[bytes] | None = None
        self.origin_port = free_port()
        self.edge_port = free_port()
        self.origin_url = f"http://127.0.0.1:{self.origin_port}"
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        self.env: dict[str, str] = {}
        self.segments: dict[str, int] = {}

    def start(self) -> None:
        self.moto = own_moto().start()
        bucket = make_bucket(self.moto.url)
        self.redis = own_redis().start()
        self.env = _env(self.data, bucket, self.moto.url, self.redis.port, self.edge_url)
        make_master(self.master, seconds=MASTER_SECONDS, width=320, height=240)
        for asset in ASSETS:
            out = subprocess.run([CDLC, "ingest", str(self.master), "--id", asset,
                                  "--ladder", "240:300", "--json"],
                                 env=self.env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"ingest {asset}: {out.stderr.strip()}")
            self.segments = {r["id"]: r["segments"] for r in json.loads(out.stdout)["renditions"]}
        log = (self.work / "origin.log").open("ab")
        self.origin = subprocess.Popen(
            [CDLC, "serve", "--host", "127.0.0.1", "--port", str(self.origin_port),
             "--workers", "1"], env=self.env, cwd=ROOT, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL)
        log.close()
        wait_port("127.0.0.1", self.origin_port, 30)
        conf = subprocess.run(
            [CDLC, "cdn", "nginx-config", "--origin", self.origin_url, "--listen",
             f"127.0.0.1:{self.edge_port}", "--cache-dir", str(self.work / "edge"),
             "--foreground"], env=self.env, capture_output=True, text=True, check=True).stdout
        (self.work / "edge").mkdir(exist_ok=True)
        (self.work / "edge" / "nginx.conf").write_text(conf)
        self.edge = subprocess.Popen([NGINX, "-c", str(self.work / "edge" / "nginx.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port("127.0.0.1", self.edge_port, 10)

    def stop(self) -> None:
        for proc in (self.edge, self.origin):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for server in (self.redis, self.moto):
            if server is not None:
                server.stop()

    # -- faults ----------------------------------------------------------------------
    def kill_redis(self) -> None:
        assert self.redis is not None
        self.redis.kill()

    def start_redis(self) -> None:
        assert self.redis is not None
        self.redis = own_redis(self.redis.port).start()

    def delete_and_ingest(self, run: Run) -> None:
        """DELETE the churn asset, check the origin no longer serves it, POST it
        again and wait until it is ready."""
        req = urllib.request.Request(f"{self.origin_url}/v1/assets/{CHURN}", method="DELETE")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204, r.status
        paths = [f"/vod/{CHURN}/master.m3u8", f"/vod/{CHURN}/manifest.mpd"] + [
            f"/vod/{CHURN}/{r}/{name}" for r in RENDITIONS
            for name in ("media.m3u8", "init.mp4", "1.m4s")]
        served = []
        for p in paths:
            status, _, _ = _fetch(self.origin_url + p)
            if status != 404:
                served.append(f"{p} -> {status}")
        with run.lock:
            run.deletes.append(f"{len(paths) - len(served)}/{len(paths)} origin URLs 404")
            run.wrong += [f"deleted asset served by the origin: {s}" for s in served]
        body, ctype = _multipart({"id": CHURN, "ladder": "240:300", "preset": "ultrafast",
                                  "segment_seconds": str(SEGMENT_SECONDS)}, self.master)
        req = urllib.request.Request(f"{self.origin_url}/v1/assets", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 202, r.status
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, _, raw = _fetch(f"{self.origin_url}/v1/assets/{CHURN}")
            if status == 200:
                state = json.loads(raw)["state"]
                if state == "ready":
                    return
                if state == "failed":
                    raise RuntimeError(f"re-ingest failed: {raw[:300]!r}")
            time.sleep(0.2)
        raise RuntimeError("re-ingest did not finish in 120 s")


def _wrk_loop(stack: Stack, run: Run, paths_file: Path, script: Path, end: float,
              connections: int, pause_ms: float) -> None:
    while time.monotonic() < end - 1:
        seconds = max(1, min(CHUNK_SECONDS, int(end - time.monotonic())))
        chunk = Chunk(start=time.monotonic(), end=0.0)
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
             "--timeout", "10s", "-s", str(script), stack.edge_url, "--", str(paths_file),
             f"{pause_ms:g}"],
            capture_output=True, text=True, check=False).stdout
        chunk.end = time.monotonic()
        for m in re.finditer(r"^STATUS (\d+) (\d+)$", out, re.M):
            chunk.statuses[int(m.group(1))] += int(m.group(2))
        total = re.search(r"^TOTAL (\d+) (\d+)$", out, re.M)
        wrong = re.search(r"^WRONG (\d+)$", out, re.M)
        p99 = re.search(r"^P99 ([\d.]+)$", out, re.M)
        if total is None or wrong is None or p99 is None:
            raise RuntimeError(f"cannot read wrk's output:\n{out}")
        chunk.requests, chunk.socket_errors = int(total.group(1)), int(total.group(2))
        chunk.short, chunk.p99_ms = int(wrong.group(1)), float(p99.group(1))
        with run.lock:
            run.chunks.append(chunk)


def _checker(stack: Stack, run: Run, catalog: list[str], end: float) -> None:
    """Fetch catalog URLs one by one from the origin and the edge; judge each."""
    seen: dict[str, str] = {}  # path -> sha256 of the bytes first served
    i = 0
    while time.monotonic() < end:
        for where, base in (("origin", stack.origin_url), ("edge", stack.edge_url)):
            path = catalog[i % len(catalog)]
            at = time.monotonic()
            try:
                status, headers, body = _fetch(base + path)
            except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
                # A cut body or a refused connection: an error the client sees,
                # never a complete wrong answer.
                with run.lock:
                    run.probes.append(Probe(at, time.monotonic(), where, path, 0,
                                            type(exc).__name__))
                    run.probe_count[where] += 1
                continue
            with run.lock:
                run.probe_count[where] += 1
                length = headers.get("Content-Length")
                if status == 200 and length is not None and int(length) != len(body):
                    run.wrong.append(f"{where} {path}: 200 with {len(body)} of {length} bytes")
                if status == 200 and path.endswith((".m4s", ".mp4")) and CHURN not in path:
                    digest = hashlib.sha256(body).hexdigest()
                    if seen.setdefault(path, digest) != digest:
                        run.wrong.append(f"{where} {path}: other bytes than first served")
                if status >= 300:
                    run.probes.append(Probe(at, time.monotonic(), where, path, status, ""))
        i += 1
        time.sleep(0.2)


def _breakers(stack: Stack, run: Run, end: float) -> None:
    """The origin's circuit breakers (/readyz) twice a second."""
    while time.monotonic() < end:
        at = time.monotonic()
        try:
            _, _, raw = _fetch(stack.origin_url + "/readyz", timeout=5)
            states = json.loads(raw).get("breakers", {})
        except (OSError, ValueError, http.client.HTTPException):
            states = {}
        with run.lock:
            run.breakers.append((at, states))
        time.sleep(max(0.0, 0.5 - (time.monotonic() - at)))


def _minute_rows(run: Run, minutes: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for m in range(minutes):
        lo, hi = run.t0 + 60 * m, run.t0 + 60 * (m + 1)
        chunks = [c for c in run.chunks if lo <= c.start < hi]
        statuses: Counter[int] = Counter()
        for c in chunks:
            statuses.update(c.statuses)
        requests = sum(c.requests for c in chunks)
        secs = sum(c.end - c.start for c in chunks) or 1.0
        probes = [p for p in run.probes if lo <= p.at < hi]
        rows.append({
            "minute": m + 1,
            "requests": requests,
            "rps": requests / secs,
            "non2xx": {s: n for s, n in sorted(statuses.items()) if not 200 <= s < 300},
            "p99_ms": max((c.p99_ms for c in chunks), default=0.0),
            "socket_errors": sum(c.socket_errors for c in chunks),
            "short": sum(c.short for c in chunks),
            "probe_5xx_in": sum(1 for p in probes if p.status >= 500
                                and run.in_window(p.at, p.done)),
            "probe_5xx_out": sum(1 for p in probes if p.status >= 500
                                 and not run.in_window(p.at, p.done)),
            "rss_mib": run.rss[m] if m < len(run.rss) else 0.0,
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=10, help="duration (1: one fault cycle)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument("--pause-ms", type=float, default=2.0,
                    help="wrk's pause before each request on a connection (0: flat out)")
    ap.add_argument("--faults", default="redis,s3,delete",
                    help="which faults to inject: a comma list of redis, s3, delete; "
                         "'none' for the same load on a healthy stack")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args(argv)
    args.faults = set() if args.faults == "none" else set(args.faults.split(","))
    if args.faults - set(FAULTS):
        ap.error(f"unknown fault(s) {sorted(args.faults - set(FAULTS))}; choose from {FAULTS}")
    for tool in ("wrk", NGINX, "redis-server", "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"bench.soak: {tool} is needed (make setup installs it)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="cdlc-soak-"))
    stack = Stack(work)
    try:
        t = time.monotonic()
        stack.start()
        print(f"stack up in {time.monotonic() - t:.1f} s: origin {stack.origin_url}, edge "
              f"{stack.edge_url}, S3 {stack.moto.url if stack.moto else ''}, Redis "
              f"{stack.redis.url if stack.redis else ''}; work dir {work}", flush=True)
        return _soak(stack, args)
    finally:
        stack.stop()
        if not os.environ.get("CDLC_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def _soak(stack: Stack, args: argparse.Namespace) -> int:
    catalog = _catalog(stack.segments)
    for p in catalog:  # every object at the edge once: the steady state wrk sees
        _fetch(stack.edge_url + p)
    paths_file = stack.work / "paths.txt"
    paths_file.write_text("\n".join(catalog) + "\n")
    script = stack.work / "soak.lua"
    script.write_text(LUA)
    assert stack.origin is not None
    run = Run(t0=time.monotonic())
    end = run.t0 + 60 * args.minutes
    threads = [
        threading.Thread(target=_wrk_loop, args=(stack, run, paths_file, script, end,
                                                  args.connections, args.pause_ms),
                         daemon=True),
        threading.Thread(target=_checker, args=(stack, run, catalog, end), daemon=True),
        threading.Thread(target=_breakers, args=(stack, run, end), daemon=True),
    ]
    for th in threads:
        th.start()
    for minute in range(args.minutes):
        base = run.t0 + 60 * minute
        for what, start, stop in SCHEDULE:
            if what not in {FAULTS[f] for f in args.faults}:
                continue
            _sleep_until(base + start)
            began = time.monotonic()
            if what == "redis killed":
                stack.kill_redis()
                _sleep_until(base + stop)
                stack.start_redis()
            elif what == "s3 stopped":
                assert stack.moto is not None
                stack.moto.pause()
                _sleep_until(base + stop)
                stack.moto.resume()
            else:
                stack.delete_and_ingest(run)
            with run.lock:
                run.windows.append((what, began, time.monotonic()))
        _sleep_until(base + 60)
        run.rss.append(_rss_mib(stack.origin.pid))
        run.load.append(os.getloadavg()[0])
        print(f"minute {minute + 1}/{args.minutes} done; origin RSS {run.rss[-1]:.1f} MiB, "
              f"load {run.load[-1]:.1f}", flush=True)
    for th in threads:
        th.join(timeout=30)
    return _report(run, args)


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _report(run: Run, args: argparse.Namespace) -> int:
    rows = _minute_rows(run, args.minutes)
    print()
    print("| minute | requests | req/s | non-2xx at the edge (status: count) | p99 ms "
          "(worst 5 s) | socket errors | checker 5xx in / out of windows | short 200s | "
          "origin RSS MiB |")
    print("|---:|---:|---:|---|---:|---:|---|---:|---:|")
    for r in rows:
        non2xx = r["non2xx"]
        assert isinstance(non2xx, dict)
        print(f"| {r['minute']} | {r['requests']:,} | {r['rps']:,.0f} | "
              f"{', '.join(f'{s}: {n}' for s, n in non2xx.items()) or '-'} | "
              f"{r['p99_ms']:.1f} | {r['socket_errors']} | {r['probe_5xx_in']} / "
              f"{r['probe_5xx_out']} | {r['short']} | {r['rss_mib']:.1f} |")
    out_chunks = [c for c in run.chunks if not run.in_window(c.start, c.end)]
    edge_5xx_out = sum(n for c in out_chunks for s, n in c.statuses.items() if s >= 500)
    edge_5xx = sum(n for c in run.chunks for s, n in c.statuses.items() if s >= 500)
    probe_5xx_out = sum(int(str(r["probe_5xx_out"])) for r in rows)
    cut = Counter((p.where, p.what) for p in run.probes if p.status == 0)
    probe_status = Counter((p.where, p.status) for p in run.probes if p.status)
    wrong = len(run.wrong) + sum(c.short for c in run.chunks)
    rss0, rss1 = (run.rss[0], run.rss[-1]) if run.rss else (0.0, 0.0)
    flat = rss0 > 0 and abs(rss1 - rss0) <= 0.1 * rss0
    print()
    print(f"fault windows: {len(run.windows)} "
          f"({', '.join(sorted({w[0] for w in run.windows}))}), each + {GRACE:g} s grace")
    print(f"wrk runs outside every window: {len(out_chunks)} of {len(run.chunks)}")
    print(f"checker: {dict(run.probe_count)} fetches; non-2xx {dict(probe_status)}; "
          f"cut or refused {dict(cut)}")
    print(f"deletes: {run.deletes}")
    edge_non2xx_out = Counter({s: n for c in out_chunks for s, n in c.statuses.items()
                               if not 200 <= s < 300})
    print(f"non-2xx at the edge outside fault windows: {dict(edge_non2xx_out) or 0}")
    for kind in sorted({w[0] for w in run.windows}):
        spans = [(a, b) for k, a, b in run.windows if k == kind]
        inside = [p for p in run.probes if any(p.at < b + GRACE and p.done > a
                                               for a, b in spans)]
        opened = sorted({name for at, states in run.breakers
                         if any(a <= at < b + GRACE for a, b in spans)
                         for name, state in states.items() if state != "closed"})
        print(f"  {kind}: {len(spans)}x, {sum(b - a for a, b in spans) / len(spans):.1f} s "
              f"each; checker non-2xx inside: "
              f"{dict(Counter((p.where, p.status) for p in inside)) or 0}; breakers not "
              f"closed: {', '.join(opened) or 'none'}")
    for p in run.probes:
        if p.status >= 500 and not run.in_window(p.at, p.done):
            last = max((w for w in run.windows if w[2] <= p.at), key=lambda w: w[2],
                       default=None)
            after = f"{p.at - last[2]:.1f} s after the end of '{last[0]}'" if last else ""
            print(f"  checker {p.status} outside windows: {p.where} {p.path}, minute "
                  f"{int((p.at - run.t0) // 60) + 1} +{(p.at - run.t0) % 60:.1f} s, {after}")
    print(f"load average (1 min) at each minute's end: {[round(x, 1) for x in run.load]}")
    print(f"wrong responses: {wrong}" + (f" ({run.wrong[:5]})" if run.wrong else ""))
    print(f"5xx at the edge: {edge_5xx} in all, {edge_5xx_out} outside fault windows; "
          f"checker 5xx outside windows: {probe_5xx_out}")
    half = len(run.rss) // 2
    slopes = ""
    if half >= 1 and len(run.rss) - half >= 2:
        first = (run.rss[half] - run.rss[0]) / half
        second = (run.rss[-1] - run.rss[half]) / (len(run.rss) - 1 - half)
        slopes = f"; {first:+.1f} MiB/min to minute {half + 1}, {second:+.1f} MiB/min after"
    print(f"origin RSS: {rss0:.1f} MiB after minute 1, {rss1:.1f} MiB at the end "
          f"({'flat' if flat else 'NOT flat'}; flat = the end within 10 % of minute 1"
          f"{slopes})")
    if args.json:
        print(json.dumps({"rows": rows, "wrong": wrong, "edge_5xx_out": edge_5xx_out,
                          "probe_5xx_out": probe_5xx_out, "rss": run.rss}, default=str))
    ok = wrong == 0 and edge_5xx_out == 0 and probe_5xx_out == 0 and (flat or args.minutes < 3)
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
