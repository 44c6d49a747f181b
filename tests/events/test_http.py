"""POST /v1/events and GET /v1/assets/{id}/stats over a real aiohttp server and
the SQLite log: tokens decide asset and viewer (a forged asset is refused),
resends count once, sendBeacon's text/plain, CORS, 413, 429, auth on the stats,
Prometheus aggregates without viewer labels, the beacon script served."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cdn import tokens
from metadata.event_log_sqlite import SQLiteEventLog
from origin.auth import Authenticator
from origin.events import BEACON_JS, EventIntake, IntakeLimits, add_event_routes

KEY = b"events-test-key"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[tuple[Client, EventIntake]]]


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path) -> MakeClient:
    async def make(**kw: Any) -> tuple[Client, EventIntake]:
        intake = EventIntake(SQLiteEventLog(tmp_path / "metadata.db"),
                             signing_key=kw.pop("signing_key", KEY), **kw)
        app = web.Application()
        add_event_routes(app, intake)
        return await aiohttp_client(app), intake
    return make


def ev(n: int, *, asset: str = "a1", kind: str = "heartbeat", session: str = "s1",
       **extra: Any) -> dict[str, Any]:
    return {"event_id": f"{session}-{n}", "session_id": session, "asset_id": asset,
            "type": kind, "time": f"2026-12-01T08:00:{n:02d}.000Z", "position_seconds": n,
            "rendition_id": "v360", **extra}


async def test_events_are_recorded_once_with_the_tokens_viewer(make_client: MakeClient) -> None:
    client, intake = await make_client()
    token = tokens.sign_for(KEY, "a1", 600, viewer="alice")
    batch = [ev(0, kind="start"), ev(1, kind="first_frame"), ev(2), ev(3)]
    r = await client.post(f"/v1/events?token={token}", json=batch)
    assert r.status == 200, await r.text()
    assert await r.json() == {"accepted": 4, "duplicates": 0, "rejected": []}
    # The same batch again (a retried beacon), as sendBeacon sends it: text/plain.
    r = await client.post(f"/v1/events?token={token}", data=json.dumps(batch),
                          headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert await r.json() == {"accepted": 0, "duplicates": 4, "rejected": []}
    logged = await intake.log.read("", 100)
    assert len(logged) == 4 and {e.event.viewer_id for e in logged} == {"alice"}
    r = await client.get("/v1/assets/a1/stats")
    stats = await r.json()
    assert stats["sessions"] == 1 and stats["viewers"] == 1
    assert stats["watch_seconds"] == pytest.approx(3.0)   # positions 0 -> 3, 1 s apart
    assert stats["renditions"] == {"v360": 3.0}
    assert stats["startup_p50_seconds"] == pytest.approx(1.0)


async def test_a_forged_asset_is_refused(make_client: MakeClient) -> None:
    client, intake = await make_client()
    token = tokens.sign_for(KEY, "a1", 600, viewer="alice")
    # A token for a1 presented for a2: the whole request is refused.
    r = await client.post(f"/v1/events?token={token}&asset=a2", json=[ev(0, asset="a2")])
    assert r.status == 403
    # The same, the asset taken from the first event.
    r = await client.post(f"/v1/events?token={token}", json=[ev(0, asset="a2")])
    assert r.status == 403
    # A batch for a1 smuggling one event of a2 and one of another viewer: those
    # two refused, the rest recorded.
    batch = [ev(0), ev(1, asset="a2"), ev(2, viewer_id="mallory"), ev(3, asset="")]
    r = await client.post(f"/v1/events?token={token}", json=batch)
    body = await r.json()
    assert r.status == 200 and body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == [1, 2]
    assert {e.event.asset_id for e in await intake.log.read("", 100)} == {"a1"}
    # No token, a bad token, a malformed event.
    assert (await client.post("/v1/events", json=[ev(0)])).status == 403
    assert (await client.post("/v1/events?token=1.a.xyz", json=[ev(0)])).status == 403
    r = await client.post(f"/v1/events?token={token}", json=[{"type": "start", "asset_id": "a1"}])
    assert (await r.json())["rejected"][0]["reason"] == "event_id is required"
    m = await (await client.get("/v1/events/metrics")).text()
    assert 'cdlc_watch_events_rejected_total{reason="forged"}' in m
    assert "alice" not in m and "viewer" not in m     # aggregates only


async def test_limits_and_cors(make_client: MakeClient) -> None:
    client, _ = await make_client(limits=IntakeLimits(max_body_bytes=4096, max_events=10,
                                                      rate=2.0, burst=3.0))
    token = tokens.sign_for(KEY, "a1", 600)
    r = await client.options("/v1/events", headers={
        "Origin": "http://player.example", "Access-Control-Request-Method": "POST"})
    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = await client.post(f"/v1/events?token={token}", json=[ev(i) for i in range(11)])
    assert r.status == 413 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = await client.post(f"/v1/events?token={token}", data="[" + " " * 5000 + "]")
    assert r.status == 413
    r = await client.post(f"/v1/events?token={token}", data="not json")
    assert r.status == 400
    r = await client.post(f"/v1/events?token={token}", json=[ev(0)])
    assert r.status == 429            # the fourth request of this token within a second
    assert int(r.headers["Retry-After"]) >= 1
    other = tokens.sign_for(KEY, "a1", 600, viewer="bob")   # another token: its own bucket
    r = await client.post(f"/v1/events?token={other}", data="{}")
    assert r.status == 400


async def test_a_body_of_many_chunks_is_read_whole(make_client: MakeClient) -> None:
    """The intake read one chunk of the body (StreamReader.read(n) answers what has
    arrived): a 250 KB batch, under the 256 KiB limit, was refused as not JSON.
    Sent chunked, without a Content-Length, as well as with one."""
    client, intake = await make_client()
    token = tokens.sign_for(KEY, "a1", 600)
    batch = [ev(i % 60, session=f"big{i // 60}", error="x" * 350) for i in range(450)]
    body = json.dumps(batch).encode()
    assert 200_000 < len(body) <= intake.limits.max_body_bytes

    async def pieces() -> Any:
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    r = await client.post(f"/v1/events?token={token}", data=body)
    assert r.status == 200, await r.text()
    assert (await r.json())["accepted"] == 450
    r = await client.post(f"/v1/events?token={token}", data=pieces())
    assert r.status == 200, await r.text()
    assert (await r.json())["duplicates"] == 450
    over = body[:-1] + b"," + b" " * intake.limits.max_body_bytes + b"]"
    r = await client.post(f"/v1/events?token={token}", data=over)
    assert r.status == 413


async def test_stats_need_assets_read_once_auth_is_configured(make_client: MakeClient) -> None:
    client, _ = await make_client(authenticator=Authenticator(api_key="k"))
    assert (await client.get("/v1/assets/a1/stats")).status == 401
    r = await client.get("/v1/assets/a1/stats", headers={"Authorization": "Bearer k"})
    assert r.status == 200 and (await r.json())["sessions"] == 0


async def test_the_beacon_script_is_served(make_client: MakeClient) -> None:
    client, _ = await make_client()
    r = await client.get("/player/cdlc-beacon.js")
    assert r.status == 200 and r.content_type == "text/javascript"
    assert await r.read() == BEACON_JS.read_bytes()
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_out_of_range_numbers_are_refused_one_by_one(make_client: MakeClient) -> None:
    """JSON allows integers of any size: one past float's range is that event's
    refusal, never a 500, and the rest of the batch is recorded."""
    client, _ = await make_client()
    token = tokens.sign_for(KEY, "a1", 600)
    body = ('[' + json.dumps(ev(0, kind="start")) + ','
            + json.dumps({**ev(1), "position_seconds": 10**400})
            + ',' + json.dumps({**ev(2), "time": 10**20}) + ']')
    r = await client.post(f"/v1/events?token={token}", data=body,
                          headers={"Content-Type": "text/plain"})
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert doc["accepted"] == 1
    assert [(x["index"], x["reason"]) for x in doc["rejected"]] == [
        (1, "position_seconds is out of range"),
        (2, "time must be a Unix time from 1970 to 9999")]


async def test_a_body_nested_too_deep_is_a_400(make_client: MakeClient) -> None:
    client, _ = await make_client()
    token = tokens.sign_for(KEY, "a1", 600)
    r = await client.post(f"/v1/events?token={token}", data="[" * 50_000 + "]" * 50_000,
                          headers={"Content-Type": "text/plain"})
    assert r.status == 400
    assert "JSON array" in (await r.json())["title"]
