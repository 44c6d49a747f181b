"""A small real CMAF asset for the edge and player tests, made without our own
pipeline: the ffmpeg CLI cuts each rendition into fMP4 segments (``-f hls
-hls_segment_type fmp4``), this module reads the boxes back to fill the metadata
rows (timescale, codec string, tfdt, durations), copies the files into the local
object store's layout (metadata.models.media_key) and publishes the rows through
the metadata store, exactly as an ingest would leave them.

``cdlc_ingest`` runs the real pipeline instead (``cdlc ingest --json``); the e2e
suite uses it by default (tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metadata import open_store
from metadata.models import Asset, Rendition, Segment, media_key

FPS = 25
SEGMENT_SECONDS = 2


@dataclass(frozen=True)
class Rung:
    height: int
    width: int
    kbps: int


DEFAULT_LADDER = (Rung(360, 640, 700), Rung(240, 426, 300), Rung(144, 256, 120))


@dataclass
class BuiltAsset:
    asset_id: str
    duration: float
    renditions: dict[str, int] = field(default_factory=dict)  # id -> segment count
    source: str = "ffmpeg"  # "ffmpeg" (this module) or "cdlc ingest"


# -- ISO-BMFF reading (ISO/IEC 14496-12) ------------------------------------------------

def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, payload start, box end) of each box in data[start:end]; §4.2."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"bad box size {size} at {pos}")
        yield kind.decode("latin-1"), pos + header, pos + size
        pos += size


def find(data: bytes, path: Sequence[str], start: int = 0, end: int | None = None
         ) -> list[tuple[int, int]]:
    """Payload ranges of every box at `path` (a list of nested types)."""
    out: list[tuple[int, int]] = []
    for kind, p0, p1 in boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                out.append((p0, p1))
            else:
                out += find(data, path[1:], p0, p1)
    return out


def _full(data: bytes, pos: int) -> tuple[int, int]:
    """(version, flags) of a FullBox at pos."""
    v = data[pos]
    return v, int.from_bytes(data[pos + 1:pos + 4], "big")


@dataclass
class InitInfo:
    timescale: int
    codec_string: str
    codec: str
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0
    trex_duration: int = 0


def read_init(data: bytes) -> InitInfo:
    (mdhd, _), = find(data, ["moov", "trak", "mdia", "mdhd"])
    version, _ = _full(data, mdhd)
    timescale = struct.unpack_from(">I", data, mdhd + (20 if version == 1 else 12))[0]
    (stsd, stsd_end), = find(data, ["moov", "trak", "mdia", "minf", "stbl", "stsd"])
    entries = stsd + 8  # FullBox header + entry_count (§8.5.2)
    kind, p0, p1 = next(boxes(data, entries, stsd_end))
    trex = find(data, ["moov", "mvex", "trex"])
    trex_duration = struct.unpack_from(">I", data, trex[0][0] + 12)[0] if trex else 0
    if kind in ("avc1", "avc3"):
        width, height = struct.unpack_from(">HH", data, p0 + 24)  # VisualSampleEntry
        (avcc, _), = find(data, ["avcC"], p0 + 78, p1)
        profile, compat, level = data[avcc + 1], data[avcc + 2], data[avcc + 3]
        return InitInfo(timescale, f"{kind}.{profile:02x}{compat:02x}{level:02x}", "h264",
                        width=width, height=height, trex_duration=trex_duration)
    if kind == "mp4a":
        channels = struct.unpack_from(">H", data, p0 + 16)[0]
        sample_rate = struct.unpack_from(">I", data, p0 + 24)[0] >> 16
        (esds, esds_end), = find(data, ["esds"], p0 + 28, p1)
        oti, aot = _esds(data[esds + 4:esds_end])
        return InitInfo(timescale, f"mp4a.{oti:02x}.{aot}", "aac", sample_rate=sample_rate,
                        channels=channels, trex_duration=trex_duration)
    raise ValueError(f"unsupported sample entry {kind}")


def _descriptor(raw: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the descriptor at pos (ISO/IEC 14496-1
    §8.3.3: the size is 7 bits a byte, high bit = more bytes follow)."""
    tag, pos, size = raw[pos], pos + 1, 0
    while True:
        b = raw[pos]
        pos += 1
        size = (size << 7) | (b & 0x7F)
        if not b & 0x80:
            return tag, pos, pos + size


def _esds(raw: bytes) -> tuple[int, int]:
    """(objectTypeIndication, audio object type) from an esds payload: ES_Descriptor
    (tag 3) > DecoderConfigDescriptor (4) > DecoderSpecificInfo (5), whose first 5
    bits are the audio object type (ISO/IEC 14496-3 §1.6.2.1)."""
    tag, pos, end = _descriptor(raw, 0)
    if tag != 3:
        raise ValueError("esds without ES_Descriptor")
    flags = raw[pos + 2]
    pos += 3 + (2 if flags & 0x80 else 0) + (2 if flags & 0x20 else 0)
    if flags & 0x40:
        pos += 1 + raw[pos]
    while pos < end:
        tag, c0, c1 = _descriptor(raw, pos)
        if tag == 4:
            oti = raw[c0]
            t5, d0, _ = _descriptor(raw, c0 + 13)
            if t5 != 5:
                raise ValueError("DecoderConfigDescriptor without DecoderSpecificInfo")
            return oti, raw[d0] >> 3
        pos = c1
    raise ValueError("esds without DecoderConfigDescriptor")


def read_fragment(data: bytes, trex_duration: int) -> tuple[int, int]:
    """(tfdt baseMediaDecodeTime, summed sample durations) of a media segment."""
    start: int | None = None
    total = 0
    for traf, traf_end in find(data, ["moof", "traf"]):
        default = trex_duration
        for kind, p0, _ in boxes(data, traf, traf_end):
            if kind == "tfhd":
                _, flags = _full(data, p0)
                off = p0 + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
                if flags & 0x8:
                    default = struct.unpack_from(">I", data, off)[0]
            elif kind == "tfdt" and start is None:
                version, _ = _full(data, p0)
                start = (struct.unpack_from(">Q", data, p0 + 4)[0] if version == 1
                         else struct.unpack_from(">I", data, p0 + 4)[0])
            elif kind == "trun":
                _, flags = _full(data, p0)
                count = struct.unpack_from(">I", data, p0 + 4)[0]
                pos = p0 + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
                per = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
                for _ in range(count):
                    total += struct.unpack_from(">I", data, pos)[0] if flags & 0x100 else default
                    pos += per
    if start is None:
        raise ValueError("segment without tfdt")
    return start, total


# -- building ----------------------------------------------------------------------------

def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args], check=True)


def _hls_fmp4(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    return ["-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
            "-start_number", "1", "-hls_segment_filename", str(out / "%d.m4s"),
            str(out / "media.m3u8")]


def encode_renditions(work: Path, seconds: int, ladder: Sequence[Rung]) -> dict[str, Path]:
    """rendition id -> folder with init.mp4 and 1..N.m4s. Each rung draws its height
    on the picture (so a screenshot shows which one plays) with fixed 2 s GOPs: the
    renditions are GOP-aligned, so players may switch at any segment boundary."""
    out: dict[str, Path] = {}
    procs = []
    for rung in ladder:
        rid = f"v{rung.height}"
        d = work / rid
        src = (f"testsrc2=size={rung.width}x{rung.height}:rate={FPS}:duration={seconds},"
               f"drawtext=text='{rid}':fontsize={rung.height // 5}:fontcolor=white"
               f":box=1:boxcolor=black:x=(w-tw)/2:y=(h-th)/2")
        args = ["-f", "lavfi", "-i", src, "-c:v", "libx264", "-preset", "veryfast",
                "-profile:v", "main", "-pix_fmt", "yuv420p",
                "-g", str(FPS * SEGMENT_SECONDS), "-keyint_min", str(FPS * SEGMENT_SECONDS),
                "-sc_threshold", "0", "-b:v", f"{rung.kbps}k", "-maxrate", f"{rung.kbps}k",
                "-bufsize", f"{rung.kbps * 2}k", "-an", *_hls_fmp4(d)]
        procs.append(subprocess.Popen(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args]))
        out[rid] = d
    d = work / "audio"
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:a", "aac", "-b:a", "64k", "-ac", "2", "-vn", *_hls_fmp4(d))
    out["audio"] = d
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"ffmpeg failed ({p.returncode}) for {p.args!r}")
    return out


def describe(asset_id: str, rid: str, folder: Path, kbps: int
             ) -> tuple[Rendition, list[Segment], list[Path]]:
    info = read_init((folder / "init.mp4").read_bytes())
    files = sorted(folder.glob("*.m4s"), key=lambda p: int(p.stem))
    segments: list[Segment] = []
    for n, f in enumerate(files, start=1):
        if int(f.stem) != n:
            raise ValueError(f"segments of {folder} are not numbered 1..N")
        start, duration = read_fragment(f.read_bytes(), info.trex_duration)
        segments.append(Segment(asset_id, rid, n, start, duration, f.stat().st_size))
    rates = [s.size * 8 * info.timescale / s.duration for s in segments if s.duration]
    total = sum(s.duration for s in segments)
    avg = int(sum(s.size for s in segments) * 8 * info.timescale / total) if total else 0
    video = info.codec == "h264"
    rendition = Rendition(
        asset_id=asset_id, id=rid, kind="video" if video else "audio", codec=info.codec,
        codec_string=info.codec_string, timescale=info.timescale, bitrate=kbps * 1000,
        avg_bitrate=avg, peak_bitrate=int(max(rates, default=0)), width=info.width,
        height=info.height, frame_rate=str(FPS) if video else "",
        sample_rate=info.sample_rate, channels=info.channels,
    )
    return rendition, segments, [folder / "init.mp4", *files]


async def publish(data_dir: Path, asset_id: str, work: Path, ladder: Sequence[Rung]
                  ) -> BuiltAsset:
    """Copy the renditions under data_dir/objects and publish their rows in the
    SQLite store at data_dir (the embedded defaults)."""
    kbps = {f"v{r.height}": r.kbps for r in ladder} | {"audio": 64}
    renditions: list[Rendition] = []
    segments: list[Segment] = []
    built = BuiltAsset(asset_id, 0.0)
    objects = data_dir / "objects"
    for rid in [*(f"v{r.height}" for r in ladder), "audio"]:
        rendition, segs, files = describe(asset_id, rid, work / rid, kbps[rid])
        for f in files:
            dest = objects / media_key(asset_id, rid, f.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        renditions.append(rendition)
        segments += segs
        built.renditions[rid] = len(segs)
        if rendition.kind == "video":
            built.duration = sum(s.duration for s in segs) / rendition.timescale
    store = open_store("", data_dir)
    try:
        asset = Asset(id=asset_id, duration=built.duration, source_name="ffmpeg-testsrc2")
        await store.put_asset(asset)
        await store.publish(asset, renditions, segments)
    finally:
        await store.close()
    return built


def make_asset(data_dir: Path, asset_id: str, *, seconds: int = 12,
               ladder: Sequence[Rung] = DEFAULT_LADDER) -> BuiltAsset:
    """The ffmpeg-made asset, published in data_dir."""
    work = data_dir / "work" / f"fixture-{asset_id}"
    encode_renditions(work, seconds, ladder)
    built = asyncio.run(publish(data_dir, asset_id, work, ladder))
    shutil.rmtree(work, ignore_errors=True)
    return built


async def aclone_asset(data_dir: Path, src: str, dst: str, *, link: bool = False
                       ) -> BuiltAsset:
    import dataclasses

    store = open_store("", data_dir)
    try:
        asset = await store.get_asset(src)
        if asset is None:
            raise LookupError(f"no asset {src} in {data_dir}")
        renditions = await store.get_renditions(src)
        segments: list[Segment] = []
        built = BuiltAsset(dst, asset.duration)
        for r in renditions:
            segs = await store.get_segments(src, r.id)
            built.renditions[r.id] = len(segs)
            segments += [dataclasses.replace(s, asset_id=dst) for s in segs]
        objects = data_dir / "objects"
        # Hard links: the same bytes under another key, no extra disk.
        shutil.copytree(objects / "media" / src, objects / "media" / dst, dirs_exist_ok=True,
                        copy_function=os.link if link else shutil.copy2)
        copy = dataclasses.replace(asset, id=dst, version=0)
        await store.put_asset(copy)
        await store.publish(copy, [dataclasses.replace(r, asset_id=dst) for r in renditions],
                            segments)
        return built
    finally:
        await store.close()


def clone_asset(data_dir: Path, src: str, dst: str, *, link: bool = False) -> BuiltAsset:
    """Publish a copy of asset `src` (files and rows) as `dst`: many assets for the
    price of one encode (benchmarks, takedown tests)."""
    return asyncio.run(aclone_asset(data_dir, src, dst, link=link))


def cdlc_ingest(data_dir: Path, asset_id: str, master: Path, ladder: Sequence[Rung]
                ) -> BuiltAsset | None:
    """The real pipeline (`cdlc ingest --json`), or None when it does not work yet."""
    cdlc = Path(sys.executable).parent / "cdlc"
    spec = ",".join(f"{r.height}:{r.kbps}" for r in ladder)
    env = {**os.environ, "CDLC_DATA_DIR": str(data_dir), "CDLC_GOP_SECONDS": "2",
           "CDLC_ENCODER": "cpu"}
    try:
        proc = subprocess.run(
            [str(cdlc), "ingest", str(master), "--id", asset_id, "--ladder", spec,
             "--segment-seconds", str(SEGMENT_SECONDS), "--preset", "veryfast", "--json"],
            capture_output=True, text=True, env=env, timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        print(f"cdlc ingest failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return None
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return BuiltAsset(
        asset_id, float(summary["duration"]),
        {r["id"]: int(r["segments"]) for r in summary["renditions"]}, source="cdlc ingest",
    )
