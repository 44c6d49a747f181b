"""The admin API when a backend fails under it: a full disk, an S3 server killed.
Each fault is one line of problem JSON with its status (507 for the disk, 503 and
Retry-After for a backend that is out); before, each escaped the handler as
aiohttp's plain-text 500. The origin answers again once the fault clears."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from metadata.s3_objects import S3Objects
from tests.conftest import tmpfs
from tests.metadata.servers import ServerProcess, make_bucket
from tests.origin.conftest import MakeOrigin
from tests.origin.test_admin import form


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tmpfs", "2m") as mount:
        yield mount


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; it is the caller's to remove."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


async def problem_of(resp: aiohttp.ClientResponse) -> dict[str, object]:
    assert resp.content_type == "application/problem+json", await resp.text()
    doc: dict[str, object] = await resp.json()
    assert "\n" not in str(doc["title"])
    return doc


async def test_upload_onto_a_full_disk_is_507_and_keeps_nothing(
        make_origin: MakeOrigin, small_disk: Path) -> None:
    uploads = small_disk / "uploads"
    o = await make_origin(upload_dir=uploads)
    big = aiohttp.FormData()
    big.add_field("id", "big")
    big.add_field("file", io.BytesIO(os.urandom(3 * 2**20)), filename="big.mov",
                  content_type="video/quicktime")
    resp = await o.client.post("/v1/assets", data=big)
    assert resp.status == 507, await resp.text()
    assert "no space left" in str((await problem_of(resp))["title"])
    assert list(uploads.glob("*")) == []
    assert await o.store.get_asset("big") is None
    small = await o.client.post("/v1/assets", data=form(os.urandom(100_000), id="small"))
    assert small.status == 202, await small.text()


async def test_delete_when_the_store_cannot_write_is_507(
        make_origin: MakeOrigin, small_disk: Path, tmp_path: Path) -> None:
    """The SQLite store on a disk that filled: its delete fails ("database or disk is
    full"), the asset stays, and the delete goes through once there is room."""
    o = await make_origin(upload_dir=tmp_path / "up", store_dir=small_disk)
    made = await o.client.post("/v1/assets", data=form(os.urandom(50_000), id="stays"))
    assert made.status == 202, await made.text()
    filler = fill(small_disk)
    try:
        resp = await o.client.delete("/v1/assets/stays")
        assert resp.status == 507, await resp.text()
        await problem_of(resp)
    finally:
        filler.unlink()
    assert (await o.client.get("/v1/assets/stays")).status == 200
    assert (await o.client.delete("/v1/assets/stays")).status == 204


async def test_s3_killed_under_create_and_delete_is_503(
        make_origin: MakeOrigin, moto: ServerProcess, tmp_path: Path) -> None:
    objects = S3Objects(make_bucket(moto.url), "cdlc", endpoint_url=moto.url,
                        connect_timeout=1.0, write_attempts=1)
    o = await make_origin(objects=objects, upload_dir=tmp_path / "up")
    made = await o.client.post("/v1/assets", data=form(os.urandom(50_000), id="kept"))
    assert made.status == 202, await made.text()
    moto.kill()
    resp = await o.client.post("/v1/assets", data=form(os.urandom(50_000), id="lost"))
    assert resp.status == 503, await resp.text()
    assert int(resp.headers["Retry-After"]) >= 1
    assert "a backend is unavailable" in str((await problem_of(resp))["title"])
    assert await o.store.get_asset("lost") is None  # refused: nothing recorded
    assert list((tmp_path / "up").glob("*")) == []


async def test_s3_hung_under_a_create_is_503_within_its_write_bound(
        make_origin: MakeOrigin, moto: ServerProcess, tmp_path: Path) -> None:
    """A SIGSTOPped S3: storing the master waited forever (botocore's read timeout
    does not end a put whose server stopped), and so did the request. Now the write
    is bounded (attempts x (read timeout + connect)): 503, nothing recorded, and the
    next create after S3 resumes works."""
    objects = S3Objects(make_bucket(moto.url), "cdlc", endpoint_url=moto.url,
                        write_attempts=1, write_read_timeout=1.0)
    o = await make_origin(objects=objects, upload_dir=tmp_path / "up")
    moto.pause()
    try:
        t0 = time.monotonic()
        resp = await o.client.post("/v1/assets", data=form(os.urandom(50_000), id="hung"))
        took = time.monotonic() - t0
        assert resp.status == 503, await resp.text()
        assert "TimeoutError" in str((await problem_of(resp))["title"])
        assert took < 15, took
        assert await o.store.get_asset("hung") is None
    finally:
        moto.resume()
    made = await o.client.post("/v1/assets", data=form(os.urandom(50_000), id="after"))
    assert made.status == 202, await made.text()


async def test_a_delete_that_s3_fails_is_503_and_a_second_one_finishes_it(
        make_origin: MakeOrigin, moto: ServerProcess, tmp_path: Path) -> None:
    """The metadata goes first (nothing is served), then the bytes: when S3 hangs
    under that step the delete is 503 (it was a plain-text 500), the asset is gone
    from the API, and a second delete once S3 answers removes what was left."""
    objects = S3Objects(make_bucket(moto.url), "cdlc", endpoint_url=moto.url,
                        write_attempts=1, write_read_timeout=1.0)
    o = await make_origin(objects=objects, upload_dir=tmp_path / "up")
    made = await o.client.post("/v1/assets", data=form(os.urandom(50_000), id="gone"))
    assert made.status == 202, await made.text()
    assert await objects.stat("masters/gone/source") is not None
    moto.pause()
    try:
        resp = await o.client.delete("/v1/assets/gone")
        assert resp.status == 503, await resp.text()
        await problem_of(resp)
    finally:
        moto.resume()
    assert (await o.client.get("/v1/assets/gone")).status == 404
    assert (await o.client.delete("/v1/assets/gone")).status == 204
    assert await objects.stat("masters/gone/source") is None
    assert (await o.client.delete("/v1/assets/gone")).status == 404


async def test_aiohttp_refusals_under_the_api_are_problem_json(make_origin: MakeOrigin) -> None:
    """A JSON body past client_max_size (1 MiB) and a method a route does not take:
    aiohttp's own plain-text pages before, problem JSON now, with their headers."""
    o = await make_origin()
    resp = await o.client.post("/v1/assets", data=io.BytesIO(b"{" + b" " * 2**21 + b"}"),
                               headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert "Maximum request body size" in str((await problem_of(resp))["title"])
    resp = await o.client.put("/v1/assets")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]
    assert (await problem_of(resp))["title"] == "Method Not Allowed"
    resp = await o.client.get("/v1/nothing-here")
    assert resp.status == 404
    await problem_of(resp)
