"""A tiny ISO-BMFF reader for tests: box tree plus the fields of the boxes our CMAF
writer emits (ISO/IEC 14496-12). Independent of the C++ writer, so a test that reads
a box back compares two implementations of the spec.

Every parser raises ValueError on malformed input (the fuzz target checks that).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_SAMPLES_WITHOUT_FIELDS = 1 << 16
CONTAINERS = {"moov", "trak", "mdia", "minf", "stbl", "dinf", "mvex", "moof", "traf", "edts"}


@dataclass
class Box:
    type: str
    offset: int          # of the box header in the parsed buffer
    size: int
    payload: bytes
    children: list[Box] = field(default_factory=list)

    def find(self, path: str) -> Box:
        """First descendant along a '/'-separated path of types."""
        node: Box = self
        for part in path.split("/"):
            node = next((c for c in node.children if c.type == part), None)  # type: ignore[assignment]
            if node is None:
                raise KeyError(path)
        return node


def parse(data: bytes, offset: int = 0, end: int | None = None) -> list[Box]:
    """Boxes of data[offset:end]; containers are parsed recursively."""
    end = len(data) if end is None else end
    boxes: list[Box] = []
    pos = offset
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"truncated box header at {pos}")
        size, raw_type = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise ValueError(f"truncated largesize at {pos}")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box size {size} at {pos} out of bounds")
        btype = raw_type.decode("latin-1")
        box = Box(btype, pos, size, bytes(data[pos + header : pos + size]))
        if btype in CONTAINERS:
            box.children = parse(data, pos + header, pos + size)
        elif btype == "stsd":
            if len(box.payload) < 8:
                raise ValueError("truncated stsd")
            box.children = parse(data, pos + header + 8, pos + size)
        boxes.append(box)
        pos += size
    return boxes


def root(data: bytes) -> Box:
    return Box("", 0, len(data), data, parse(data))


def full_header(box: Box) -> tuple[int, int]:
    if len(box.payload) < 4:
        raise ValueError(f"truncated full box {box.type}")
    v = box.payload[0]
    return v, int.from_bytes(box.payload[1:4], "big")


def _unpack(fmt: str, buf: bytes, off: int) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, buf, off)
    except struct.error as e:
        raise ValueError(str(e)) from e


@dataclass
class TrunSample:
    duration: int
    size: int
    flags: int
    composition_offset: int


@dataclass
class Trun:
    version: int
    flags: int
    data_offset: int
    samples: list[TrunSample]


def tfdt(box: Box) -> int:
    version, _ = full_header(box)
    return _unpack(">Q" if version == 1 else ">I", box.payload, 4)[0]


def tfhd_default_flags(box: Box) -> int | None:
    _, flags = full_header(box)
    off = 8
    if flags & 0x1:
        off += 8
    if flags & 0x2:
        off += 4
    if flags & 0x8:
        off += 4
    if flags & 0x10:
        off += 4
    if flags & 0x20:
        return _unpack(">I", box.payload, off)[0]
    return None


def trun(box: Box, default_flags: int = 0) -> Trun:
    version, flags = full_header(box)
    (count,) = _unpack(">I", box.payload, 4)
    off = 8
    data_offset = 0
    if flags & 0x1:
        (data_offset,) = _unpack(">i", box.payload, off)
        off += 4
    first_flags = None
    if flags & 0x4:
        (first_flags,) = _unpack(">I", box.payload, off)
        off += 4
    per = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    if count * per > len(box.payload) - off:
        raise ValueError("trun sample table truncated")
    if per == 0 and count > MAX_SAMPLES_WITHOUT_FIELDS:
        # Found by fuzzing: a trun with no per-sample fields costs no bytes per
        # sample, so a forged sample_count would make us build billions of objects.
        raise ValueError(f"trun sample_count {count} without per-sample fields")
    samples = []
    for i in range(count):
        duration = size = cto = 0
        sflags = default_flags if first_flags is None or i else first_flags
        if flags & 0x100:
            (duration,) = _unpack(">I", box.payload, off)
            off += 4
        if flags & 0x200:
            (size,) = _unpack(">I", box.payload, off)
            off += 4
        if flags & 0x400:
            (sflags,) = _unpack(">I", box.payload, off)
            off += 4
        if flags & 0x800:
            (cto,) = _unpack(">i" if version == 1 else ">I", box.payload, off)
            off += 4
        samples.append(TrunSample(duration, size, sflags, cto))
    return Trun(version, flags, data_offset, samples)


@dataclass
class Sidx:
    timescale: int
    earliest_presentation_time: int
    first_offset: int
    referenced_size: int
    subsegment_duration: int
    starts_with_sap: bool


def sidx(box: Box) -> Sidx:
    version, _ = full_header(box)
    if version == 1:
        _, timescale, ept, first = _unpack(">IIQQ", box.payload, 4)
        off = 28
    else:
        _, timescale, ept, first = _unpack(">IIII", box.payload, 4)
        off = 20
    _, count = _unpack(">HH", box.payload, off)
    if count != 1:
        raise ValueError(f"expected one sidx reference, got {count}")
    ref, dur, sap = _unpack(">III", box.payload, off + 4)
    return Sidx(timescale, ept, first, ref & 0x7FFFFFFF, dur, bool(sap >> 31))


def brands(box: Box) -> tuple[str, list[str]]:
    if len(box.payload) < 8 or len(box.payload) % 4:
        raise ValueError("bad ftyp/styp")
    major = box.payload[:4].decode("latin-1")
    compat = [box.payload[i : i + 4].decode("latin-1") for i in range(8, len(box.payload), 4)]
    return major, compat
