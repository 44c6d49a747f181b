"""Every MetadataStore passes these: SQLite (a real file) always, ScyllaDB when
CDLC_TEST_SCYLLA names a cluster (scylla://h1,h2[:port]/keyspace)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from metadata import open_store
from metadata import store as store_module
from metadata.models import Asset, JobState, Rendition, Segment
from metadata.sqlite_store import SQLiteStore
from metadata.store import MetadataStore, asset_pages

SCYLLA = os.environ.get("CDLC_TEST_SCYLLA", "")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("scylla", marks=[
            pytest.mark.scylla,
            pytest.mark.skipif(not SCYLLA, reason="CDLC_TEST_SCYLLA names no ScyllaDB cluster"),
        ]),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    s = open_store("" if request.param == "sqlite" else SCYLLA, tmp_path)
    yield s
    await s.close()


def uid(prefix: str = "a") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def rendition(asset_id: str, rid: str, kind: str = "video", height: int = 720) -> Rendition:
    return Rendition(
        asset_id=asset_id, id=rid, kind=kind, codec="h264" if kind == "video" else "aac",
        codec_string="avc1.64001f" if kind == "video" else "mp4a.40.2",
        timescale=90000 if kind == "video" else 48000, bitrate=3_000_000,
        avg_bitrate=2_900_000, peak_bitrate=3_500_000, width=height * 16 // 9, height=height,
        frame_rate="30000/1001", sample_rate=48000 if kind == "audio" else 0,
        channels=2 if kind == "audio" else 0, language="en",
    )


def segments(asset_id: str, rid: str, n: int, marker: int = 0) -> list[Segment]:
    return [
        Segment(asset_id, rid, i, (i - 1) * 360_000, 360_000, 1000 * i + marker, 100 + marker)
        for i in range(1, n + 1)
    ]


async def test_put_get_round_trip(store: MetadataStore) -> None:
    a = Asset(id=uid(), state=JobState.TRANSCODING, progress=0.25, source_name="m.mov",
              duration=0.0, created_at=1000.5, updated_at=1001.5)
    await store.put_asset(a)
    got = await store.get_asset(a.id)
    assert got == a
    assert await store.get_asset(uid()) is None


async def test_list_is_ordered_and_paged(store: MetadataStore) -> None:
    prefix = uid("L")
    ids = [f"{prefix}-{i:02d}" for i in range(7)]
    for i in reversed(ids):
        await store.put_asset(Asset(id=i))
    first = await store.list_assets(limit=3, after=prefix)
    assert [a.id for a in first] == ids[:3]
    rest = await store.list_assets(limit=50, after=first[-1].id)
    assert [a.id for a in rest if a.id.startswith(prefix)] == ids[3:]
    assert await store.list_assets(limit=0) == []


async def test_asset_pages_walk_every_asset_once(store: MetadataStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PAGE", 3)
    prefix = uid("P")
    ids = [f"{prefix}-{i:02d}" for i in range(7)]
    for i in reversed(ids):
        await store.put_asset(Asset(id=i))

    async def walk(most: int | None = None) -> list[list[str]]:
        return [[a.id for a in page if a.id.startswith(prefix)]
                async for page in asset_pages(store, after=prefix, most=most)]

    pages = await walk()
    assert [i for p in pages for i in p] == ids  # in order, none twice, none left out
    assert all(len(p) <= 3 for p in pages)
    assert await walk(most=5) == [ids[:3], ids[3:5]]  # exactly the first five
    assert await walk(most=6) == [ids[:3], ids[3:6]]
    assert await walk(most=0) == []


async def test_set_state(store: MetadataStore) -> None:
    a = Asset(id=uid())
    await store.put_asset(a)
    await store.set_state(a.id, JobState.TRANSCODING, progress=0.5)
    got = await store.get_asset(a.id)
    assert got is not None and got.state == JobState.TRANSCODING and got.progress == 0.5
    await store.set_state(a.id, JobState.PACKAGING)  # progress kept
    got = await store.get_asset(a.id)
    assert got is not None and got.progress == 0.5 and got.updated_at >= a.updated_at
    await store.set_state(a.id, JobState.FAILED, error="corrupt master")
    got = await store.get_asset(a.id)
    assert got is not None and got.state == JobState.FAILED and got.error == "corrupt master"
    await store.set_state(a.id, JobState.QUEUED, progress=0.0)  # a retry clears the reason
    got = await store.get_asset(a.id)
    assert got is not None and got.error is None
    with pytest.raises(KeyError):
        await store.set_state(uid(), JobState.PROBING)


async def test_publish_replaces_index_and_bumps_version(store: MetadataStore) -> None:
    a = Asset(id=uid(), state=JobState.PUBLISHING, duration=12.0, source_name="s.mp4")
    await store.put_asset(a)
    rends = [rendition(a.id, "v1080", height=1080), rendition(a.id, "v360", height=360),
             rendition(a.id, "audio", "audio")]
    segs = [s for r in rends for s in segments(a.id, r.id, 5)]
    await store.publish(a, rends, segs[::-1])  # order of the input does not matter
    assert a.version == 1 and a.state == JobState.READY
    got = await store.get_asset(a.id)
    assert got is not None and got.state == JobState.READY and got.version == 1
    assert got.progress == 1.0 and got.duration == 12.0 and got.source_name == "s.mp4"
    assert await store.get_renditions(a.id) == rends  # publish order kept
    assert await store.get_segments(a.id, "v360") == segments(a.id, "v360", 5)
    assert await store.get_segments(a.id, "nope") == []

    # Republish with another ladder: the old index is gone entirely.
    rends2 = [rendition(a.id, "v720"), rendition(a.id, "audio", "audio")]
    await store.publish(a, rends2, [s for r in rends2 for s in segments(a.id, r.id, 3, 7)])
    got = await store.get_asset(a.id)
    assert got is not None and got.version == 2 and a.version == 2
    assert [r.id for r in await store.get_renditions(a.id)] == ["v720", "audio"]
    assert await store.get_segments(a.id, "v1080") == []
    assert await store.get_segments(a.id, "audio") == segments(a.id, "audio", 3, 7)


async def test_every_rendition_field_round_trips(store: MetadataStore) -> None:
    """Catalogue fields and the storyboard's grid come back as written."""
    a = Asset(id=uid())
    board = Rendition(asset_id=a.id, id="storyboard", kind="image", codec="jpeg",
                      codec_string="jpeg", timescale=1000, bitrate=20_000, avg_bitrate=19_000,
                      peak_bitrate=24_000, width=800, height=450, frame_rate="1/2",
                      tiles="5x5")
    dub = Rendition(asset_id=a.id, id="audio_fra", kind="audio", codec="aac",
                    codec_string="mp4a.40.2", timescale=48000, bitrate=128_000,
                    sample_rate=48000, channels=6, language="fra", name="Français",
                    default=True, presentation_offset=1024, encryption="cbcs",
                    key_id="0123456789abcdef0123456789abcdef")
    subs = Rendition(asset_id=a.id, id="sub_eng", kind="text", codec="webvtt",
                     codec_string="wvtt", timescale=1000, bitrate=100, language="eng",
                     forced=True, characteristics="public.accessibility.transcribes-spoken-dialog")
    rends = [rendition(a.id, "v240", height=240), dub, subs, board]
    await store.publish(a, rends, [s for r in rends for s in segments(a.id, r.id, 2)])
    assert await store.get_renditions(a.id) == rends


async def test_publish_without_put_asset(store: MetadataStore) -> None:
    a = Asset(id=uid())
    await store.publish(a, [rendition(a.id, "v240")], segments(a.id, "v240", 2))
    got = await store.get_asset(a.id)
    assert got is not None and got.state == JobState.READY and got.version == 1


async def test_publish_refuses_foreign_segments_and_keeps_the_old_index(
    store: MetadataStore,
) -> None:
    a = Asset(id=uid())
    await store.publish(a, [rendition(a.id, "v240")], segments(a.id, "v240", 2))
    with pytest.raises(ValueError):
        await store.publish(a, [rendition(a.id, "v240")], segments(a.id, "v999", 2))
    got = await store.get_asset(a.id)
    assert got is not None and got.version == 1
    assert len(await store.get_segments(a.id, "v240")) == 2


async def test_delete(store: MetadataStore) -> None:
    a = Asset(id=uid())
    await store.publish(a, [rendition(a.id, "v240")], segments(a.id, "v240", 2))
    assert await store.delete_asset(a.id) is True
    assert await store.get_asset(a.id) is None
    assert await store.get_renditions(a.id) == []
    assert await store.get_segments(a.id, "v240") == []
    assert await store.delete_asset(a.id) is False


async def test_ping(store: MetadataStore) -> None:
    await store.ping()


def test_open_store_urls(tmp_path: Path) -> None:
    default = open_store("", tmp_path)
    assert isinstance(default, SQLiteStore) and default.path == tmp_path / "metadata.db"
    explicit = open_store(f"sqlite://{tmp_path}/x/other.db", tmp_path)
    assert isinstance(explicit, SQLiteStore) and explicit.path == tmp_path / "x" / "other.db"
    with pytest.raises(ValueError):
        open_store("postgres://x", tmp_path)
    with pytest.raises(ValueError):
        open_store("sqlite://relative.db", tmp_path)


# -- several processes on one SQLite file ----------------------------------------------

def _publisher(path: str, asset_id: str, rounds: int, tag: str) -> None:
    async def go() -> None:
        store = SQLiteStore(Path(path))
        a = Asset(id=asset_id)
        for i in range(1, rounds + 1):
            # Version i has i+1 segments, each marked with i: a reader can tell a mix.
            await store.publish(a, [rendition(asset_id, "v1")], segments(asset_id, "v1", i + 1, i))
            await store.put_asset(Asset(id=f"{asset_id}-{tag}{i:03d}"))
            await asyncio.sleep(0.005)  # spread the publishes over the reader's loop
        await store.close()

    asyncio.run(go())


async def test_processes_share_the_file_and_readers_never_see_half_an_index(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    asset_id = uid()
    reader = SQLiteStore(path)
    await reader.publish(Asset(id=asset_id), [rendition(asset_id, "v1")],
                         segments(asset_id, "v1", 1, 0))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_publisher, args=(str(path), asset_id, 40, tag))
             for tag in "xy"]
    for p in procs:
        p.start()
    checks, seen = 0, set()
    try:
        while any(p.is_alive() for p in procs) or checks == 0:
            segs = await reader.get_segments(asset_id, "v1")
            markers = {s.iframe_size - 100 for s in segs}
            assert len(markers) == 1, markers  # one version's rows, never a mix
            (marker,) = markers
            assert len(segs) == marker + 1
            seen.add(marker)
            checks += 1
            await asyncio.sleep(0)
    finally:
        for p in procs:
            p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(seen) >= 2, seen  # the reads really ran while the index was changing
    got = await reader.get_asset(asset_id)
    assert got is not None and got.version == 81  # 1 + 2 x 40 publishes, none lost
    assert len(await reader.list_assets(limit=1000, after=asset_id)) == 80
    await reader.close()


def test_scylla_url_parsing() -> None:
    from metadata.scylla_store import ScyllaStore, parse_url

    assert parse_url("scylla://h1,h2/ks") == (["h1", "h2"], 9042, "ks")
    assert parse_url("scylla://10.0.0.1,10.0.0.2:19042/cdlc_prod") == (
        ["10.0.0.1", "10.0.0.2"], 19042, "cdlc_prod")
    assert parse_url("scylla://h1") == (["h1"], 9042, "cdlc")
    for bad in ["scylla:///ks", "scylla://h1/bad-keyspace;drop", "cassandra://h1/ks"]:
        with pytest.raises(ValueError):
            parse_url(bad)
    s = open_store("scylla://db1,db2:9043/media", Path("/nonexistent"))
    assert isinstance(s, ScyllaStore) and s.hosts == ["db1", "db2"] and s.port == 9043
