"""GET /v1/live: a text/event-stream of asset changes (snapshot, then only what
changed), read by a real HTTP client over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from metadata.models import JobState
from origin.live import LIVE
from tests.console.conftest import API_KEY, ConsoleOrigin, MakeOrigin


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) pairs as they arrive (HTML Living Standard §9.2.6)."""
    name, data = "message", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]


async def _submit(o: ConsoleOrigin, asset_id: str) -> None:
    form = aiohttp.FormData()
    form.add_field("id", asset_id)
    form.add_field("file", b"bytes of a master", filename=f"{asset_id}.mp4")
    resp = await o.client.post("/v1/assets", data=form, headers=o.auth())
    assert resp.status == 202, await resp.text()


async def test_live_stream_sends_a_snapshot_then_only_changes(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    await _submit(o, "before")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{o.url}/v1/live?key={API_KEY}")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = _events(resp)
        name, data = await asyncio.wait_for(anext(events), 5)
        assert name == "snapshot"
        assert [(a["id"], a["state"]) for a in data["items"]] == [("before", "queued")]

        await _submit(o, "after")
        name, data = await asyncio.wait_for(anext(events), 5)
        assert (name, data["id"], data["state"]) == ("asset", "after", "queued")
        # "before" did not change: it is not sent again. The job moves on:
        assert o.held is not None
        job = next(j for j in o.held.jobs if j.asset_id == "after")
        await o.deps.store.write_job(replace(job, state=JobState.TRANSCODING, progress=0.4))
        name, data = await asyncio.wait_for(anext(events), 5)
        assert (name, data["id"], data["state"], data["progress"]) == (
            "asset", "after", "transcoding", 0.4)

        resp2 = await o.client.delete("/v1/assets/before", headers=o.auth())
        assert resp2.status == 204
        name, data = await asyncio.wait_for(anext(events), 5)
        assert (name, data) == ("deleted", {"id": "before"})
        resp.close()


async def test_an_asset_pushed_past_a_full_window_is_not_reported_deleted(
        make_origin: MakeOrigin) -> None:
    """Past ``max_assets`` (two here) the stream follows the first assets by id: a
    new asset sorting first pushes the last one out, which is not a delete; a real
    delete inside the window still is, and the pushed-out asset comes back."""
    o = await make_origin()
    o.client.app[LIVE].max_assets = 2
    await _submit(o, "b")
    await _submit(o, "c")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{o.url}/v1/live?key={API_KEY}")
        # A queue, so waiting for nothing can time out without ending the stream.
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def pump() -> None:
            async for event in _events(resp):
                await queue.put(event)

        reader = asyncio.create_task(pump())
        try:
            name, data = await asyncio.wait_for(queue.get(), 5)
            assert (name, [a["id"] for a in data["items"]]) == ("snapshot", ["b", "c"])
            await _submit(o, "a")
            name, data = await asyncio.wait_for(queue.get(), 5)
            assert (name, data["id"]) == ("asset", "a")
            with pytest.raises(TimeoutError):  # several polls: "c" is not reported gone
                await asyncio.wait_for(queue.get(), 1.5)
            resp2 = await o.client.delete("/v1/assets/b", headers=o.auth())
            assert resp2.status == 204
            got = [await asyncio.wait_for(queue.get(), 5) for _ in range(2)]
            assert sorted((n, d["id"]) for n, d in got) == [("asset", "c"), ("deleted", "b")]
        finally:
            reader.cancel()
            resp.close()


async def test_live_stream_needs_the_key(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    assert (await o.client.get("/v1/live")).status == 401
    assert (await o.client.get("/v1/live?key=wrong")).status == 401
    resp = await o.client.get("/v1/console/whoami", headers=o.auth())
    assert resp.status == 204
    assert (await o.client.get("/v1/console/whoami")).status == 401


async def test_console_pages_are_served_from_the_origin(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    resp = await o.client.get("/console", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == "/console/"
    resp = await o.client.get("/console/")
    assert resp.status == 200
    html = await resp.text()
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    # Everything the page loads is on this origin: no CDN.
    assert "http://" not in html and "https://" not in html
    for path in ("/console/app.js", "/console/style.css", "/console/vendor/tus.min.js",
                 "/console/vendor/hls.min.js", "/console/vendor/uPlot.iife.min.js"):
        resp = await o.client.get(path)
        assert resp.status == 200, path
        assert path.rsplit("/", 1)[1] in html or path.startswith("/console/vendor/")
    assert (await o.client.get("/console/../origin/app.py")).status in (403, 404)
    resp = await o.client.get("/v1/console/preview/abc", headers=o.auth())
    assert await resp.json() == {"hls": "/vod/abc/master.m3u8",
                                 "dash": "/vod/abc/manifest.mpd",
                                 "poster": "/vod/abc/poster.jpg", "expires_in": None}


# -- faults -----------------------------------------------------------------------------

async def _raw_listener(o: ConsoleOrigin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that asks for the stream, then never reads (a stalled tab, a
    vanished phone): a small receive window, so the origin's writes back up."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    port = o.client.port
    assert port is not None
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /v1/live?key={API_KEY} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("limit", ["pending", "write_timeout"])
async def test_a_listener_that_stops_reading_is_cut_off(make_origin: MakeOrigin,
                                                        limit: str) -> None:
    """Changes kept coming for a client that read nothing: the origin queued them
    for ever (memory without bound) and its write waited for ever. The listener
    is now dropped past ``max_pending`` queued changes or one write that waited
    ``write_timeout``, its connection closed; a reading listener is unaffected."""
    o = await make_origin()
    live = o.client.app[LIVE]
    live.max_pending = 4 if limit == "pending" else 10_000
    live.write_timeout = 1.0 if limit == "write_timeout" else 60.0
    live.poll = 0.05  # a change every 50 ms: the stalled socket fills sooner
    await _submit(o, "busy")
    assert o.held is not None
    job = o.held.jobs[0]
    reader, writer = await _raw_listener(o)
    async with aiohttp.ClientSession() as http:
        good = await http.get(f"{o.url}/v1/live?key={API_KEY}")
        events = _events(good)
        name, _ = await asyncio.wait_for(anext(events), 5)
        assert name == "snapshot" and len(live._listeners) == 2
        # ~60 kB per change (a long error text), a change every poll.
        step = 0
        deadline = asyncio.get_running_loop().time() + 30
        while len(live._listeners) == 2:
            assert asyncio.get_running_loop().time() < deadline, "the stalled one stayed"
            step += 1
            job = replace(job, state=JobState.TRANSCODING, progress=step / 1000,
                          error="x" * 60_000)
            assert await o.deps.store.write_job(job)  # (it moves job.rev on)
            while True:  # the reading listener gets every change
                name, data = await asyncio.wait_for(anext(events), 5)
                if data.get("progress") == step / 1000:
                    break
        assert len(live._listeners) == 1
        # The stalled client's connection is closed: what it did not read, then EOF.
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1 << 30), 10)
        writer.close()
        good.close()


async def test_a_store_that_is_out_is_never_an_empty_snapshot(make_origin: MakeOrigin,
                                                              monkeypatch: Any) -> None:
    """The asset rows could not be read when a console connected: it was sent an
    empty snapshot, shown as "No assets yet.". It now gets ``unavailable``, and
    the real snapshot once the store answers again."""
    o = await make_origin()
    await _submit(o, "kept")
    out = True
    real = o.engine.list_assets

    async def list_assets(*args: Any, **kw: Any) -> Any:
        if out:
            raise ConnectionError("the metadata store is out")
        return await real(*args, **kw)

    monkeypatch.setattr(o.engine, "list_assets", list_assets)
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{o.url}/v1/live?key={API_KEY}")
        assert resp.status == 200
        events = _events(resp)
        name, data = await asyncio.wait_for(anext(events), 5)
        assert name == "unavailable" and "ConnectionError" in data["detail"]
        out = False
        name, data = await asyncio.wait_for(anext(events), 5)
        assert (name, [a["id"] for a in data["items"]]) == ("snapshot", ["kept"])
        # Out again under a running stream: told once, then the snapshot again.
        out = True
        name, data = await asyncio.wait_for(anext(events), 5)
        assert name == "unavailable"
        await asyncio.sleep(1.0)  # several failed polls: no second "unavailable"
        out = False
        name, data = await asyncio.wait_for(anext(events), 5)
        assert (name, [a["id"] for a in data["items"]]) == ("snapshot", ["kept"])
        resp.close()
