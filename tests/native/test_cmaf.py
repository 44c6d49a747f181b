"""The CMAF writer alone: demux real files with PyAV, feed the packets to
native.Segmenter, and judge the output with PyAV, ffprobe and an independent box
reader (tests/native/isobmff.py)."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

import native
from native import Segmenter, TrackKind
from tests.media import bigbuckbunny, decode_errors, ffmpeg, ffprobe, make_master
from tests.native import isobmff

SYNC_FLAGS = 0x02000000
NON_SYNC_FLAGS = 0x01010000


@dataclass
class Pkt:
    pts: int
    dts: int
    keyframe: bool
    data: bytes


@dataclass
class Fed:
    out: Path
    records: list[native.SegmentRecord]
    packets: list[Pkt]
    timescale: int


@pytest.fixture(scope="session")
def masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small masters: B-frames with 0.5 s GOPs (MP4 and TS), and HEVC."""
    d = tmp_path_factory.mktemp("cmaf-masters")
    bf = make_master(
        d / "bframes.mp4", seconds=4, width=320, height=240, fps="30",
        vcodec=["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                "-x264-params", "bframes=2:keyint=15:min-keyint=15:scenecut=0"],
    )
    ts = d / "bframes.ts"
    ffmpeg("-i", str(bf), "-c", "copy", "-f", "mpegts", str(ts))
    hevc_ts = make_master(
        d / "hevc.ts", seconds=2, width=320, height=240, fps="25", audio=False,
        vcodec=["-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                "keyint=25:min-keyint=25:log-level=error", "-pix_fmt", "yuv420p"],
        extra=["-f", "mpegts"],
    )
    hevc_mp4 = d / "hevc.mp4"
    ffmpeg("-i", str(hevc_ts), "-c", "copy", "-tag:v", "hvc1", str(hevc_mp4))
    return {"bframes": bf, "ts": ts, "hevc_ts": hevc_ts, "hevc_mp4": hevc_mp4}


def feed(src: Path, kind: str, out: Path, segment_seconds: float,
         sar: tuple[int, int] = (1, 1)) -> Fed:
    """Demux the first `kind` stream of src with PyAV into a Segmenter."""
    shutil.rmtree(out, ignore_errors=True)
    with av.open(str(src)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        cc = stream.codec_context
        tb = stream.time_base
        assert tb is not None and tb.numerator == 1
        extradata = bytes(cc.extradata or b"")
        if isinstance(cc, av.VideoCodecContext):
            seg = Segmenter(TrackKind.VIDEO, cc.name, tb.denominator, extradata, cc.width,
                            cc.height, 0, 0, out, segment_seconds, sar=sar)
        else:
            seg = Segmenter(TrackKind.AUDIO, cc.name, tb.denominator, extradata, 0, 0,
                            cc.sample_rate, cc.channels, out, segment_seconds)
        # Only Annex B sources (TS) are converted: a length-prefixed sample whose first
        # NAL is 256-511 bytes long also starts with 00 00 01.
        annexb = kind == "video" and not extradata.startswith(b"\x01")
        packets: list[Pkt] = []
        for p in c.demux(stream):
            if p.size == 0 or p.pts is None or p.dts is None:
                continue
            data = bytes(p)
            if annexb:
                data = native.annexb_to_length_prefixed(data)
            seg.write(data, p.pts, p.dts, p.duration or 0, p.is_keyframe)
            packets.append(Pkt(p.pts, p.dts, p.is_keyframe, data))
        records = seg.finish()
        return Fed(out, records, packets, tb.denominator)


def concat(fed: Fed) -> bytes:
    parts = [(fed.out / "init.mp4").read_bytes()]
    parts += [(fed.out / f"{r.number}.m4s").read_bytes() for r in fed.records]
    return b"".join(parts)


def read_back(path: Path) -> list[Pkt]:
    with av.open(str(path)) as c:
        return [
            Pkt(p.pts, p.dts, p.is_keyframe, bytes(p))
            for p in c.demux(c.streams[0]) if p.size and p.pts is not None and p.dts is not None
        ]


@dataclass
class SegmentBoxes:
    styp: isobmff.Box
    sidx: isobmff.Sidx
    sequence: int
    tfdt: int
    trun: isobmff.Trun
    mdat_offset: int
    mdat_size: int


def segment_boxes(data: bytes) -> SegmentBoxes:
    boxes = isobmff.parse(data)
    assert [b.type for b in boxes] == ["styp", "sidx", "moof", "mdat"]
    styp, sidx, moof, mdat = boxes
    traf = moof.find("traf")
    default = isobmff.tfhd_default_flags(traf.find("tfhd"))
    trun = isobmff.trun(traf.find("trun"), default or 0)
    sequence = int.from_bytes(moof.find("mfhd").payload[4:8], "big")
    # default-base-is-moof (CMAF): data_offset counts from the moof's first byte.
    assert isobmff.full_header(traf.find("tfhd"))[1] & 0x020000
    assert trun.data_offset == moof.size + 8
    return SegmentBoxes(styp, isobmff.sidx(sidx), sequence, isobmff.tfdt(traf.find("tfdt")),
                        trun, mdat.offset + 8, mdat.size - 8)


@pytest.fixture(scope="session")
def bframes_video(masters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Fed:
    return feed(masters["bframes"], "video", tmp_path_factory.mktemp("bf") / "v240", 1.0)


@pytest.fixture(scope="session")
def bbb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fed, Fed]]:
    d = tmp_path_factory.mktemp("bbb")
    yield (feed(bigbuckbunny(), "video", d / "v720", 2.0),
           feed(bigbuckbunny(), "audio", d / "audio", 2.0))


def test_segments_cut_at_keyframes_on_target(bframes_video: Fed) -> None:
    fed = bframes_video
    # 4 s at 30 fps with a keyframe every 15 frames, 1 s target: 4 segments of 1 s.
    assert [r.number for r in fed.records] == [1, 2, 3, 4]
    assert [r.duration for r in fed.records] == [fed.timescale] * 4
    flags = []
    for rec in fed.records:
        data = (fed.out / f"{rec.number}.m4s").read_bytes()
        assert rec.size == len(data)
        sb = segment_boxes(data)
        assert sb.sequence == rec.number
        assert sb.tfdt == rec.start
        assert sb.trun.samples[0].flags == SYNC_FLAGS
        flags += [s.flags for s in sb.trun.samples]
        assert sum(s.duration for s in sb.trun.samples) == rec.duration
        assert sum(s.size for s in sb.trun.samples) == sb.mdat_size
        # I-frame byte range: everything up to the end of the first (sync) sample.
        assert rec.iframe_size == sb.mdat_offset + sb.trun.samples[0].size
    assert flags == [SYNC_FLAGS if p.keyframe else NON_SYNC_FLAGS for p in fed.packets]
    assert sum(p.keyframe for p in fed.packets) == 8  # keyframes mid-segment stay sync samples


def test_tfdt_continuity_and_sidx(bframes_video: Fed, bbb: tuple[Fed, Fed]) -> None:
    for fed in (bframes_video, *bbb):
        end = None
        for rec in fed.records:
            data = (fed.out / f"{rec.number}.m4s").read_bytes()
            sb = segment_boxes(data)
            if end is not None:
                assert sb.tfdt == end, f"{fed.out} segment {rec.number}"
            end = sb.tfdt + sum(s.duration for s in sb.trun.samples)
            assert sb.sidx.timescale == fed.timescale
            assert sb.sidx.referenced_size == len(data) - (sb.styp.size + 52)
            assert sb.sidx.subsegment_duration == rec.duration
            assert sb.sidx.starts_with_sap
            t, times = sb.tfdt, []
            for s in sb.trun.samples:
                times.append(t + s.composition_offset)
                t += s.duration
            first_pts = min(times)
            assert sb.sidx.earliest_presentation_time == first_pts
            assert isobmff.brands(sb.styp) == ("msdh", ["msdh", "msix", "cmfs"])


def test_bframes_use_signed_offsets_and_keep_presentation_times(bframes_video: Fed) -> None:
    """trun v1 carries the reordering; composition time == source pts exactly."""
    fed = bframes_video
    assert fed.packets[0].dts < fed.packets[0].pts  # x264 B-frame delay in the source
    written = []
    for rec in fed.records:
        sb = segment_boxes((fed.out / f"{rec.number}.m4s").read_bytes())
        assert sb.trun.version == 1
        t = sb.tfdt
        for s in sb.trun.samples:
            written.append((t + s.composition_offset, t))
            t += s.duration
    assert [w[0] for w in written] == [p.pts for p in fed.packets]
    delay = fed.packets[0].pts - fed.packets[0].dts
    assert [w[1] for w in written] == [p.dts + delay for p in fed.packets]
    assert any(s.composition_offset < 0 for rec in fed.records
               for s in segment_boxes((fed.out / f"{rec.number}.m4s").read_bytes()).trun.samples)


def test_round_trip_through_pyav(bframes_video: Fed, bbb: tuple[Fed, Fed], tmp_path: Path) -> None:
    """init + segments read back by FFmpeg give the same packets: bytes, key flags,
    and timestamps up to one constant shift per track (FFmpeg moves pts so that
    pts >= dts when offsets are negative)."""
    for i, fed in enumerate((bframes_video, *bbb)):
        joined = tmp_path / f"joined{i}.mp4"
        joined.write_bytes(concat(fed))
        got = read_back(joined)
        assert len(got) == len(fed.packets)
        assert [g.data for g in got] == [p.data for p in fed.packets]
        assert [g.keyframe for g in got] == [p.keyframe for p in fed.packets]
        dts_shift = {g.dts - p.dts for g, p in zip(got, fed.packets, strict=True)}
        pts_shift = {g.pts - p.pts for g, p in zip(got, fed.packets, strict=True)}
        assert len(dts_shift) == 1 and len(pts_shift) == 1
        if all(p.pts == p.dts for p in fed.packets):
            # No reordering (Big Buck Bunny's video, all audio): times come back exact.
            assert dts_shift == pts_shift == {0}


def test_ffprobe_reads_and_decodes_concatenation(bbb: tuple[Fed, Fed], tmp_path: Path) -> None:
    video, audio = bbb
    for fed, name in ((video, "v.mp4"), (audio, "a.mp4")):
        path = tmp_path / name
        path.write_bytes(concat(fed))
        assert decode_errors(path) == ""
        info = ffprobe(path, "-show_streams", "-show_format")
        stream = info["streams"][0]
        if fed is video:
            assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1280, 720)
            assert stream["profile"] == "Main"
        else:
            assert (stream["codec_name"], stream["channels"], stream["sample_rate"]) == (
                "aac", 6, "48000")
        assert float(info["format"]["duration"]) == pytest.approx(5.3, abs=0.05)
    # 2 s audio segments at 48 kHz: cuts at the first AAC frame at/after 2 s, 4 s.
    assert [r.start for r in audio.records] == [0, 96256, 192512]


def test_init_segment_boxes(bbb: tuple[Fed, Fed], tmp_path: Path) -> None:
    video, audio = bbb
    init = isobmff.root((video.out / "init.mp4").read_bytes())
    assert [b.type for b in init.children] == ["ftyp", "moov"]
    assert isobmff.brands(init.children[0]) == ("iso6", ["iso6", "cmfc", "dash"])
    moov = init.find("moov")
    assert [b.type for b in moov.children] == ["mvhd", "trak", "mvex"]
    assert moov.find("mvex/trex").size == 32
    stbl = moov.find("trak/mdia/minf/stbl")
    assert [b.type for b in stbl.children] == ["stsd", "stts", "stsc", "stsz", "stco"]
    avc1 = stbl.find("stsd/avc1")
    with av.open(str(bigbuckbunny())) as c:
        source_avcc = bytes(c.streams.video[0].codec_context.extradata or b"")
    avcc = isobmff.parse(avc1.payload, 78)
    assert [b.type for b in avcc] == ["avcC", "pasp"]
    assert avcc[0].payload == source_avcc
    mdhd = moov.find("trak/mdia/mdhd")
    assert int.from_bytes(mdhd.payload[12:16], "big") == video.timescale
    assert moov.find("trak/mdia/hdlr").payload[8:12] == b"vide"
    assert moov.find("trak/mdia/minf").children[0].type == "vmhd"

    # Audio: mp4a + esds holding the AudioSpecificConfig, smhd.
    amoov = isobmff.root((audio.out / "init.mp4").read_bytes()).find("moov")
    mp4a = amoov.find("trak/mdia/minf/stbl/stsd/mp4a")
    assert int.from_bytes(mp4a.payload[16:18], "big") == 6
    assert int.from_bytes(mp4a.payload[24:28], "big") >> 16 == 48000
    esds = isobmff.parse(mp4a.payload, 28)[0]
    assert esds.type == "esds" and esds.payload.endswith(b"\x06\x80\x80\x80\x01\x02")
    with av.open(str(bigbuckbunny())) as c:
        asc = bytes(c.streams.audio[0].codec_context.extradata or b"")
    assert asc in esds.payload
    assert amoov.find("trak/mdia/minf").children[0].type == "smhd"


def test_sar_gives_display_width(masters: dict[str, Path], tmp_path: Path) -> None:
    fed = feed(masters["bframes"], "video", tmp_path / "v", 1.0, sar=(4, 3))
    moov = isobmff.root((fed.out / "init.mp4").read_bytes()).find("moov")
    tkhd = moov.find("trak/tkhd").payload
    assert int.from_bytes(tkhd[76:80], "big") == round(320 * 4 / 3 * 65536)
    assert int.from_bytes(tkhd[80:84], "big") == 240 << 16
    pasp = isobmff.parse(moov.find("trak/mdia/minf/stbl/stsd/avc1").payload, 78)[1]
    assert pasp.type == "pasp" and pasp.payload == (4).to_bytes(4, "big") + (3).to_bytes(4, "big")
    joined = tmp_path / "j.mp4"
    joined.write_bytes(concat(fed))
    stream = ffprobe(joined, "-show_streams")["streams"][0]
    assert stream["sample_aspect_ratio"] == "4:3"


def test_annexb_from_ts_matches_mp4(masters: dict[str, Path], tmp_path: Path) -> None:
    """TS gives Annex B extradata and packets: our conversion must produce what the
    MP4 has (the avcC's SPS/PPS part, and the NAL units byte for byte)."""
    with av.open(str(masters["ts"])) as c:
        annexb_extra = bytes(c.streams.video[0].codec_context.extradata or b"")
    with av.open(str(masters["bframes"])) as c:
        mp4_avcc = bytes(c.streams.video[0].codec_context.extradata or b"")
    assert native.annexb_to_length_prefixed(b"") == b""
    assert annexb_extra.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))
    ours = native.avc_decoder_config(annexb_extra)
    # High profile: the record ends with the 14496-15 §5.3.3.1 extension
    # (chroma_format_idc 1, 8-bit luma and chroma, no SPS extensions).
    assert ours[1] == 100 and ours.endswith(bytes([0xFC | 1, 0xF8, 0xF8, 0]))
    assert ours == mp4_avcc
    assert native.avc_decoder_config(mp4_avcc) == mp4_avcc

    fed = feed(masters["ts"], "video", tmp_path / "v", 1.0)
    assert [r.duration for r in fed.records] == [90000] * 4
    joined = tmp_path / "ts.mp4"
    joined.write_bytes(concat(fed))
    assert decode_errors(joined) == ""
    mp4_packets = read_back(masters["bframes"])
    # The MP4 samples are the TS access units minus what the MPEG-TS muxer adds:
    # an AUD in front and SPS/PPS repeated before each IDR.
    stripped = [drop_nals(p.data, {7, 8, 9}) for p in fed.packets]
    assert stripped == [p.data for p in mp4_packets]


def test_hevc_annexb_and_hvcc(masters: dict[str, Path], tmp_path: Path) -> None:
    with av.open(str(masters["hevc_ts"])) as c:
        annexb_extra = bytes(c.streams.video[0].codec_context.extradata or b"")
    with av.open(str(masters["hevc_mp4"])) as c:
        ffmpeg_hvcc = bytes(c.streams.video[0].codec_context.extradata or b"")
    ours = native.hevc_decoder_config(annexb_extra)
    # profile_space/tier/profile, compatibility flags, constraint flags, level.
    assert ours[1:13] == ffmpeg_hvcc[1:13]
    assert ours[16:19] == ffmpeg_hvcc[16:19]  # chroma format, bit depths
    assert ours[21] & 3 == 3                    # 4-byte NAL lengths
    arrays = parse_hvcc_arrays(ours)
    assert sorted(arrays) == [32, 33, 34]
    assert all(arrays[t] == parse_hvcc_arrays(ffmpeg_hvcc)[t] for t in (32, 33, 34))
    assert native.hevc_decoder_config(ffmpeg_hvcc) == ffmpeg_hvcc

    for src in (masters["hevc_ts"], masters["hevc_mp4"]):
        fed = feed(src, "video", tmp_path / src.stem, 1.0)
        assert len(fed.records) == 2
        stbl = isobmff.root((fed.out / "init.mp4").read_bytes()).find(
            "moov/trak/mdia/minf/stbl/stsd")
        assert stbl.children[0].type == "hvc1"
        joined = tmp_path / f"{src.stem}-joined.mp4"
        joined.write_bytes(concat(fed))
        assert decode_errors(joined) == ""
        assert ffprobe(joined, "-show_streams")["streams"][0]["codec_name"] == "hevc"


def drop_nals(sample: bytes, types: set[int]) -> bytes:
    """A length-prefixed H.264 sample without the NAL units of the given types."""
    out, pos = [], 0
    while pos < len(sample):
        n = int.from_bytes(sample[pos : pos + 4], "big")
        if sample[pos + 4] & 0x1F not in types:
            out.append(sample[pos : pos + 4 + n])
        pos += 4 + n
    return b"".join(out)


def parse_hvcc_arrays(hvcc: bytes) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    pos = 23
    for _ in range(hvcc[22]):
        nal_type = hvcc[pos] & 0x3F
        count = int.from_bytes(hvcc[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            n = int.from_bytes(hvcc[pos : pos + 2], "big")
            out.setdefault(nal_type, []).append(hvcc[pos + 2 : pos + 2 + n])
            pos += 2 + n
    return out


def test_negative_start_moves_to_zero(tmp_path: Path) -> None:
    """AAC encoders start at -1024 (priming); tfdt is unsigned, so the track starts at 0."""
    seg = Segmenter(TrackKind.AUDIO, "aac", 48000, b"\x11\x90", 0, 0, 48000, 2, tmp_path, 0)
    for i in range(4):
        seg.write(b"\x21\x00" * 8, -1024 + 1024 * i, -1024 + 1024 * i, 1024, True)
    (rec,) = seg.finish()
    assert (rec.start, rec.duration) == (0, 4096)


def test_force_cut_and_no_auto_cut(tmp_path: Path) -> None:
    seg = Segmenter(TrackKind.AUDIO, "aac", 48000, b"\x11\x90", 0, 0, 48000, 2, tmp_path, 0)
    for i in range(10):
        if i in (3, 7):
            seg.force_cut()
        seg.write(b"\x21\x00" * 8, 1024 * i, 1024 * i, 1024, True)
    recs = seg.finish()
    assert [(r.start, r.duration) for r in recs] == [(0, 3072), (3072, 4096), (7168, 3072)]
    assert [r.iframe_size for r in recs] == [0, 0, 0]


@pytest.mark.parametrize(
    ("kind", "codec", "extradata", "message"),
    [
        (TrackKind.VIDEO, "vp9", b"", "cannot be written to CMAF"),
        (TrackKind.VIDEO, "h264", b"\x00\x00\x00\x01\x09\xf0", "no SPS/PPS"),
        (TrackKind.VIDEO, "h264", b"garbage", "neither avcC nor Annex B"),
        (TrackKind.VIDEO, "hevc", b"\x00\x00\x01\x42\x01\x01", "no VPS/SPS/PPS"),
        (TrackKind.AUDIO, "aac", b"", "AudioSpecificConfig"),
        (TrackKind.AUDIO, "h264", b"", "does not match the track kind"),
    ],
)
def test_bad_configuration_raises_invalid_data(
    tmp_path: Path, kind: TrackKind, codec: str, extradata: bytes, message: str
) -> None:
    with pytest.raises(native.InvalidDataError, match=message) as info:
        seg = Segmenter(kind, codec, 90000, extradata, 64, 64, 48000, 2, tmp_path, 1.0)
        seg.write(b"\x00\x00\x00\x01\x65", 0, 0, 3000, True)
        seg.finish()
    assert isinstance(info.value, ValueError)


def test_backwards_dts_and_write_after_finish(tmp_path: Path) -> None:
    seg = Segmenter(TrackKind.AUDIO, "aac", 48000, b"\x11\x90", 0, 0, 48000, 2, tmp_path, 1.0)
    seg.write(b"\x21", 1024, 1024, 1024, True)
    with pytest.raises(native.InvalidDataError, match="decode times go backwards"):
        seg.write(b"\x21", 0, 0, 1024, True)
    seg.finish()
    with pytest.raises(native.NativeError, match="after finish"):
        seg.write(b"\x21", 4096, 4096, 1024, True)


def test_unwritable_directory_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    seg = Segmenter(TrackKind.AUDIO, "aac", 48000, b"\x11\x90", 0, 0, 48000, 2, blocker / "x", 1.0)
    seg.write(b"\x21", 0, 0, 1024, True)
    with pytest.raises(OSError, match="create directory"):
        seg.finish()



def test_last_sample_without_duration_repeats_the_previous_one(tmp_path: Path) -> None:
    seg = Segmenter(TrackKind.AUDIO, "aac", 48000, b"\x11\x90", 0, 0, 48000, 2, tmp_path, 0)
    for i in range(3):
        seg.write(b"\x21", 1024 * i, 1024 * i, 0, True)
    seg.force_cut()
    seg.write(b"\x21", 3072, 3072, 0, True)
    recs = seg.finish()
    assert [(r.start, r.duration) for r in recs] == [(0, 3072), (3072, 1024)]


def test_every_init_box_field(tmp_path: Path) -> None:
    """STYLE §9: the CMAF header read back field by field (ISO/IEC 14496-12)."""
    avcc = (Path(__file__).parents[1] / "fuzz" / "corpus" / "codec_h264" / "avcc_high").read_bytes()
    seg = Segmenter(TrackKind.VIDEO, "h264", 15360, avcc, 640, 360, 0, 0, tmp_path / "v", 1.0,
                    sar=(1, 1), language="eng")
    seg.write(b"\x00\x00\x00\x02\x65\x88", 0, 0, 512, True)
    seg.finish()
    data = (tmp_path / "v" / "init.mp4").read_bytes()
    init = isobmff.root(data)
    assert sum(b.size for b in init.children) == len(data)
    moov = init.find("moov")
    mvhd = moov.find("mvhd").payload
    assert isobmff.full_header(moov.find("mvhd")) == (0, 0)
    timescale, duration, rate, volume = struct.unpack_from(">IIIH", mvhd, 12)
    assert (timescale, duration, rate, volume) == (1000, 0, 0x10000, 0x100)
    assert struct.unpack_from(">9I", mvhd, 36) == (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    assert struct.unpack_from(">I", mvhd, 96)[0] == 2  # next_track_ID

    tkhd = moov.find("trak/tkhd")
    assert isobmff.full_header(tkhd) == (0, 3)  # enabled | in movie
    track_id, _, duration = struct.unpack_from(">III", tkhd.payload, 12)
    assert (track_id, duration) == (1, 0)

    mdhd = moov.find("trak/mdia/mdhd").payload
    timescale, duration, lang = struct.unpack_from(">IIH", mdhd, 12)
    assert (timescale, duration) == (15360, 0)
    assert "".join(chr(((lang >> s) & 0x1F) + 0x60) for s in (10, 5, 0)) == "eng"

    hdlr = moov.find("trak/mdia/hdlr").payload
    assert hdlr[8:12] == b"vide" and hdlr[24:] == b"VideoHandler\x00"
    vmhd = moov.find("trak/mdia/minf/vmhd")
    assert isobmff.full_header(vmhd) == (0, 1) and vmhd.payload[4:] == bytes(8)
    dref = moov.find("trak/mdia/minf/dinf/dref").payload
    assert dref == bytes(4) + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x0curl \x00\x00\x00\x01"

    stbl = moov.find("trak/mdia/minf/stbl")
    for name, size in (("stts", 16), ("stsc", 16), ("stsz", 20), ("stco", 16)):
        box = stbl.find(name)
        assert box.size == size and box.payload[4:] == bytes(size - 12), name
    avc1 = stbl.find("stsd/avc1").payload
    assert struct.unpack_from(">H", avc1, 6)[0] == 1  # data_reference_index
    assert struct.unpack_from(">HHII", avc1, 24) == (640, 360, 0x480000, 0x480000)
    assert struct.unpack_from(">H", avc1, 40)[0] == 1  # frame_count
    assert struct.unpack_from(">Hh", avc1, 74) == (0x18, -1)

    trex = moov.find("mvex/trex").payload
    assert struct.unpack_from(">5I", trex, 4) == (1, 1, 0, 0, 0)
