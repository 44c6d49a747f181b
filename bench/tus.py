"""Resumable-upload throughput (tus PATCHes) against `cp` of the same file and
against the plain multipart POST /v1/assets, one run.

    .venv/bin/python -m bench.tus [--size-mb 2048] [--chunk-mb 8] [--repeats 1]

The file (random bytes, written once, so every reader finds it in the page
cache) is uploaded to an origin in a process of its own: the real app
(create_app + add_tus_routes, SQLite, local object store) over a data dir on the
same filesystem, with a scheduler that records jobs without running them (the
upload is measured, not the transcode). The tus client sends PATCHes of
``--chunk-mb`` with keep-alive, each waiting for the server's acknowledgement (the
protocol's pace: the offset is fsynced before the answer); the multipart client
streams the file in one POST. ``cp`` copies the file into the same filesystem and
the time includes an fsync (the origin's uploads are fsynced too). Each figure is
the median of ``--repeats``, MB/s of the file's size; the bar is tus >= 0.5x cp.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from cdn.edge import free_port

KEY = "bench-key"
BLOCK = 8 * 2**20


def make_file(path: Path, size: int) -> None:
    block = os.urandom(BLOCK)
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, BLOCK)])
            left -= BLOCK


def time_cp(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t0
    dst.unlink()
    return elapsed


async def time_tus(base: str, src: Path, chunk: int) -> float:
    size = src.stat().st_size
    meta = f"filename {base64.b64encode(b'bench.bin').decode()}"
    auth = {"Authorization": f"Bearer {KEY}", "Tus-Resumable": "1.0.0"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        async with http.post(f"{base}/v1/uploads", headers={
                **auth, "Upload-Length": str(size), "Upload-Metadata": meta}) as resp:
            assert resp.status == 201, await resp.text()
            url = base + resp.headers["Location"]
        offset = 0
        with src.open("rb") as f:
            while offset < size:
                body = f.read(chunk)
                async with http.patch(url, data=body, headers={
                        **auth, "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream"}) as resp:
                    assert resp.status == 204, await resp.text()
                    offset = int(resp.headers["Upload-Offset"])
        return time.perf_counter() - t0


async def time_multipart(base: str, src: Path) -> float:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        with src.open("rb") as f:
            form = aiohttp.FormData()
            form.add_field("file", f, filename="bench.bin")
            async with http.post(f"{base}/v1/assets", data=form,
                                 headers={"Authorization": f"Bearer {KEY}"}) as resp:
                assert resp.status == 202, await resp.text()
        return time.perf_counter() - t0


# -- the origin process ---------------------------------------------------------------

def serve(data: Path, port: int, max_bytes: int) -> None:
    """The origin app with tus routes, jobs recorded but not run."""
    from aiohttp import web

    from engine.application import Engine
    from engine.config import Settings
    from engine.pipeline import Services
    from metadata import open_cache, open_objects, open_store
    from metadata.jobs import Job, JobRequest
    from origin.app import ADMIN, OriginDeps, create_app
    from origin.tus import add_tus_routes

    class Recorded:
        async def route(self, request: JobRequest) -> str:
            return ""

        async def enqueue(self, job: Job) -> None:
            return None

        async def start(self) -> None:
            return None

        async def close(self) -> None:
            return None

    store, objects, cache = open_store("", data), open_objects("", data), open_cache("")
    services = Services(store=store, objects=objects, cache=cache, work_dir=data / "work")
    engine = Engine(Settings(data_dir=data), services, Recorded())
    deps = OriginDeps(store=store, objects=objects, cache=cache, api_key=KEY,
                      max_upload_bytes=max_bytes, upload_dir=data / "uploads",
                      application=engine, close_backends=True)
    app = create_app(deps)
    add_tus_routes(app, engine, upload_dir=data / "tus", max_upload_bytes=max_bytes,
                   authorise=app[ADMIN]._authorised)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def wait_up(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the origin did not start")


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def run(args: argparse.Namespace) -> int:
    size = args.size_mb * 2**20
    chunk = args.chunk_mb * 2**20
    work = Path(tempfile.mkdtemp(prefix="bench-tus-", dir=args.dir))
    proc: subprocess.Popen[bytes] | None = None
    try:
        src = work / "master.bin"
        make_file(src, size)
        data = work / "data"
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bench.tus", "--serve", str(data),
                                 "--port", str(port), "--size-mb", str(args.size_mb)])
        base = f"http://127.0.0.1:{port}"
        await wait_up(base)
        cp_t, tus_t, mp_t = [], [], []
        for _ in range(args.repeats):
            cp_t.append(time_cp(src, work / "copy.bin"))
            tus_t.append(await time_tus(base, src, chunk))
            shutil.rmtree(data / "objects" / "masters", ignore_errors=True)
            mp_t.append(await time_multipart(base, src))
            shutil.rmtree(data / "objects" / "masters", ignore_errors=True)
        cp_s, tus_s, mp_s = (statistics.median(t) for t in (cp_t, tus_t, mp_t))
        print(f"file {size / 2**20:,.0f} MiB, tus PATCH {chunk / 2**20:g} MiB, "
              f"median of {args.repeats}")
        print("| method | seconds | MB/s | vs cp |")
        print("|---|---|---|---|")
        for name, s in (("cp (+ fsync)", cp_s), ("tus PATCHes", tus_s),
                        ("multipart POST /v1/assets", mp_s)):
            print(f"| {name} | {s:.2f} | {mbps(size, s):,.0f} | {cp_s / s:.2f}x |")
        ratio = cp_s / tus_s
        print(f"tus / cp = {ratio:.2f}x (bar >= 0.5x: {'met' if ratio >= 0.5 else 'NOT met'});"
              f" tus / multipart = {mp_s / tus_s:.2f}x")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tus", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="file size in MiB")
    parser.add_argument("--chunk-mb", type=int, default=8, help="bytes per PATCH, MiB")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where the file and data dir go")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port, (args.size_mb + 1) * 2**20)
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
