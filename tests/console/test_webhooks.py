"""Webhooks end to end: a real job (InProcessExecutor over a small master), a
receiver on 127.0.0.1 that verifies every delivery with the `standardwebhooks`
package, failures answered 500, and an origin restart between two tries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

from origin.webhooks import AddressRefused, check_url, sign
from tests.console.conftest import ConsoleOrigin, MakeOrigin
from tests.media import make_master


@dataclass
class Receiver:
    """Answers ``fail_first[type]`` tries of an event type with 500, then 200."""

    url: str = ""
    secret: str = ""
    fail_first: dict[str, int] = field(default_factory=dict)
    tries: list[dict[str, Any]] = field(default_factory=list)   # every request
    first_ready_failed: asyncio.Event = field(default_factory=asyncio.Event)

    def accepted(self, kind: str) -> list[dict[str, Any]]:
        return [t for t in self.tries if t["type"] == kind and t["status"] == 200]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        # Raises unless the signature, id and timestamp verify (Standard Webhooks).
        event = Webhook(self.secret).verify(body, dict(request.headers))
        kind = event["type"]
        earlier = [t for t in self.tries if t["type"] == kind
                   and t["data"]["job"] == event["data"]["job"]]
        status = 500 if len(earlier) < self.fail_first.get(kind, 0) else 200
        self.tries.append({"type": kind, "id": request.headers["webhook-id"], "status": status,
                           "data": event["data"], "at": time.time()})
        if kind == "asset.ready" and status == 500:
            self.first_ready_failed.set()
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.url = str(server.make_url("/hook"))
    yield rec
    await server.close()


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _subscribe(o: ConsoleOrigin, url: str, events: list[str] | None = None) -> Any:
    resp = await o.client.post("/v1/webhooks", json={"url": url, **(
        {"events": events} if events else {})}, headers=o.auth())
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def _upload(o: ConsoleOrigin, asset_id: str, master: Path, ladder: str) -> None:
    """POST ``master`` as ``asset_id`` (ultrafast, ``ladder``): accepted as a job."""
    form = aiohttp.FormData()
    form.add_field("id", asset_id)
    form.add_field("ladder", ladder)
    form.add_field("preset", "ultrafast")
    form.add_field("file", master.read_bytes(), filename="m.mp4")
    resp = await o.client.post("/v1/assets", data=form, headers=o.auth())
    assert resp.status == 202, await resp.text()


@pytest.mark.slow
async def test_asset_ready_once_per_job_through_500s_and_a_restart(
        make_origin: MakeOrigin, receiver: Receiver, tmp_path: Path) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=240, fps="25")
    first = await make_origin(jobs="run", retry_base=1.0)
    sub = await _subscribe(first, receiver.url)
    assert sub["secret"].startswith("whsec_")
    assert sub["events"] == ["asset.created", "asset.ready", "asset.failed", "asset.deleted"]
    receiver.secret = sub["secret"]
    receiver.fail_first = {"asset.ready": 2}

    await _upload(first, "hooked", master, "240:300")

    await asyncio.wait_for(receiver.first_ready_failed.wait(), 60)
    # Restart between the tries: the first origin goes, a new one over the same
    # data dir takes the outbox (and sees the ready job again: deduped).
    await first.client.close()
    second = await make_origin(jobs="run", retry_base=1.0)
    await _until(lambda: receiver.accepted("asset.ready"), 20, "the third try of asset.ready")
    await asyncio.sleep(1.5)  # several polls and delivery rounds: nothing more may come

    ready = [t for t in receiver.tries if t["type"] == "asset.ready"]
    assert [t["status"] for t in ready] == [500, 500, 200]
    assert len({t["id"] for t in ready}) == 1  # one message, tried three times
    assert ready[-1]["data"]["asset"]["state"] == "ready"
    assert [r["height"] for r in ready[-1]["data"]["asset"]["renditions"]
            if r["kind"] == "video"] == [240]
    created = receiver.accepted("asset.created")
    assert len(created) == 1 and created[0]["data"]["asset"]["id"] == "hooked"
    assert created[0]["data"]["job"]["id"] == ready[0]["data"]["job"]["id"]

    resp = await second.client.get(f"/v1/webhooks/{sub['id']}/deliveries",
                                    headers=second.auth())
    log = {d["event_type"]: d for d in (await resp.json())["items"]}
    assert log["asset.ready"]["state"] == "delivered"
    assert [a["status"] for a in log["asset.ready"]["log"]] == [500, 500, 200]
    assert log["asset.created"]["attempts"] == 1

    # Takedown: REST delete, and the delete path's hook as well: one event.
    resp = await second.client.delete("/v1/assets/hooked", headers=second.auth())
    assert resp.status == 204
    await second.webhooks.record_deleted("hooked")
    await _until(lambda: receiver.accepted("asset.deleted"), 10, "asset.deleted")
    await asyncio.sleep(0.6)
    [deleted] = receiver.accepted("asset.deleted")
    assert deleted["data"]["asset"] == {"id": "hooked"}


async def test_failed_job_is_reported_and_deliveries_give_up(
        make_origin: MakeOrigin, receiver: Receiver, tmp_path: Path) -> None:
    o = await make_origin(jobs="run", retry_base=0.1)
    o.webhooks.give_up = 0.5  # a day in production
    sub = await _subscribe(o, receiver.url, ["asset.failed"])
    receiver.secret = sub["secret"]
    receiver.fail_first = {"asset.failed": 100}
    form = aiohttp.FormData()
    form.add_field("id", "junk")
    form.add_field("file", b"not a video at all" * 100, filename="junk.mp4")
    resp = await o.client.post("/v1/assets", data=form, headers=o.auth())
    assert resp.status == 202
    await _until(lambda: receiver.tries, 30, "asset.failed")
    assert receiver.tries[0]["data"]["job"]["state"] == "failed"
    assert receiver.tries[0]["data"]["job"]["error"]

    async def log() -> dict[str, Any]:
        resp = await o.client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=o.auth())
        items: list[dict[str, Any]] = (await resp.json())["items"]
        return items[0]

    deadline = time.monotonic() + 10
    while (await log())["state"] != "failed":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    d = await log()
    assert d["attempts"] >= 2 and d["last_status"] == 500 and d["next_attempt"] is None


async def test_deletes_are_reported_once_and_then_forgotten(
        make_origin: MakeOrigin, receiver: Receiver) -> None:
    """Two reports of one delete make one event; the dispatcher then forgets it
    (a long-running origin kept every delete it had seen)."""
    o = await make_origin()
    o.webhooks.remember_deletes = 0.5  # ten minutes in production
    sub = await _subscribe(o, receiver.url, ["asset.deleted"])
    receiver.secret = sub["secret"]
    for asset_id in ("gone-1", "gone-2", "gone-1"):
        await o.webhooks.record_deleted(asset_id)
    await _until(lambda: len(receiver.accepted("asset.deleted")) >= 2, 10, "asset.deleted")
    await asyncio.sleep(0.6)
    assert sorted(t["data"]["asset"]["id"] for t in receiver.accepted("asset.deleted")) \
        == ["gone-1", "gone-2"]
    await _until(lambda: not o.webhooks._deleted, 5, "the deletes to be forgotten")


@pytest.mark.slow
async def test_an_asset_made_again_and_deleted_again_is_reported_again(
        make_origin: MakeOrigin, receiver: Receiver, tmp_path: Path) -> None:
    """The second delete of one asset id, a new job since the first, is its own
    event, keyed by that job, not deduped as the first one."""
    master = make_master(tmp_path / "m.mp4", seconds=1, width=160, height=120, fps="25")
    o = await make_origin(jobs="run")
    sub = await _subscribe(o, receiver.url, ["asset.ready", "asset.deleted"])
    receiver.secret = sub["secret"]
    for n in (1, 2):
        await _upload(o, "again", master, "120:100")
        await _until(lambda n=n: len(receiver.accepted("asset.ready")) == n, 60,
                     f"asset.ready #{n}")
        resp = await o.client.delete("/v1/assets/again", headers=o.auth())
        assert resp.status == 204
        await _until(lambda n=n: len(receiver.accepted("asset.deleted")) == n, 10,
                     f"asset.deleted #{n}")
    await asyncio.sleep(0.6)
    deleted = receiver.accepted("asset.deleted")
    ready = receiver.accepted("asset.ready")
    assert [d["data"]["job"]["id"] for d in deleted] == \
        [r["data"]["job"]["id"] for r in ready]
    assert len({d["data"]["job"]["id"] for d in deleted}) == 2


async def test_subscriptions_are_checked_listed_and_deleted(
        make_origin: MakeOrigin, receiver: Receiver) -> None:
    o = await make_origin()
    resp = await o.client.post("/v1/webhooks", json={"url": receiver.url})
    assert resp.status == 401
    for body, word in (({"url": "ftp://x/y"}, "http"),
                       ({"url": receiver.url, "events": ["asset.exploded"]}, "asset.exploded"),
                       ({"url": receiver.url, "events": []}, "events"),
                       ({"url": receiver.url, "colour": "red"}, "colour")):
        resp = await o.client.post("/v1/webhooks", json=body, headers=o.auth())
        assert resp.status == 400, body
        assert word in (await resp.json())["title"]
    sub = await _subscribe(o, receiver.url, ["asset.ready"])
    resp = await o.client.get("/v1/webhooks", headers=o.auth())
    [listed] = (await resp.json())["items"]
    assert listed["id"] == sub["id"] and "secret" not in listed
    resp = await o.client.delete(f"/v1/webhooks/{sub['id']}", headers=o.auth())
    assert resp.status == 204
    resp = await o.client.delete(f"/v1/webhooks/{sub['id']}", headers=o.auth())
    assert resp.status == 404
    resp = await o.client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=o.auth())
    assert resp.status == 404


async def test_private_and_loopback_urls_are_refused_unless_allowed(
        make_origin: MakeOrigin, receiver: Receiver) -> None:
    o = await make_origin(allow_private=False)
    for url in (receiver.url, "http://10.1.2.3/hook", "http://[::1]:9/hook",
                "http://169.254.169.254/latest"):
        resp = await o.client.post("/v1/webhooks", json={"url": url}, headers=o.auth())
        assert resp.status == 400, url
        assert "private or loopback" in (await resp.json())["title"]
    with pytest.raises(AddressRefused):
        await check_url("http://localhost:1/x", allow_private=False)
    await check_url("http://localhost:1/x", allow_private=True)


def test_signature_matches_the_reference_implementation() -> None:
    from datetime import UTC, datetime

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    ts = 1_614_265_330
    body = b'{"test": 2432232314}'
    ours = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body)
    ref = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek",
                               datetime.fromtimestamp(ts, UTC), body.decode())
    assert ours == ref


# -- receivers that misbehave ---------------------------------------------------------------

async def _raw_receiver(behaviour: str) -> tuple[asyncio.Server, str, list[bytes]]:
    """A receiver on 127.0.0.1 that reads each request's head, then: ``hang`` (never
    answers), ``cut`` (closes the connection), ``garbage`` (answers what is not
    HTTP) or ``redirect`` (302 elsewhere). Returns the server, its URL and the
    request heads it saw."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            if behaviour == "hang":
                await asyncio.sleep(3600)
            elif behaviour == "garbage":
                writer.write(b"SMTP 220 hello there\r\n\r\n")
            elif behaviour == "redirect":
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\n"
                             b"Content-Length: 0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook", heads


@pytest.mark.parametrize("behaviour", ["hang", "cut", "garbage", "redirect"])
async def test_a_receiver_that_misbehaves_is_retried_and_does_not_hold_others(
        make_origin: MakeOrigin, receiver: Receiver, behaviour: str) -> None:
    """Each attempt ends (a hung receiver at the send timeout), is logged with what
    went wrong, and is tried again later; a healthy subscription's delivery of the
    same event is not held behind it."""
    server, bad_url, heads = await _raw_receiver(behaviour)
    try:
        o = await make_origin(retry_base=0.3, webhook_timeout=1.0)
        bad = await _subscribe(o, bad_url, ["asset.deleted"])
        good = await _subscribe(o, receiver.url, ["asset.deleted"])
        receiver.secret = good["secret"]
        t0 = time.monotonic()
        await o.webhooks.record_deleted("gone")
        await _until(lambda: receiver.accepted("asset.deleted"), 10, "the healthy delivery")
        assert time.monotonic() - t0 < (2.0 if behaviour != "hang" else 2.5)
        await _until(lambda: len(heads) >= 2, 15, "a second try at the bad receiver")

        resp = await o.client.get(f"/v1/webhooks/{bad['id']}/deliveries", headers=o.auth())
        [d] = (await resp.json())["items"]
        assert d["state"] == "pending" and d["attempts"] >= 1 and d["next_attempt"]
        first = d["log"][0]
        if behaviour == "redirect":  # not followed: a webhook goes where it was sent
            assert first["status"] == 302 and d["last_error"] == "HTTP 302"
        else:
            assert first["status"] is None or first["status"] == 0
            assert first["error"], first
        if behaviour == "hang":
            assert "Timeout" in first["error"] and first["duration_ms"] < 3000
        # Every try is the same message (one id), signed afresh.
        ids = {line.split(b": ", 1)[1] for h in heads for line in h.split(b"\r\n")
               if line.lower().startswith(b"webhook-id:")}
        assert len(ids) == 1
    finally:
        server.close()


async def test_a_store_that_fails_recording_an_attempt_is_sent_again_after_the_claim(
        make_origin: MakeOrigin, receiver: Receiver, monkeypatch: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """The webhook store fails as a try is recorded (the receiver got it): the row
    stays claimed, is claimed again once the claim runs out and sent again (at
    least once, the same webhook-id); the failure is one warning, not asyncio's
    "Task exception was never retrieved"."""
    o = await make_origin()
    o.webhooks.claim_seconds = 0.5  # a minute in production
    sub = await _subscribe(o, receiver.url, ["asset.deleted"])
    receiver.secret = sub["secret"]
    real = o.webhooks.store.finish_attempt
    failures = 0

    async def finish_attempt(*args: Any) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OSError("disk I/O error")
        await real(*args)

    monkeypatch.setattr(o.webhooks.store, "finish_attempt", finish_attempt)
    with caplog.at_level("WARNING", logger="origin.webhooks"):
        await o.webhooks.record_deleted("gone")
        await _until(lambda: len(receiver.accepted("asset.deleted")) >= 2, 10,
                     "the delivery sent again after its claim")
    tries = receiver.accepted("asset.deleted")
    assert len({t["id"] for t in tries}) == 1
    warned = [r.getMessage() for r in caplog.records if "record failed" in r.getMessage()]
    assert len(warned) == 1 and "disk I/O error" in warned[0], warned
    resp = await o.client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=o.auth())
    [d] = (await resp.json())["items"]
    assert d["state"] == "delivered"
