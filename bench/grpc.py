"""The platform API's gRPC servicers against a bare grpc.aio server, one run.

    .venv/bin/python -m bench.grpc [--seconds 5] [--repeats 3] [--concurrency 64]
                                   [--upload-mib 64] [--clients python,node]
                                   [--auth none|jwt]

Servers run in a subprocess each (the client has the bench process to itself):

- **api**: what `cdlc serve` runs: origin.grpc_server.GrpcServer (auth
  interceptor with no auth configured, the AssetService and PlaybackService
  servicers, health, reflection) over the Engine's application layer on SQLite +
  the local object store, beside the origin's HTTP app (REST admin). One asset is
  published; jobs are recorded but never run (the scheduler holds them), so an
  upload measures only the ingest path.
- **bare**: a grpc.aio server with the same options and one generic handler per
  method that answers a prebuilt response of the same bytes as the api's (taken
  from the api first): the ceiling grpc.aio in Python sets on this machine.

Two clients, each keeping ``concurrency`` calls in flight on one channel for
``seconds`` and counting req/s and the p99 latency: a Python grpc.aio client in
this process, and the Node client (bench/grpc_load.cjs, @grpc/grpc-js, run with
``node``; the repository's node_modules). The rpcs: IssuePlayback (a token
signed and a grant group-committed to SQLite per call) and GetAsset (an asset
with its renditions and segment counts). Every figure is the median of
``repeats`` runs, the servers interleaved. ``--auth jwt`` makes the api verify
a bearer JWT (RS256, a JWKS file made here) on every call, as a platform
service would send; the bare server gets the same metadata and ignores it.
UploadAsset (1 MiB chunks) is timed against the REST upload (POST /v1/assets,
multipart) of the same random file to the same server: MB/s, median of
``repeats``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from cdn.edge import free_port, wait_port
from origin.grpc_proto import assets_pb2, assets_pb2_grpc, playback_pb2, playback_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
NODE_LOAD = ROOT / "bench" / "grpc_load.cjs"
ASSET = "bench1"
ISSUER = "https://auth.bench"
RPCS = ("IssuePlayback", "GetAsset")
SIGNING_KEY = b"bench-signing-key"
OPTIONS = [("grpc.max_receive_message_length", 4 * 2**20),
           ("grpc.max_send_message_length", 4 * 2**20)]


# -- servers (run as `python -m bench.grpc --serve KIND ...`) -----------------------
async def serve_api(data: Path, port: int, http_port: int) -> None:
    from aiohttp import web

    from bench.origin import publish
    from engine.application import Engine
    from engine.config import Settings
    from engine.services import open_backends
    from metadata.grants import SQLiteGrants
    from metadata.jobs import Job, JobRequest
    from origin.app import OriginDeps, create_app
    from origin.auth import Authenticator
    from origin.grpc_server import GrpcConfig, GrpcServer

    class Held:
        """Jobs recorded, never run: the bench times the ingest path only."""

        async def route(self, request: JobRequest) -> str:
            return ""

        async def enqueue(self, job: Job) -> None:
            return None

        async def start(self) -> None:
            return None

        async def close(self) -> None:
            return None

    await publish(data)
    settings = Settings(data_dir=data, signing_key=SIGNING_KEY.decode())
    backends = open_backends(settings)
    engine = Engine(settings, backends, Held())
    deps = OriginDeps(store=backends.store, objects=backends.objects, cache=backends.cache,
                      signing_key=SIGNING_KEY, application=engine,
                      upload_dir=data / "uploads", max_upload_bytes=settings.max_upload_bytes)
    runner = web.AppRunner(create_app(deps), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    # No auth unless the bench set CDLC_JWKS (--auth jwt), as `cdlc serve` reads it.
    server = GrpcServer(engine, SQLiteGrants(data / "metadata.db"), Authenticator.from_env(),
                        backends.store.ping,
                        GrpcConfig(port=port, upload_dir=data / "uploads",
                                   signing_key=SIGNING_KEY,
                                   public_base_url=f"http://127.0.0.1:{http_port}"))
    await server.start()
    await serve_frozen()


async def serve_frozen() -> None:
    """Serve until killed, start-up objects out of the collector's view (as
    origin.server does once its sites are up)."""
    gc.collect()
    gc.freeze()
    await asyncio.Event().wait()


async def serve_bare(port: int, samples: Path) -> None:
    issued = playback_pb2.IssuePlaybackResponse.FromString((samples / "issue").read_bytes())
    got = assets_pb2.GetAssetResponse.FromString((samples / "get").read_bytes())

    async def issue(request: playback_pb2.IssuePlaybackRequest, context: Any) -> Any:
        return issued

    async def get(request: assets_pb2.GetAssetRequest, context: Any) -> Any:
        return got

    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("cdlc.stream.v1.PlaybackService", {
            "IssuePlayback": grpc.unary_unary_rpc_method_handler(
                issue, request_deserializer=playback_pb2.IssuePlaybackRequest.FromString,
                response_serializer=playback_pb2.IssuePlaybackResponse.SerializeToString)}),
        grpc.method_handlers_generic_handler("cdlc.stream.v1.AssetService", {
            "GetAsset": grpc.unary_unary_rpc_method_handler(
                get, request_deserializer=assets_pb2.GetAssetRequest.FromString,
                response_serializer=assets_pb2.GetAssetResponse.SerializeToString)}),
    ))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await serve_frozen()


# -- client ---------------------------------------------------------------------------
@dataclass
class Result:
    rps: float
    p99_ms: float


def issue_request() -> playback_pb2.IssuePlaybackRequest:
    return playback_pb2.IssuePlaybackRequest(
        asset_id=ASSET, viewer_id="viewer-bench", ttl_seconds=3600,
        entitlement=playback_pb2.Entitlement(kind=playback_pb2.ENTITLEMENT_KIND_PURCHASE,
                                             reference="order-bench"))


async def load(call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int) -> Result:
    """``concurrency`` callers in a loop for ``seconds``: req/s and p99."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return Result(len(latencies) / elapsed, latencies[int(len(latencies) * 0.99)] * 1000)


async def upload_grpc(target: str, path: Path, asset_id: str) -> float:
    """Seconds for one UploadAsset of ``path`` (1 MiB chunks)."""
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        stub: Any = assets_pb2_grpc.AssetServiceStub(channel)

        async def stream() -> AsyncIterator[assets_pb2.UploadAssetRequest]:
            yield assets_pb2.UploadAssetRequest(header=assets_pb2.UploadHeader(
                asset_id=asset_id, file_name=path.name, size_bytes=path.stat().st_size))
            with path.open("rb") as f:
                while chunk := f.read(2**20):
                    yield assets_pb2.UploadAssetRequest(chunk=chunk)

        t0 = time.perf_counter()
        await stub.UploadAsset(stream(), timeout=600)
        return time.perf_counter() - t0


async def upload_rest(base: str, path: Path, asset_id: str) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("id", asset_id)
        with path.open("rb") as f:
            form.add_field("file", f, filename=path.name,
                           content_type="application/octet-stream")
            t0 = time.perf_counter()
            async with session.post(f"{base}/v1/assets", data=form) as resp:
                assert resp.status == 202, await resp.text()
        return time.perf_counter() - t0


class Server:
    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.grpc", "--serve", *args],
                                     env={**os.environ, **(env or {})})
        try:
            wait_port("127.0.0.1", port, timeout=30)
        except TimeoutError:
            self.proc.kill()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def node_load(target: str, rpc: str, args: argparse.Namespace, token: str) -> Result:
    """One run of the Node client (bench/grpc_load.cjs) against ``target``."""
    cmd = ["node", str(NODE_LOAD), "--target", target, "--rpc", rpc, "--asset", ASSET,
           "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
    if token:
        cmd += ["--token", token]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60,
                          cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"node client against {target} ({rpc}) failed: "
                           f"{done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Result(float(out["rps"]), float(out["p99_ms"]))


def jwt_setup(work: Path) -> tuple[dict[str, str], str]:
    """A JWKS file with one RSA key, and a token it verifies (every scope)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="bench-1", use="sig", alg="RS256")
    (work / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    token = jwt.encode({"iss": ISSUER, "aud": "cdlc-stream", "sub": "bench",
                        "exp": int(time.time()) + 3600,
                        "scope": "assets:read assets:write playback:issue"},
                       key, algorithm="RS256", headers={"kid": "bench-1"})
    return {"CDLC_JWKS": str(work / "jwks.json"), "CDLC_JWT_ISSUER": ISSUER}, token


async def measure(args: argparse.Namespace, api_port: int, bare_port: int, http_port: int,
                  work: Path, token: str) -> None:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    targets = {"api": f"127.0.0.1:{api_port}", "bare": f"127.0.0.1:{bare_port}"}
    channels = {kind: grpc.aio.insecure_channel(t, options=OPTIONS)
                for kind, t in targets.items()}
    stubs: dict[str, tuple[Any, Any]] = {
        kind: (playback_pb2_grpc.PlaybackServiceStub(ch), assets_pb2_grpc.AssetServiceStub(ch))
        for kind, ch in channels.items()}
    get_req = assets_pb2.GetAssetRequest(asset_id=ASSET)
    results: dict[tuple[str, str, str], list[Result]] = {}
    for _ in range(args.repeats):
        for kind in ("api", "bare"):  # interleaved
            playback, assets = stubs[kind]
            calls = {"IssuePlayback": lambda p=playback: p.IssuePlayback(
                         issue_request(), metadata=metadata),
                     "GetAsset": lambda a=assets: a.GetAsset(get_req, metadata=metadata)}
            for rpc in RPCS:
                if "python" in args.clients:
                    await load(calls[rpc], 0.5, args.concurrency)  # warm-up
                    results.setdefault(("python", rpc, kind), []).append(
                        await load(calls[rpc], args.seconds, args.concurrency))
                if "node" in args.clients:
                    # Its own process: this one idles meanwhile.
                    results.setdefault(("node", rpc, kind), []).append(
                        await asyncio.to_thread(node_load, targets[kind], rpc, args, token))
    for ch in channels.values():
        await ch.close()

    print(f"\n{args.concurrency} concurrent calls, {args.seconds:g} s, "
          f"median of {args.repeats}, auth: {args.auth}")
    print("| client | rpc | api req/s | bare req/s | api / bare | api p99 ms | bare p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for client in args.clients:
        for rpc in RPCS:
            api = median(results[(client, rpc, "api")])
            bare = median(results[(client, rpc, "bare")])
            print(f"| {client} | {rpc} | {api.rps:,.0f} | {bare.rps:,.0f} | "
                  f"**{api.rps / bare.rps:.2f}x** | {api.p99_ms:.2f} | {bare.p99_ms:.2f} |")
    if args.upload_mib <= 0:
        return

    path = work / "upload.bin"
    with path.open("wb") as f:
        for _ in range(args.upload_mib):
            f.write(os.urandom(2**20))
    size_mb = path.stat().st_size / 1e6
    times: dict[str, list[float]] = {"grpc": [], "rest": []}
    for i in range(args.repeats):
        times["grpc"].append(await upload_grpc(f"127.0.0.1:{api_port}", path, f"ug{i}"))
        times["rest"].append(await upload_rest(f"http://127.0.0.1:{http_port}", path, f"ur{i}"))
    g = size_mb / statistics.median(times["grpc"])
    r = size_mb / statistics.median(times["rest"])
    print(f"\nupload of {args.upload_mib} MiB (random bytes), median of {args.repeats}")
    print("| path | MB/s |\n|---|---|")
    print(f"| gRPC UploadAsset (1 MiB chunks) | {g:,.1f} |")
    print(f"| REST POST /v1/assets (multipart) | {r:,.1f} |")
    print(f"| gRPC / REST | **{g / r:.2f}x** |")


def median(results: list[Result]) -> Result:
    return Result(statistics.median(r.rps for r in results),
                  statistics.median(r.p99_ms for r in results))


async def samples(api_port: int, out: Path, token: str) -> None:
    """The api's real responses, for the bare server to answer with."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_port}") as channel:
        playback: Any = playback_pb2_grpc.PlaybackServiceStub(channel)
        assets: Any = assets_pb2_grpc.AssetServiceStub(channel)
        issued = await playback.IssuePlayback(issue_request(), metadata=metadata)
        got = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=ASSET),
                                    metadata=metadata)
    (out / "issue").write_bytes(issued.SerializeToString())
    (out / "get").write_bytes(got.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--upload-mib", type=int, default=64, help="0: no upload figures")
    parser.add_argument("--clients", default="python,node",
                        help="comma-separated: python (grpc.aio), node (@grpc/grpc-js)")
    parser.add_argument("--auth", choices=("none", "jwt"), default="none")
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        kind, *rest = args.serve
        # Both servers collect garbage as `cdlc serve` does (engine.cli.main's
        # thresholds; start-up objects frozen once serving, serve_frozen).
        gc.set_threshold(200_000, 30, 30)
        if kind == "api":
            asyncio.run(serve_api(Path(rest[0]), int(rest[1]), int(rest[2])))
        else:
            asyncio.run(serve_bare(int(rest[0]), Path(rest[1])))
        return 0
    args.clients = [c for c in args.clients.split(",") if c]
    if not args.clients or set(args.clients) - {"python", "node"}:
        parser.error("--clients: python, node or both")
    if "node" in args.clients and (shutil.which("node") is None or not (
            ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir()):
        parser.error("the node client needs `node` and @grpc/grpc-js in node_modules "
                     "(make setup); or run with --clients python")
    with tempfile.TemporaryDirectory(prefix="cdlc-bench-grpc-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        env, token = jwt_setup(work) if args.auth == "jwt" else ({}, "")
        api_port, bare_port, http_port = free_port(), free_port(), free_port()
        api = Server(["api", str(work / "data"), str(api_port), str(http_port)], api_port, env)
        bare = None
        try:
            wait_port("127.0.0.1", http_port, timeout=30)
            asyncio.run(samples(api_port, work, token))
            bare = Server(["bare", str(bare_port), str(work)], bare_port)
            asyncio.run(measure(args, api_port, bare_port, http_port, work, token))
        finally:
            api.stop()
            if bare is not None:
                bare.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
