"""Edge-delivered bytes: a real nginx edge (cdn/nginx.py) in front of the real
origin serving a real CMAF asset writes its access log; `cdlc cdn ingest-log`
(the shipped command, a subprocess) adds the bytes per asset and hour to the
stats the origin serves, beside the origin's own count. Ingesting the same file
again counts nothing; a file that grew adds its new lines only; bad lines are
skipped and counted; an unreadable file is one line on stderr and exit 1."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cdn.access_log import parse_line
from cdn.edge import NGINX, NginxEdge
from metadata import open_cache, open_objects, open_store
from metadata.event_log_delivery import SQLiteDeliveryLedger
from metadata.event_log_sqlite import SQLiteEventLog
from origin.app import OriginDeps, create_app
from origin.events import EventIntake
from tests.conftest import CDLC, ROOT, make_env
from tests.e2e.asset import BuiltAsset, Rung, make_asset
from tests.events.test_delivery import hours_since

ASSET = "edgebytes1"

pytestmark = pytest.mark.skipif(
    shutil.which(NGINX) is None or shutil.which("ffmpeg") is None,
    reason="needs nginx and ffmpeg")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuiltAsset]:
    d = tmp_path_factory.mktemp("edge-bytes")
    return d, make_asset(d, ASSET, seconds=4, ladder=(Rung(144, 256, 120),))


@dataclass
class Stack:
    origin: TestServer
    edge: NginxEdge
    http: aiohttp.ClientSession
    stats_dir: Path      # CDLC_DATA_DIR of the CLI: its metadata.db holds the ledger
    segments: list[str]

    async def get(self, path: str, **headers: str) -> tuple[int, bytes, str]:
        async with self.http.get(self.edge.url + path, headers=headers) as r:
            return r.status, await r.read(), r.headers.get("X-Cache", "")

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(str(self.origin.make_url(f"/v1/assets/{ASSET}/stats"))) as r:
            assert r.status == 200
            doc: dict[str, Any] = await r.json()
            return doc

    async def log_lines(self, n: int) -> list[str]:
        """The edge's access log once it holds n lines (nginx buffers it)."""
        deadline = time.monotonic() + 10
        while True:
            self.edge.reopen_logs()
            lines = self.edge.access_log.read_text().splitlines()
            if len(lines) >= n:
                return lines
            assert time.monotonic() < deadline, f"{len(lines)} of {n} log lines"
            await asyncio.sleep(0.05)


@pytest.fixture
async def stack(published: tuple[Path, BuiltAsset], tmp_path: Path) -> AsyncIterator[Stack]:
    data, built = published
    store, objects, cache = open_store("", data), open_objects("", data), open_cache("")
    intake = EventIntake(SQLiteEventLog(tmp_path / "metadata.db"),
                         delivery=SQLiteDeliveryLedger(tmp_path / "metadata.db"))
    origin = TestServer(create_app(OriginDeps(store=store, objects=objects, cache=cache,
                                              events=intake, close_backends=True)),
                        host="127.0.0.1")
    await origin.start_server()
    edge = NginxEdge(str(origin.make_url("")).rstrip("/"), tmp_path / "edge",
                     worker_processes=1)
    segments = [f"/vod/{ASSET}/{rid}/{name}" for rid, count in built.renditions.items()
                for name in ["init.mp4", *(f"{n}.m4s" for n in range(1, count + 1))]]
    try:
        edge.start()
        async with aiohttp.ClientSession() as http:
            yield Stack(origin, edge, http, tmp_path, segments)
    finally:
        edge.stop()
        await origin.close()


async def ingest_log(path: Path, data_dir: Path) -> tuple[int, dict[str, Any] | None, str]:
    proc = await asyncio.create_subprocess_exec(
        *CDLC, "cdn", "ingest-log", str(path), "--json", cwd=ROOT,
        env=make_env(data_dir).env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    doc = json.loads(out) if proc.returncode == 0 else None
    return proc.returncode, doc, err.decode()


async def test_edge_log_to_stats_counted_once(stack: Stack) -> None:
    started = time.time()
    edge_bytes = origin_bytes = 0
    for path in stack.segments:                      # a miss: the origin sends it
        status, body, cache = await stack.get(path)
        assert (status, cache) == (200, "MISS"), path
        edge_bytes += len(body)
        origin_bytes += len(body)
    for path in stack.segments:                      # a hit: the edge alone
        status, body, cache = await stack.get(path)
        assert (status, cache) == (200, "HIT"), path
        edge_bytes += len(body)
    status, part, _ = await stack.get(stack.segments[1], Range="bytes=0-99")
    assert (status, len(part)) == (206, 100)
    edge_bytes += 100
    # Not deliveries: a 404 through the edge, the edge's own health check.
    assert (await stack.get(f"/vod/{ASSET}/v144/999.m4s"))[0] == 404
    assert (await stack.get("/_edge/health"))[0] == 200
    requests = 2 * len(stack.segments) + 2           # the health check is not logged
    lines = await stack.log_lines(requests)
    assert all(parse_line(ln) for ln in lines), lines[:3]
    assert all(f" asset={ASSET} " in ln for ln in lines)

    rc, doc, err = await ingest_log(stack.edge.access_log, stack.stats_dir)
    assert rc == 0, err
    assert doc is not None
    assert (doc["lines"], doc["delivered_lines"], doc["bad_lines"]) == (
        requests, requests - 1, 0)
    assert doc["bytes"] == edge_bytes and doc["assets"] == [ASSET]
    assert doc["bytes_by_cache"]["MISS"] == origin_bytes
    stats = await stack.stats()
    assert (stats["delivered_bytes_edge"], stats["delivered_bytes_origin"]) == (
        edge_bytes, origin_bytes)
    assert {h["hour"] for h in stats["hours"]} <= hours_since(started)
    assert sum(h["delivered_bytes_edge"] for h in stats["hours"]) == edge_bytes

    # The same file again: nothing new, nothing counted twice.
    rc, doc, err = await ingest_log(stack.edge.access_log, stack.stats_dir)
    assert rc == 0 and doc is not None and (doc["lines"], doc["bytes"]) == (0, 0), err
    assert (await stack.stats())["delivered_bytes_edge"] == edge_bytes

    # The file grew: only the new line counts.
    status, body, cache = await stack.get(stack.segments[0])
    assert (status, cache) == (200, "HIT")
    await stack.log_lines(requests + 1)
    rc, doc, err = await ingest_log(stack.edge.access_log, stack.stats_dir)
    assert rc == 0 and doc is not None, err
    assert (doc["lines"], doc["delivered_lines"], doc["bytes"]) == (1, 1, len(body))
    stats = await stack.stats()
    assert (stats["delivered_bytes_edge"], stats["delivered_bytes_origin"]) == (
        edge_bytes + len(body), origin_bytes)


async def test_bad_lines_are_skipped_and_counted(stack: Stack, tmp_path: Path) -> None:
    status, body, _ = await stack.get(stack.segments[0])
    assert status == 200
    real = (await stack.log_lines(1))[0]
    mixed = tmp_path / "mixed.log"
    half = real[: len(real) // 2]
    # A garbage first line, the real line, a cut one, bytes that are not UTF-8,
    # a forged asset id, and a last line still being written (no newline yet).
    mixed.write_bytes(b"not an access log line\n" + real.encode() + b"\n"
                      + half.encode() + b"\n" + b"\xff\xfe garbage\n"
                      + real.replace(f"asset={ASSET}", "asset=../../etc").encode() + b"\n"
                      + real.encode())
    other = tmp_path / "other-stats"
    rc, doc, err = await ingest_log(mixed, other)
    assert rc == 0 and doc is not None, err
    assert (doc["lines"], doc["delivered_lines"], doc["bad_lines"], doc["bytes"]) == (
        5, 1, 4, len(body))
    with mixed.open("ab") as f:                       # the last line is finished
        f.write(b"\n")
    rc, doc, err = await ingest_log(mixed, other)
    assert rc == 0 and doc is not None, err
    assert (doc["lines"], doc["delivered_lines"], doc["bytes"]) == (1, 1, len(body))
    ledger = SQLiteDeliveryLedger(other / "metadata.db")
    try:
        assert [v for v in (await ledger.delivered(ASSET)).values()] == [
            {"edge": 2 * len(body)}]
    finally:
        await ledger.close()


async def test_an_unreadable_log_is_one_line_and_exit_1(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.log", tmp_path):
        rc, doc, err = await ingest_log(path, tmp_path / "stats")
        assert rc == 1 and doc is None
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cdlc: error: cannot ingest "), err
        assert str(path) in lines[0]
    # Nothing was written anywhere.
    assert not (tmp_path / "stats" / "metadata.db").exists()


# -- ingest-log --follow: a sidecar beside the edge -----------------------------------


@dataclass
class Follower:
    """`cdlc cdn ingest-log FILE --follow` running, its output read as it comes."""

    proc: asyncio.subprocess.Process
    out: list[dict[str, Any]]
    err: list[str]
    readers: list[asyncio.Task[None]]

    async def wait_err(self, start: str, after: int = 0, timeout: float = 20.0) -> str:
        """The first stderr line from index ``after`` on that starts with ``start``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.err[after:]:
                if line.startswith(start):
                    return line
            assert self.proc.returncode is None, f"the follower exited: {self.err}"
            assert time.monotonic() < deadline, f"no {start!r} on stderr: {self.err}"
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        rc = await asyncio.wait_for(self.proc.wait(), 15)
        await asyncio.gather(*self.readers)
        return rc


async def follow(path: Path, data_dir: Path, **env_extra: str) -> Follower:
    proc = await asyncio.create_subprocess_exec(
        *CDLC, "cdn", "ingest-log", str(path), "--follow", "--every", "0.2", "--json",
        cwd=ROOT, env=make_env(data_dir, **env_extra).env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out: list[dict[str, Any]] = []
    err: list[str] = []

    async def read(stream: asyncio.StreamReader | None, sink: Any) -> None:
        assert stream is not None
        async for raw in stream:
            sink(raw.decode().rstrip("\n"))

    readers = [asyncio.create_task(read(proc.stdout, lambda s: out.append(json.loads(s)))),
               asyncio.create_task(read(proc.stderr, err.append))]
    return Follower(proc, out, err, readers)


async def until(check: Any, want: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await check()) != want:
        assert time.monotonic() < deadline, f"{got} != {want}"
        await asyncio.sleep(0.1)


async def test_follow_counts_every_line_once_across_rotation(stack: Stack) -> None:
    """Lines are counted while nginx writes them, with no second command; a log
    renamed away (what nginx wrote there before reopening included) and its new
    file are both read to the end, once."""
    async def edge_bytes() -> int:
        return int((await stack.stats())["delivered_bytes_edge"])

    log = stack.edge.access_log
    follower = await follow(log, stack.stats_dir)
    try:
        total = 0
        for path in stack.segments:
            status, body, _ = await stack.get(path)
            assert status == 200
            total += len(body)
        await until(edge_bytes, total)

        rotated = log.with_name("access.log.1")
        log.rename(rotated)                        # logrotate's rename ...
        status, first, _ = await stack.get(stack.segments[0])   # still into the old file
        assert status == 200
        await asyncio.sleep(0.6)                   # a step or two find no file at the path
        stack.edge.reopen_logs()                   # ... and nginx's reopen
        deadline = time.monotonic() + 10
        while not log.exists():
            assert time.monotonic() < deadline, "nginx did not reopen its log"
            await asyncio.sleep(0.02)
        status, second, _ = await stack.get(stack.segments[1])  # into the new file
        assert status == 200
        total += len(first) + len(second)
        await until(edge_bytes, total)
        assert len(rotated.read_text().splitlines()) == len(stack.segments) + 1
        assert len(log.read_text().splitlines()) == 1
    finally:
        rc = await follower.stop()
    assert rc == 0, follower.err
    assert sum(d["bytes"] for d in follower.out) == total
    assert follower.err == [], follower.err
    assert (await stack.stats())["delivered_bytes_edge"] == total


async def test_follow_rides_out_its_store_killed_and_hung(stack: Stack) -> None:
    """The ledger on Redis: killed, the follower warns in one line and keeps
    going; back (empty), the file is counted into it once; hung, the follower
    says it is waiting and goes on when it answers. SIGTERM ends it with 0."""
    from metadata.event_log_delivery import RedisDeliveryLedger
    from tests.metadata.servers import own_redis

    redis = own_redis().start()
    port = redis.port

    async def edge_bytes() -> int:
        ledger = RedisDeliveryLedger.from_url(redis.url)
        try:
            return sum(v.get("edge", 0) for v in (await ledger.delivered(ASSET)).values())
        finally:
            await ledger.close()

    follower = await follow(stack.edge.access_log, stack.stats_dir, CDLC_EVENTS=redis.url)
    try:
        sizes = []
        for path in stack.segments[:3]:
            status, body, _ = await stack.get(path)
            assert status == 200
            sizes.append(len(body))
        await until(edge_bytes, sizes[0] + sizes[1] + sizes[2])

        redis.kill()
        status, body, _ = await stack.get(stack.segments[3])
        assert status == 200
        sizes.append(len(body))
        line = await follower.wait_err("cdlc: warning: cannot ingest")
        assert str(stack.edge.access_log) in line and "retrying" in line
        marks = len(follower.err)
        redis = own_redis(port).start()            # back, and empty
        await follower.wait_err("cdlc: ingesting", after=marks)
        await until(edge_bytes, sum(sizes))        # the whole file, once, into the new one

        redis.pause()                              # hung: accepts, never answers
        status, body, _ = await stack.get(stack.segments[4])
        assert status == 200
        sizes.append(len(body))
        await follower.wait_err("cdlc: warning: ingesting", after=marks)
        redis.resume()
        await until(edge_bytes, sum(sizes))
        assert follower.proc.returncode is None
    finally:
        rc = await follower.stop()
        redis.stop()
    assert rc == 0, follower.err
    assert not any("Traceback" in ln for ln in follower.err), follower.err


async def test_follow_waits_for_a_log_that_is_not_there_yet(stack: Stack,
                                                            tmp_path: Path) -> None:
    status, body, _ = await stack.get(stack.segments[0])
    assert status == 200
    real = (await stack.log_lines(1))[0]
    later = tmp_path / "later.log"
    other = tmp_path / "other-stats"
    follower = await follow(later, other)
    try:
        line = await follower.wait_err("cdlc: warning: cannot ingest")
        assert str(later) in line and "No such file" in line
        later.write_text(real + "\n")
        deadline = time.monotonic() + 20
        while not follower.out:
            assert time.monotonic() < deadline, follower.err
            await asyncio.sleep(0.05)
    finally:
        rc = await follower.stop()
    assert rc == 0
    assert [(d["lines"], d["bytes"]) for d in follower.out] == [(1, len(body))]
    assert len(follower.err) == 2 and follower.err[1].startswith("cdlc: ingesting")


async def test_follow_refuses_a_bad_interval(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CDLC, "cdn", "ingest-log", str(tmp_path / "x.log"), "--follow", "--every", "0",
        cwd=ROOT, env=make_env(tmp_path).env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and out == b""
    assert "--every" in err.decode() and "Traceback" not in err.decode()
