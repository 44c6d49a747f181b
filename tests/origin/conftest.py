"""Fixtures for the origin: real CMAF media made by the ffmpeg CLI, published as a
fake asset (objects + rows written directly through the stores), and origin apps
over the local directory or a real S3 server (moto), SQLite, LRU or Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from engine.application import Engine
from engine.config import Settings
from engine.pipeline import Services
from metadata import open_cache, open_objects, open_store
from metadata.cache import Cache
from metadata.jobs import Job, JobRequest
from metadata.models import Asset, Rendition, Segment, media_key
from metadata.objects import ObjectStore
from metadata.s3_objects import S3Objects
from metadata.store import MetadataStore
from origin.app import OriginDeps, create_app
from tests.media import ffmpeg
from tests.metadata.servers import make_bucket, redis_url, s3_endpoint

__all__ = ["redis_url", "s3_endpoint"]


@dataclass
class Media:
    """One short clip cut into CMAF renditions: dir/<rendition>/{init.mp4,N.m4s}."""

    root: Path
    renditions: list[Rendition] = field(default_factory=list)
    segments: dict[str, list[Segment]] = field(default_factory=dict)

    def file(self, rendition: str, name: str) -> bytes:
        return (self.root / rendition / name).read_bytes()


def _cut(out: Path, kind: str, seconds: float) -> None:
    out.mkdir(parents=True)
    if kind == "video":
        src = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
               "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
               "-an"]
    else:
        src = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
               "-c:a", "aac", "-b:a", "64k", "-vn"]
    ffmpeg(*src, "-f", "hls", "-hls_time", "1", "-hls_segment_type", "fmp4",
           "-hls_fmp4_init_filename", "init.mp4", "-hls_playlist_type", "vod",
           "-start_number", "1", "-hls_segment_filename", str(out / "%d.m4s"),
           str(out / "ffmpeg.m3u8"))


def _timescale(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    num, den = json.loads(out)["streams"][0]["time_base"].split("/")
    return int(den) // int(num)


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, box start, box end) of the ISO-BMFF boxes in data[start:end]."""
    out, pos = [], start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append((data[pos + 4 : pos + 8], pos, pos + size))
        pos += size
    return out


def _iframe_size(path: Path) -> int:
    """Bytes from 0 to the end of the first sample (a sync sample in our GOP-aligned
    cuts): moof start + trun data_offset + first sample size (ISO/IEC 14496-12
    §8.8.8)."""
    data = path.read_bytes()
    for kind, moof, moof_end in _boxes(data, 0, len(data)):
        if kind != b"moof":
            continue
        for t, traf, traf_end in _boxes(data, moof + 8, moof_end):
            if t != b"traf":
                continue
            for t2, b, _ in _boxes(data, traf + 8, traf_end):
                if t2 != b"trun":
                    continue
                flags = int.from_bytes(data[b + 9 : b + 12], "big")
                pos = b + 16
                offset = int.from_bytes(data[pos : pos + 4], "big", signed=True)
                pos += 4 if flags & 0x1 else 0
                pos += 4 if flags & 0x4 else 0
                pos += 4 if flags & 0x100 else 0
                assert flags & 0x1 and flags & 0x200, "trun without offset or sizes"
                return moof + offset + int.from_bytes(data[pos : pos + 4], "big")
    raise AssertionError(f"no moof/traf/trun in {path}")


def _durations(playlist: Path) -> list[float]:
    return [float(line[8:].split(",")[0]) for line in playlist.read_text().splitlines()
            if line.startswith("#EXTINF:")]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    root = tmp_path_factory.mktemp("cmaf")
    m = Media(root)
    for rid, kind in (("v240", "video"), ("audio", "audio")):
        _cut(root / rid, kind, 3.0)
        ts = _timescale(root / rid / "init.mp4")
        rend = Rendition(
            asset_id="", id=rid, kind=kind, codec="h264" if kind == "video" else "aac",
            codec_string="avc1.42c00d" if kind == "video" else "mp4a.40.2", timescale=ts,
            bitrate=300_000 if kind == "video" else 64_000, width=320 if kind == "video" else 0,
            height=240 if kind == "video" else 0, frame_rate="25" if kind == "video" else "",
            sample_rate=48000 if kind == "audio" else 0, channels=1 if kind == "audio" else 0,
        )
        m.renditions.append(rend)
        segs, start = [], 0
        for i, d in enumerate(_durations(root / rid / "ffmpeg.m3u8"), start=1):
            seg = root / rid / f"{i}.m4s"
            iframe = _iframe_size(seg) if kind == "video" else 0
            segs.append(Segment("", rid, i, start, round(d * ts), seg.stat().st_size, iframe))
            start += round(d * ts)
        m.segments[rid] = segs
    assert all(len(s) >= 3 for s in m.segments.values())
    return m


async def publish_fake(
    store: MetadataStore, objects: ObjectStore, asset_id: str, media: Media
) -> Asset:
    """Upload the clip's files under media_key() and publish its index."""
    rends, segs = [], []
    for r in media.renditions:
        rends.append(Rendition(**{**r.__dict__, "asset_id": asset_id}))
        await objects.put_file(media_key(asset_id, r.id, "init.mp4"),
                               media.root / r.id / "init.mp4")
        for s in media.segments[r.id]:
            await objects.put_file(media_key(asset_id, r.id, f"{s.number}.m4s"),
                                   media.root / r.id / f"{s.number}.m4s")
            segs.append(Segment(asset_id, r.id, s.number, s.start, s.duration, s.size,
                                s.iframe_size))
    asset = Asset(id=asset_id, duration=3.0, source_name="test.mp4")
    await store.put_asset(asset)
    await store.publish(asset, rends, segs)
    return asset


class HeldJobs:
    """A scheduler that keeps what it is given: the admin tests look at the jobs the
    real application layer recorded and queued, without running a transcode."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.jobs: list[Job] = []
        self.masters: list[bytes] = []
        # Set: enqueue() holds each job until it is set (a slow queue, for races).
        self.gate: asyncio.Event | None = None

    async def route(self, request: JobRequest) -> str:
        return ""

    async def enqueue(self, job: Job) -> None:
        # What a worker would do first: read the master the job names.
        self.jobs.append(job)
        self.masters.append(await self.objects.get_bytes(job.master))
        if self.gate is not None:
            await self.gate.wait()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class Origin:
    client: TestClient[Any, Any]
    deps: OriginDeps
    store: MetadataStore
    objects: ObjectStore
    cache: Cache
    held: HeldJobs


MakeOrigin = Callable[..., Awaitable[Origin]]


@pytest.fixture
async def make_origin(
    aiohttp_client: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[MakeOrigin]:
    """make_origin(storage="local"|"s3", cache="lru"|"redis"|URL, objects=an ObjectStore,
    store_dir=where the SQLite store lives, **OriginDeps fields)."""

    async def make(storage: str = "local", cache: str = "lru",
                   objects: ObjectStore | None = None, store_dir: Path | None = None,
                   **kw: Any) -> Origin:
        store = open_store("", store_dir or tmp_path)
        if objects is not None:  # the test's own (an S3 it kills)
            pass
        elif storage == "s3":
            endpoint = request.getfixturevalue("s3_endpoint")
            objects = S3Objects(make_bucket(endpoint), "cdlc", endpoint_url=endpoint)
        else:
            objects = open_objects("", tmp_path)
        if cache == "redis":
            cache = request.getfixturevalue("redis_url")
        c = open_cache("" if cache == "lru" else cache)  # or any cache URL
        kw.setdefault("close_backends", True)
        held = HeldJobs(objects)
        if "application" not in kw:
            services = Services(store=store, objects=objects, cache=c,
                                work_dir=tmp_path / "work")
            kw["application"] = Engine(Settings(data_dir=tmp_path), services, held)
        deps = OriginDeps(store=store, objects=objects, cache=c, **kw)
        client = await aiohttp_client(create_app(deps))
        return Origin(client, deps, store, objects, c, held)

    yield make
