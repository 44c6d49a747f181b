"""Every ObjectStore passes these: the local directory and S3 (a real moto server)."""

from __future__ import annotations

import asyncio
import os
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from metadata import open_objects
from metadata.local_objects import LocalObjects
from metadata.objects import ObjectStore
from metadata.s3_objects import S3Objects
from tests.metadata.servers import make_bucket

MiB = 2**20


@pytest.fixture(params=["local", "s3"])
async def objects(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ObjectStore]:
    store: ObjectStore
    if request.param == "local":
        store = open_objects("", tmp_path)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = make_bucket(endpoint)
        # Small parts so a 11 MiB file really goes up as a 3-part multipart upload.
        store = S3Objects(bucket, "pre/fix", endpoint_url=endpoint,
                          multipart_threshold=5 * MiB, part_size=5 * MiB)
    yield store
    await store.close()


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


async def test_bytes_round_trip_and_missing(objects: ObjectStore) -> None:
    await objects.put_bytes("media/a1/v720/init.mp4", b"\x00init")
    assert await objects.get_bytes("media/a1/v720/init.mp4") == b"\x00init"
    with pytest.raises(KeyError):
        await objects.get_bytes("media/a1/v720/nope.m4s")
    assert await objects.stat("media/a1/v720/nope.m4s") is None


async def test_stat_is_a_strong_quoted_etag_that_follows_content(objects: ObjectStore) -> None:
    await objects.put_bytes("k/one", b"a" * 100)
    st = await objects.stat("k/one")
    assert st is not None and st.size == 100
    assert st.etag.startswith('"') and st.etag.endswith('"') and not st.etag.startswith("W/")
    await asyncio.sleep(0.01)
    await objects.put_bytes("k/one", b"b" * 101)
    st2 = await objects.stat("k/one")
    assert st2 is not None and st2.size == 101 and st2.etag != st.etag


async def test_put_file_small_and_large(objects: ObjectStore, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1000))
    await objects.put_file("masters/a1/source", small)
    assert await objects.get_bytes("masters/a1/source") == small.read_bytes()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB + 123))
    await objects.put_file("masters/a2/source", big)
    assert await objects.get_bytes("masters/a2/source") == big.read_bytes()
    st = await objects.stat("masters/a2/source")
    assert st is not None and st.size == 11 * MiB + 123
    if isinstance(objects, S3Objects):
        assert st.etag.endswith('-3"'), st.etag  # S3's multipart ETag: md5-of-md5s-<parts>


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, None), (0, 1000), (10, 20), (999, None), (1000, None), (500, 5000), (5, 5)],
)
async def test_iter_range(objects: ObjectStore, start: int, end: int | None) -> None:
    data = os.urandom(1000)
    await objects.put_bytes("r/obj", data)
    got = await collect(objects.iter_range("r/obj", start, end))
    assert got == data[start:end]


async def test_iter_range_chunks(objects: ObjectStore) -> None:
    data = os.urandom(100)
    await objects.put_bytes("r/c", data)
    chunks = [c async for c in objects.iter_range("r/c", 3, 90, chunk=7)]
    assert b"".join(chunks) == data[3:90]
    assert all(0 < len(c) <= 7 for c in chunks)


async def test_iter_range_missing(objects: ObjectStore) -> None:
    with pytest.raises(KeyError):
        await collect(objects.iter_range("r/none"))


async def test_delete_prefix_counts_and_spares_neighbours(objects: ObjectStore) -> None:
    for key in ["media/a1/v720/1.m4s", "media/a1/v720/2.m4s", "media/a1/audio/1.m4s",
                "media/a10/v720/1.m4s", "masters/a1/source"]:
        await objects.put_bytes(key, b"x")
    assert await objects.delete_prefix("media/a1/") == 3
    assert await objects.stat("media/a1/v720/1.m4s") is None
    assert await objects.stat("media/a10/v720/1.m4s") is not None
    assert await objects.stat("masters/a1/source") is not None
    assert await objects.delete_prefix("media/a1/") == 0
    with pytest.raises(ValueError):
        await objects.delete_prefix("")


def _job_output(root: Path) -> Path:
    out = root / "out"
    for rendition, n in (("v720", 3), ("audio", 2)):
        (out / rendition).mkdir(parents=True)
        (out / rendition / "init.mp4").write_bytes(f"init {rendition}".encode())
        for i in range(1, n + 1):
            (out / rendition / f"{i}.m4s").write_bytes(f"{rendition} {i}".encode())
    return out


async def test_adopt_tree_moves_every_file_under_the_prefix(
        objects: ObjectStore, tmp_path: Path) -> None:
    out = _job_output(tmp_path)
    fractions: list[float] = []
    assert await objects.adopt_tree("media/a1", out, fractions.append) == 7
    assert not out.exists()
    assert await objects.get_bytes("media/a1/v720/init.mp4") == b"init v720"
    assert await objects.get_bytes("media/a1/v720/3.m4s") == b"v720 3"
    assert await objects.get_bytes("media/a1/audio/2.m4s") == b"audio 2"
    assert fractions and fractions[-1] == 1.0
    # Published objects answer stat like any other (the origin's ETag source).
    stat = await objects.stat("media/a1/audio/1.m4s")
    assert stat is not None and stat.size == len(b"audio 1")


async def test_adopt_tree_over_a_leftover_replaces_files(
        objects: ObjectStore, tmp_path: Path) -> None:
    """A killed job can leave files under the prefix: the new tree's files win."""
    await objects.put_bytes("media/a2/v720/1.m4s", b"stale")
    out = _job_output(tmp_path)
    assert await objects.adopt_tree("media/a2", out) == 7
    assert await objects.get_bytes("media/a2/v720/1.m4s") == b"v720 1"
    assert await objects.get_bytes("media/a2/audio/init.mp4") == b"init audio"
    assert not out.exists()


async def test_local_adopt_tree_refuses_bad_names_before_moving(tmp_path: Path) -> None:
    store = LocalObjects(tmp_path / "o")
    out = _job_output(tmp_path)
    (out / "v720" / ".hidden").write_bytes(b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        await store.adopt_tree("media/a3", out)
    assert (out / "v720" / "1.m4s").exists()  # nothing moved
    assert await store.stat("media/a3/v720/1.m4s") is None


async def test_local_path(objects: ObjectStore) -> None:
    await objects.put_bytes("media/a/v1/init.mp4", b"abc")
    path = objects.local_path("media/a/v1/init.mp4")
    if isinstance(objects, LocalObjects):
        assert path is not None and path.read_bytes() == b"abc"
    else:
        assert path is None


async def test_read_url_serves_ranges_of_the_object(objects: ObjectStore) -> None:
    data = bytes(range(256)) * 64
    await objects.put_bytes("masters/m/master", data)
    url = await objects.read_url("masters/m/master", 60)
    if isinstance(objects, LocalObjects):
        assert url is None  # local_path serves instead
        return
    assert url is not None and url.startswith("http")

    def get(target: str, rng: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(target, headers={"Range": rng} if rng else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, b""

    assert await asyncio.to_thread(get, url) == (200, data)
    assert await asyncio.to_thread(get, url, "bytes=1000-1999") == (206, data[1000:2000])
    missing = await objects.read_url("masters/none/master", 60)
    assert missing is not None
    assert (await asyncio.to_thread(get, missing))[0] in (403, 404)


async def test_ping(objects: ObjectStore) -> None:
    await objects.ping()


async def test_s3_ping_fails_for_a_missing_bucket(s3_endpoint: str) -> None:
    store = S3Objects("no-such-bucket-cdlc", endpoint_url=s3_endpoint)
    try:
        with pytest.raises(Exception):  # noqa: B017 - botocore ClientError (404)
            await store.ping()
    finally:
        await store.close()


async def test_open_objects_urls(tmp_path: Path, s3_endpoint: str) -> None:
    local = open_objects(f"file://{tmp_path}/objs", tmp_path)
    assert isinstance(local, LocalObjects) and local.root == (tmp_path / "objs").resolve()
    bucket = make_bucket(s3_endpoint)
    s3 = open_objects(f"s3://{bucket}/some/prefix?endpoint={s3_endpoint}", tmp_path)
    assert isinstance(s3, S3Objects) and s3.prefix == "some/prefix/"
    await s3.put_bytes("x", b"1")
    assert await s3.get_bytes("x") == b"1"
    await s3.close()
    with pytest.raises(ValueError):
        open_objects("ftp://x", tmp_path)


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/../b", ".hidden", "a/./b", "a\\b", ""])
def test_local_refuses_escaping_keys(tmp_path: Path, key: str) -> None:
    store = LocalObjects(tmp_path)
    with pytest.raises(ValueError):
        store.local_path(key)


async def test_local_writes_are_atomic(tmp_path: Path) -> None:
    """A reader racing overwrites sees one whole version or the other, and no temp
    files stay behind."""
    store = LocalObjects(tmp_path / "o")
    a, b = b"A" * (2 * MiB), b"B" * (2 * MiB)
    await store.put_bytes("k/v", a)
    path = store.local_path("k/v")
    assert path is not None
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes()[::65536])

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(20):
            await store.put_bytes("k/v", a if i % 2 else b)
    finally:
        stop.set()
        t.join()
    assert seen <= {a[::65536], b[::65536]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["v"]


async def test_local_adopt_file_moves(tmp_path: Path) -> None:
    store = LocalObjects(tmp_path / "o")
    src = tmp_path / "o" / "upload.part"
    src.write_bytes(b"master")
    await store.adopt_file("masters/a/source", src)
    assert not src.exists()
    assert await store.get_bytes("masters/a/source") == b"master"


class FsyncSpy:
    """Records what os.fsync is called on (the path behind each fd) and whether
    the call under test had returned by then."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: list[Path] = []
        self.after_return = False
        self.late: list[Path] = []
        real = os.fsync

        def spy(fd: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            (self.late if self.after_return else self.synced).append(path)
            real(fd)

        monkeypatch.setattr(os, "fsync", spy)


async def test_local_adopt_tree_is_durable_before_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file and every directory of the published tree, and the directory
    that gained its name, are fsynced before adopt_tree returns (the publish that
    follows commits metadata naming only durable bytes)."""
    store = LocalObjects(tmp_path / "o")
    out = _job_output(tmp_path)
    spy = FsyncSpy(monkeypatch)
    assert await store.adopt_tree("media/a1", out) == 7
    spy.after_return = True
    root = store.root / "media" / "a1"
    files = {p for p in root.rglob("*") if p.is_file()}
    dirs = {root, root / "v720", root / "audio", root.parent}
    # Synced under their old names (before the rename): compare by relative path.
    synced = {str(p).replace(str(out), str(root)) for p in spy.synced}
    assert {str(f) for f in files} <= synced, sorted(synced)
    assert {str(d) for d in dirs} <= synced, sorted(synced)
    # The tree's new parent was synced after the rename, and nothing after return.
    assert root.parent in spy.synced and not spy.late
    # And what the fsyncs named is what is published.
    assert await store.get_bytes("media/a1/v720/3.m4s") == b"v720 3"


async def test_local_writes_sync_file_and_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalObjects(tmp_path / "o")
    spy = FsyncSpy(monkeypatch)
    await store.put_bytes("new/dirs/k", b"v")
    src = tmp_path / "upload.part"
    src.write_bytes(b"master")
    await store.adopt_file("masters/a/source", src)
    spy.after_return = True
    root = store.root
    assert {root / "new", root / "new" / "dirs", root} <= set(spy.synced)  # new dirs' parents
    assert root / "masters" / "a" in spy.synced and tmp_path in spy.synced  # both ends
    # The adopted file's bytes were synced (under its old name, before the rename).
    assert src in spy.synced
    assert any(p.name.startswith(".cdlc-tmp-k.") for p in spy.synced)  # the temp file
    assert not spy.late
