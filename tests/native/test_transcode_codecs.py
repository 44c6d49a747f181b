"""AV1 (libsvtav1) and HEVC (libx265) rungs beside H.264: the same GOP contract
(one key frame at each GOP boundary, on every rung), CMAF sample entries av01/av1C
and hvc1/hvcC read back by ffprobe and PyAV, samples shaped as AV1-ISOBMFF and
14496-15 want them, and clear errors for what is not supported."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import av
import pytest

import native
from packager.codecs import codec_string
from tests import media
from tests.media import joined
from tests.native import isobmff

RUNGS = [
    native.Rung(id="v360", height=360, bitrate=600_000),
    native.Rung(id="v360_av1", height=360, bitrate=360_000, encoder="libsvtav1"),
    native.Rung(id="v240_hevc", height=240, bitrate=300_000, encoder="libx265"),
]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> tuple[native.PipelineResult, Path]:
    """A 4 s 640x360 master with a hard cut at 1.5 s (a scene-cut detector would put
    a key frame there), encoded once to one rung per codec."""
    tmp = tmp_path_factory.mktemp("codecs")
    master = tmp / "cut.mp4"
    media.ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=4,"
        "negate=enable='gte(t,1.5)'",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(master),
    )
    out = tmp / "out"
    result = native.Transcoder(master, out, RUNGS, segment_seconds=2.0, gop_seconds=1.0,
                               preset="veryfast", audio=False).run()
    return result, out


def _rendition(result: native.PipelineResult, rid: str) -> native.RenditionResult:
    return next(r for r in result.renditions if r.id == rid)


def _key_packet_times(path: Path) -> list[float]:
    """Sync samples as the container marks them (libdav1d ignores -skip_frame)."""
    packets = media.ffprobe(path, "-select_streams", "v:0",
                            "-show_entries", "packet=pts_time,flags")["packets"]
    return [round(float(p["pts_time"]), 3) for p in packets if "K" in p["flags"]]


def _samples(segment: bytes) -> list[bytes]:
    """The samples of one CMAF segment, cut from mdat by the trun sizes."""
    top = isobmff.root(segment)
    moof = next(b for b in top.children if b.type == "moof")
    trun = isobmff.trun(moof.find("traf/trun"))
    pos = moof.offset + trun.data_offset
    samples = []
    for s in trun.samples:
        samples.append(segment[pos:pos + s.size])
        pos += s.size
    return samples


def _obu_types(sample: bytes) -> list[int]:
    types, pos = [], 0
    while pos < len(sample):
        header = sample[pos]
        assert header & 0x02, "every OBU in a sample carries obu_size (AV1-ISOBMFF §2.4)"
        pos += 2 if header & 0x04 else 1
        size, shift = 0, 0
        while True:
            byte = sample[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        types.append((header >> 3) & 0x0F)
        pos += size
    assert pos == len(sample)
    return types


def _config(init: bytes, entry: str, config: str) -> bytes:
    stsd = isobmff.root(init).find("moov/trak/mdia/minf/stbl/stsd")
    sample_entry = stsd.children[0]
    assert sample_entry.type == entry
    # VisualSampleEntry: 78 bytes of fields before its child boxes (§12.1.3).
    children = isobmff.parse(sample_entry.payload, 78)
    return next(b for b in children if b.type == config).payload


def test_every_codec_keeps_the_gop_contract(
    ladder: tuple[native.PipelineResult, Path],
) -> None:
    result, out = ladder
    expected = {"v360": ("h264", "avc1"), "v360_av1": ("av1", "av01"),
                "v240_hevc": ("hevc", "hvc1")}
    keys = {}
    for rid, (codec, tag) in expected.items():
        rendition = _rendition(result, rid)
        assert rendition.track.codec == codec
        path = joined(out, rendition)
        stream = media.ffprobe(path, "-show_entries",
                               "stream=codec_name,codec_tag_string,width,height")["streams"][0]
        assert (stream["codec_name"], stream["codec_tag_string"], stream["height"]) == (
            codec, tag, rendition.track.height)
        assert media.decode_errors(path) == "", rid
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 120, rid
        times = _key_packet_times(path)
        keys[rid] = [round(t - times[0], 3) for t in times]
        ts = rendition.track.timescale
        assert [s.duration / ts for s in rendition.segments] == [2.0, 2.0], rid
        # capped VBR: the rung's own bitrate, never far above it
        total = sum((out / rid / f"{s.number}.m4s").stat().st_size for s in rendition.segments)
        bits_per_second = total * 8 / 4.0
        rung = next(r for r in RUNGS if r.id == rid)
        assert 0.3 * rung.bitrate < bits_per_second < 1.5 * rung.bitrate, (rid, bits_per_second)
    # one key frame per second on every rung, none at the cut (1.5 s)
    assert all(k == [0.0, 1.0, 2.0, 3.0] for k in keys.values()), keys


def test_av1_samples_and_av1c_follow_av1_isobmff(
    ladder: tuple[native.PipelineResult, Path],
) -> None:
    result, out = ladder
    rendition = _rendition(result, "v360_av1")
    init = (out / "v360_av1" / "init.mp4").read_bytes()
    av1c = _config(init, "av01", "av1C")
    assert av1c == rendition.track.extradata
    assert av1c[0] == 0x81 and av1c[3] == 0  # marker+version 1, no presentation delay
    # configOBUs: exactly one sequence header OBU with a size field
    assert _obu_types(av1c[4:]) == [1]
    # the fixed fields agree with what ffprobe reads from the sequence header
    stream = media.ffprobe(joined(out, rendition), "-show_entries",
                           "stream=profile,pix_fmt")["streams"][0]
    assert (stream["profile"], stream["pix_fmt"]) == ("Main", "yuv420p")
    profile, high_bitdepth, mono = av1c[1] >> 5, (av1c[2] >> 6) & 1, (av1c[2] >> 4) & 1
    sub_x, sub_y = (av1c[2] >> 3) & 1, (av1c[2] >> 2) & 1
    assert (profile, high_bitdepth, mono, sub_x, sub_y) == (0, 0, 0, 1, 1)
    assert codec_string("av1", av1c) == f"av01.0.{av1c[1] & 0x1F:02d}M.08"
    for seg in rendition.segments:
        data = (out / "v360_av1" / f"{seg.number}.m4s").read_bytes()
        samples = _samples(data)
        types = [_obu_types(s) for s in samples]
        assert all(2 not in t for t in types), "temporal delimiters are not stored (§2.4)"
        assert all(3 in t or 6 in t for t in types)  # each sample holds a frame (header)
        flags = [s.flags for s in isobmff.trun(isobmff.root(data).find("moof/traf/trun")).samples]
        sync = [f == 0x02000000 for f in flags]
        assert sync[0] and sum(sync) == 2, sync  # two GOPs per 2 s segment


def test_hevc_keeps_parameter_sets_in_hvcc_only(
    ladder: tuple[native.PipelineResult, Path],
) -> None:
    result, out = ladder
    rendition = _rendition(result, "v240_hevc")
    init = (out / "v240_hevc" / "init.mp4").read_bytes()
    hvcc = _config(init, "hvc1", "hvcC")
    assert hvcc == native.hevc_decoder_config(rendition.track.extradata)
    # hvcC general_profile_idc / level agree with ffprobe's reading of the SPS
    stream = media.ffprobe(joined(out, rendition), "-show_entries",
                           "stream=profile,level")["streams"][0]
    assert stream["profile"] == "Main" and hvcc[1] & 0x1F == 1
    assert hvcc[12] == int(stream["level"])
    assert codec_string("hevc", hvcc).startswith(f"hvc1.1.6.L{hvcc[12]}.")
    for seg in rendition.segments:
        for sample in _samples((out / "v240_hevc" / f"{seg.number}.m4s").read_bytes()):
            pos, types = 0, []
            while pos < len(sample):
                (length,) = struct.unpack_from(">I", sample, pos)
                types.append((sample[pos + 4] >> 1) & 0x3F)
                pos += 4 + length
            assert not {32, 33, 34} & set(types), types  # no VPS/SPS/PPS in band


def test_unsupported_encoders_and_av1_encryption_fail_clearly(tmp_path: Path) -> None:
    master = tmp_path / "m.mp4"
    media.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1",
                 "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(master))
    for name in ("mpeg4", "libvpx-vp9", "nope"):
        rung = native.Rung(id="v240", height=240, bitrate=300_000, encoder=name)
        with pytest.raises(ValueError, match=rf"^unsupported video encoder '{name}' \(supported: "):
            native.Transcoder(master, tmp_path / name, [rung], audio=False).run()
    assert not (tmp_path / "nope").exists()  # refused before anything was written
    rung = native.Rung(id="v240_av1", height=240, bitrate=300_000, encoder="libsvtav1")
    key = native.Encryption(scheme="cenc", kid=bytes(16), key=bytes(range(16)))
    with pytest.raises(ValueError, match="encryption of AV1 tracks is not supported"):
        native.Transcoder(master, tmp_path / "enc", [rung], audio=False, encryption=key).run()


def test_cancelled_av1_run_stops(tmp_path: Path) -> None:
    """SVT-AV1 blocks in its teardown unless it saw end of stream: a run stopped
    mid-stream must still return."""
    master = tmp_path / "m.mp4"
    media.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=6",
                 "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(master))
    rung = native.Rung(id="v240_av1", height=240, bitrate=300_000, encoder="libsvtav1")
    job = native.Transcoder(master, tmp_path / "out", [rung], audio=False, preset="veryslow")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            job.run()
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(0.5)
    job.cancel()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the AV1 run did not stop after cancel()"
    assert len(errors) == 1 and isinstance(errors[0], native.CancelledError), errors


@pytest.mark.parametrize(("encoder", "width", "height"), [("libx265", 16, 8),
                                                          ("libsvtav1", 64, 32)])
def test_an_encoder_that_refuses_a_rung_is_bad_input(tmp_path: Path, encoder: str,
                                                     width: int, height: int) -> None:
    """A rung its encoder will not open (past the planner's checks) is the job's
    input, a ValueError: the job fails at once rather than being retried."""
    master = media.make_master(tmp_path / "m.mp4", seconds=1, width=320, height=240)
    rung = native.Rung(id="tiny", height=height, width=width, bitrate=100_000, encoder=encoder)
    with pytest.raises(native.InvalidDataError, match=f"open encoder {encoder} for rung tiny "
                                                      f"\\({width}x{height}\\) failed"):
        native.Transcoder(master, tmp_path / "out", [rung], audio=False).run()
