"""tus 1.0.0 at /v1/uploads, against real clients: tuspy (Python) and
tus-js-client (Node), plus raw requests for the protocol's edges (offsets,
checksums, limits, expiry, a connection cut mid-body, a restart)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from tusclient.client import TusClient

from tests.conftest import tmpfs
from tests.console.conftest import API_KEY, ConsoleOrigin, MakeOrigin

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = 256 * 1024


def _meta(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def _master(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def _create(o: ConsoleOrigin, length: int, **meta: str) -> str:
    resp = await o.client.post("/v1/uploads", headers={
        **TUS, **o.auth(), "Upload-Length": str(length), "Upload-Metadata": _meta(**meta)})
    assert resp.status == 201, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith("/v1/uploads/")
    return location


async def _head(o: ConsoleOrigin, location: str) -> int:
    resp = await o.client.head(location, headers={**TUS, **o.auth()})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    return int(resp.headers["Upload-Offset"])


async def _patch(o: ConsoleOrigin, location: str, offset: int, body: bytes,
                 **headers: str) -> int:
    resp = await o.client.patch(location, data=body, headers={
        **TUS, **o.auth(), "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream", **headers})
    return resp.status


def _upload_dir_files(o: ConsoleOrigin) -> list[str]:
    root = o.tus.uploads.root
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def test_options_advertise_version_extensions_and_max_size(
        make_origin: MakeOrigin) -> None:
    o = await make_origin(max_upload_bytes=5 * 2**20)
    resp = await o.client.options("/v1/uploads")  # no key: discovery and CORS preflight
    assert resp.status == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    assert {"creation", "termination", "expiration", "checksum"} <= set(
        resp.headers["Tus-Extension"].split(","))
    assert resp.headers["Tus-Max-Size"] == str(5 * 2**20)
    assert "Upload-Offset" in resp.headers["Access-Control-Expose-Headers"]
    assert "Tus-Resumable" in resp.headers["Access-Control-Allow-Headers"]
    assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]


async def test_tuspy_upload_resumes_after_stopping_and_after_a_restart(
        make_origin: MakeOrigin, tmp_path: Path) -> None:
    master = tmp_path / "clip.mp4"
    data = _master(master, 10 * CHUNK + 1234)
    first = await make_origin()
    client = TusClient(first.url + "/v1/uploads", headers={"Authorization": f"Bearer {API_KEY}"})
    with master.open("rb") as stream:
        up = client.uploader(file_stream=stream, chunk_size=CHUNK, metadata={
            "filename": "clip.mp4", "asset_id": "tuspy1", "ladder": "240:300",
            "preset": "ultrafast"})
        # The client stops after three chunks, as if its connection dropped there.
        await asyncio.to_thread(up.upload, 3 * CHUNK)
    assert up.url is not None
    path = up.url.removeprefix(first.url)
    assert await _head(first, path) == 3 * CHUNK
    await first.client.close()

    # A new origin over the same data dir (a restart of `cdlc serve`) knows it.
    second = await make_origin()
    assert await _head(second, path) == 3 * CHUNK
    assert second.held is not None and second.held.jobs == []
    client2 = TusClient(second.url + "/v1/uploads",
                        headers={"Authorization": f"Bearer {API_KEY}"})
    with master.open("rb") as stream:
        # The uploader asks the server for the offset (HEAD) as it is made.
        resumed = await asyncio.to_thread(client2.uploader, file_stream=stream,
                                          url=second.url + path, chunk_size=CHUNK)
        assert resumed.offset == 3 * CHUNK  # nothing is sent twice
        await asyncio.to_thread(resumed.upload)

    [job] = second.held.jobs
    assert job.asset_id == "tuspy1"
    assert job.request.ladder == "240:300" and job.request.preset == "ultrafast"
    assert job.request.source_name == "clip.mp4"
    assert second.held.masters == [data]
    assert await _head(second, path) == len(data)
    view = await second.engine.get("tuspy1")
    assert view.asset.source_name == "clip.mp4"
    # The bytes moved to the master's place: no copy left in the upload dir.
    assert not [n for n in _upload_dir_files(second) if n.endswith(".bin")]


async def test_connection_cut_mid_body_keeps_the_bytes_that_arrived(
        make_origin: MakeOrigin) -> None:
    o = await make_origin()
    data = os.urandom(4 * CHUNK)
    location = await _create(o, len(data), filename="cut.mov", asset_id="cut1")
    sent = 300 * 1024
    host, port = o.client.server.host, o.client.server.port
    assert isinstance(port, int)

    def cut() -> None:
        with socket.create_connection((host, port)) as s:
            s.sendall((f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\n"
                       f"Authorization: Bearer {API_KEY}\r\nTus-Resumable: 1.0.0\r\n"
                       "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                       f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:sent])
            time.sleep(0.3)  # let the origin read what was sent, then drop the line

    await asyncio.to_thread(cut)
    offset = -1
    for _ in range(50):
        offset = await _head(o, location)
        if offset == sent:
            break
        await asyncio.sleep(0.05)
    assert offset == sent
    # The protocol's guard: a PATCH from the wrong offset changes nothing.
    assert await _patch(o, location, 0, data[:CHUNK]) == 409
    assert await _head(o, location) == sent
    assert await _patch(o, location, sent, data[sent:]) == 204
    assert o.held is not None and o.held.masters == [data]


async def test_tus_js_client_in_node_aborts_and_resumes(
        make_origin: MakeOrigin, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is needed for tus-js-client"
    o = await make_origin()
    master = tmp_path / "node.mp4"
    data = _master(master, 6 * CHUNK + 7)
    script = Path(__file__).with_name("tus_node.cjs")
    meta = json.dumps({"filename": "node.mp4", "asset_id": "nodejs1", "copy": "false"})
    proc = await asyncio.create_subprocess_exec(
        node, str(script), o.url + "/v1/uploads", str(master), API_KEY, meta,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["abortedAt"] == CHUNK
    assert report["resumedFrom"] >= CHUNK  # resumed, not restarted
    assert report["offsets"][-1] == len(data)
    assert o.held is not None and o.held.masters == [data]
    assert o.held.jobs[0].asset_id == "nodejs1"


async def test_a_bad_option_is_refused_at_creation_before_any_byte(
        make_origin: MakeOrigin) -> None:
    o = await make_origin()
    for meta, word in (({"filename": "a.mp4", "ladder": "tall:fast"}, "ladder"),
                       ({"filename": "a.mp4", "preset": "warp"}, "preset"),
                       ({"filename": "a.mp4", "segment_seconds": "-1"}, "segment_seconds"),
                       ({"filename": "a.mp4", "asset_id": "no spaces"}, "asset id"),
                       ({"filename": "a.mp4", "ladders": "240:300"}, "ladders")):
        resp = await o.client.post("/v1/uploads", headers={
            **TUS, **o.auth(), "Upload-Length": "1000", "Upload-Metadata": _meta(**meta)})
        assert resp.status == 400, meta
        assert word in (await resp.json())["title"]
    resp = await o.client.post("/v1/uploads", headers={
        **TUS, **o.auth(), "Upload-Length": "1000", "Upload-Metadata": "filename %%%"})
    assert resp.status == 400
    assert not [n for n in _upload_dir_files(o) if n.endswith((".bin", ".json"))]


async def test_size_limit_is_413_at_creation_and_past_the_length(
        make_origin: MakeOrigin) -> None:
    o = await make_origin(max_upload_bytes=1_000_000)
    resp = await o.client.post("/v1/uploads", headers={
        **TUS, **o.auth(), "Upload-Length": "1000001", "Upload-Metadata": _meta(filename="x")})
    assert resp.status == 413
    location = await _create(o, 1000, filename="x.mp4")
    assert await _patch(o, location, 0, b"x" * 1001) == 413
    assert await _head(o, location) == 0


async def test_auth_version_and_content_type_are_checked(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    resp = await o.client.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await o.client.post("/v1/uploads", headers={**o.auth(), "Upload-Length": "10"})
    assert resp.status == 412 and resp.headers["Tus-Version"] == "1.0.0"
    location = await _create(o, 10, filename="x.mp4")
    resp = await o.client.patch(location, data=b"0123456789", headers={
        **TUS, **o.auth(), "Upload-Offset": "0", "Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await o.client.head(location, headers=TUS)
    assert resp.status == 401


async def _raw_status(o: ConsoleOrigin, head: bytes) -> int:
    """The status of a request sent as raw bytes (headers no client library sends)."""
    reader, writer = await asyncio.open_connection(o.client.server.host, o.client.server.port)
    try:
        writer.write(head + b"Host: origin\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()


async def test_numbers_and_credentials_a_client_should_never_send(
        make_origin: MakeOrigin) -> None:
    """A non-ASCII digit in Upload-Length or Upload-Offset (str.isdigit() took "²",
    then int() raised: 500; "٣" was taken as 3), and a non-UTF-8 byte in the
    credentials (500 from encoding it): 400 and 401."""
    o = await make_origin()
    auth = f"Authorization: Bearer {API_KEY}\r\n".encode()
    for length in ("²", "٣", "-1", "1e3"):
        status = await _raw_status(o, b"POST /v1/uploads HTTP/1.1\r\nTus-Resumable: 1.0.0\r\n"
                                   + auth + f"Upload-Length: {length}\r\n".encode())
        assert status == 400, length
    location = await _create(o, 10, filename="x.mp4")
    for offset in ("²", "٣"):
        status = await _raw_status(o, f"PATCH {location} HTTP/1.1\r\n".encode()
                                   + b"Tus-Resumable: 1.0.0\r\n" + auth
                                   + f"Upload-Offset: {offset}\r\n".encode()
                                   + b"Content-Type: application/offset+octet-stream\r\n"
                                   + b"Content-Length: 0\r\n")
        assert status == 400, offset
    for header in (b"Authorization: Bearer \xff\r\n", b"X-API-Key: \xff\xfe\r\n"):
        for line in (b"POST /v1/uploads HTTP/1.1\r\nTus-Resumable: 1.0.0\r\n"
                     b"Upload-Length: 10\r\n", b"GET /v1/assets HTTP/1.1\r\n",
                     b"GET /v1/live HTTP/1.1\r\n"):
            assert await _raw_status(o, line + header) == 401, (line, header)


async def test_a_full_disk_is_507_at_creation_and_mid_patch(
        make_origin: MakeOrigin, tmp_path: Path) -> None:
    """The upload directory fills: a PATCH that cannot write is 507 with problem JSON
    (a plain-text 500 before), and so is a creation that cannot write its record;
    with room again the upload resumes from what was kept."""
    with tmpfs(tmp_path / "tmpfs", "2m") as disk:
        o = await make_origin(data_dir=disk / "data")
        data = os.urandom(3 * 2**20)
        location = await _create(o, len(data), filename="big.mp4")
        resp = await o.client.patch(location, data=io.BytesIO(data), headers={
            **TUS, **o.auth(), "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream"})
        assert resp.status == 507, await resp.text()
        assert resp.content_type == "application/problem+json"
        kept = await _head(o, location)
        assert kept < len(data)
        filler = disk / "filler"
        with filler.open("wb") as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        resp = await o.client.post("/v1/uploads", headers={
            **TUS, **o.auth(), "Upload-Length": "10", "Upload-Metadata": _meta(filename="s")})
        assert resp.status == 507, await resp.text()
        assert resp.content_type == "application/problem+json"
        # Nothing half-made: no empty data file, no sidecar's temporary (the two
        # were left for the sweep); the first upload's files stand.
        first = location.rsplit("/", 1)[1]
        assert _upload_dir_files(o) == [f"{first}.bin", f"{first}.json"]
        filler.unlink()
        assert await _head(o, location) == kept
        await o.client.close()


async def test_sha1_checksum_is_verified_per_patch(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    body = os.urandom(5000)
    location = await _create(o, 10_000, filename="sum.mp4")
    good = base64.b64encode(hashlib.sha1(body).digest()).decode()
    bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    assert await _patch(o, location, 0, body, **{"Upload-Checksum": f"sha1 {bad}"}) == 460
    assert await _head(o, location) == 0
    assert await _patch(o, location, 0, body, **{"Upload-Checksum": f"sha1 {good}"}) == 204
    assert await _head(o, location) == 5000


async def test_termination_removes_the_upload(make_origin: MakeOrigin) -> None:
    o = await make_origin()
    location = await _create(o, 4000, filename="gone.mp4")
    assert await _patch(o, location, 0, b"a" * 1000) == 204
    resp = await o.client.delete(location, headers={**TUS, **o.auth()})
    assert resp.status == 204
    resp = await o.client.head(location, headers={**TUS, **o.auth()})
    assert resp.status == 404
    assert await _patch(o, location, 1000, b"a" * 1000) == 404
    assert _upload_dir_files(o) == []


async def test_an_abandoned_upload_expires_and_is_swept(make_origin: MakeOrigin) -> None:
    o = await make_origin(expire_seconds=1.0)
    asked = time.time()
    resp = await o.client.post("/v1/uploads", headers={
        **TUS, **o.auth(), "Upload-Length": "3000", "Upload-Metadata": _meta(filename="a")})
    expires = parsedate_to_datetime(resp.headers["Upload-Expires"]).timestamp()
    # An HTTP date has whole seconds: asked + 1 s, cut down to its second.
    assert asked <= expires <= asked + 1.5
    old = resp.headers["Location"]
    await asyncio.sleep(1.1)
    fresh = await _create(o, 3000, filename="b")
    assert await _patch(o, fresh, 0, b"b" * 100) == 204
    swept = await o.tus.sweep()
    assert swept == [old.rsplit("/", 1)[1]]
    names = _upload_dir_files(o)
    assert not [n for n in names if n.startswith(swept[0])]
    assert any(n.startswith(fresh.rsplit("/", 1)[1]) for n in names)
    resp = await o.client.head(old, headers={**TUS, **o.auth()})
    assert resp.status == 404


async def test_an_asset_id_in_use_is_409_at_creation(make_origin: MakeOrigin,
                                                    tmp_path: Path) -> None:
    o = await make_origin()
    location = await _create(o, 100, filename="a.mp4", asset_id="taken")
    assert await _patch(o, location, 0, b"x" * 100) == 204
    resp = await o.client.post("/v1/uploads", headers={
        **TUS, **o.auth(), "Upload-Length": "100",
        "Upload-Metadata": _meta(filename="b.mp4", asset_id="taken")})
    assert resp.status == 409


@pytest.mark.parametrize("method", ["PATCH"])
async def test_method_override_for_clients_without_patch(make_origin: MakeOrigin,
                                                         method: str) -> None:
    o = await make_origin()
    location = await _create(o, 10, filename="o.mp4")
    resp = await o.client.post(location, data=b"0123456789", headers={
        **TUS, **o.auth(), "X-HTTP-Method-Override": method, "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 204
    assert resp.headers["Upload-Offset"] == "10"
    assert o.held is not None and o.held.masters == [b"0123456789"]


async def test_creation_with_upload_sends_the_first_bytes_with_the_post(
        make_origin: MakeOrigin) -> None:
    o = await make_origin()
    resp = await o.client.post("/v1/uploads", data=b"0123", headers={
        **TUS, **o.auth(), "Upload-Length": "10", "Upload-Metadata": _meta(filename="c.mp4"),
        "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 201
    assert resp.headers["Upload-Offset"] == "4"
    location = resp.headers["Location"]
    assert await _patch(o, location, 4, b"456789") == 204
    assert o.held is not None and o.held.masters == [b"0123456789"]
    assert o.held.jobs[0].asset_id == resp.headers["Cdlc-Asset-Id"]


async def test_an_upload_complete_at_a_crash_is_submitted_at_the_next_start(
        make_origin: MakeOrigin, tmp_path: Path) -> None:
    first = await make_origin()
    location = await _create(first, 6, filename="late.mp4", asset_id="late1")
    await first.client.close()
    # The state a crash between the last acknowledgement and the submit leaves:
    # every byte on disk, no job. (Written here as the PATCH would have.)
    upload_id = location.rsplit("/", 1)[1]
    (tmp_path / "data" / "tus" / f"{upload_id}.bin").write_bytes(b"abcdef")
    second = await make_origin()
    for _ in range(100):  # the start-up sweep submits it
        if second.held is not None and second.held.jobs:
            break
        await asyncio.sleep(0.02)
    assert second.held is not None and second.held.masters == [b"abcdef"]
    assert second.held.jobs[0].asset_id == "late1"
    assert await _head(second, location) == 6


async def test_head_while_the_job_is_submitted_says_complete(
        make_origin: MakeOrigin) -> None:
    """Between the last byte and the SUBMITTED record the master is the
    application's already: a HEAD then (a client resuming after a dropped answer)
    still hears "complete", never 404 (which would make it start over)."""
    o = await make_origin()
    assert o.held is not None
    o.held.gate = asyncio.Event()
    location = await _create(o, 6, filename="slow.mp4", asset_id="slow1")
    last = asyncio.ensure_future(_patch(o, location, 0, b"abcdef"))
    for _ in range(200):
        if o.held.jobs:
            break
        await asyncio.sleep(0.01)
    assert o.held.jobs and not last.done()
    assert await _head(o, location) == 6
    o.held.gate.set()
    assert await last == 204
    assert await _head(o, location) == 6


async def test_a_second_writer_of_one_upload_is_423_while_the_first_writes(
        make_origin: MakeOrigin) -> None:
    o = await make_origin()
    location = await _create(o, 2 * CHUNK, filename="two.mp4")
    host, port = o.client.server.host, o.client.server.port
    assert isinstance(port, int)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\n"
                  f"Authorization: Bearer {API_KEY}\r\nTus-Resumable: 1.0.0\r\n"
                  "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                  f"Content-Length: {CHUNK}\r\n\r\n").encode() + b"a" * 1000)
    await writer.drain()
    await asyncio.sleep(0.2)  # the first PATCH holds the upload, waiting for its body
    assert await _patch(o, location, 0, b"b" * 10) == 423
    writer.write(b"a" * (CHUNK - 1000))
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert b" 204 " in status_line
    writer.close()
    await writer.wait_closed()
    assert await _head(o, location) == CHUNK
