"""CMAF common encryption (ISO/IEC 23001-7) in the writer: 'cenc' (AES-CTR) and
'cbcs' (AES-CBC, 1:9 pattern on video NAL units), on both paths. FFmpeg is the
judge: with -decryption_key it decodes what we encrypted to the same pictures and
sound as the clear output, without the key it cannot. A second judge, OpenSSL
through `cryptography`, decrypts every sample by the spec's rules, from what the
init segment and senc say, back to the clear run's bytes."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import native
from tests.media import ffmpeg, joined
from tests.native import isobmff
from tests.native.test_remux import shrink_script

KID = bytes.fromhex("0123456789abcdef0123456789abcdef")
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
SEGMENT = 2.0


def decoded_md5(path: Path, key: bytes | None) -> tuple[int, str, str]:
    """(exit code, stderr, md5 of the decoded frames) as ffmpeg decodes the file."""
    args = ["ffmpeg", "-hide_banner", "-v", "error"]
    if key is not None:
        args += ["-decryption_key", key.hex()]
    args += ["-i", str(path), "-f", "md5", "-"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr, proc.stdout.strip()


@dataclass
class Tenc:
    crypt: int
    skip: int
    iv_size: int
    constant_iv: bytes


def tenc(init: bytes) -> Tenc:
    """The track's tenc (§8.2), found by type inside the sample entry's sinf."""
    at = init.find(b"tenc")
    assert at >= 4 and init.count(b"tenc") == 1
    version = init[at + 4]
    pattern = init[at + 9] if version >= 1 else 0
    protected, iv_size = init[at + 10], init[at + 11]
    assert protected == 1 and init[at + 12 : at + 28] == KID
    constant_iv = b""
    if iv_size == 0:
        constant_iv = init[at + 29 : at + 29 + init[at + 28]]
    return Tenc(pattern >> 4, pattern & 0x0F, iv_size, constant_iv)


def senc(box: isobmff.Box, iv_size: int) -> list[tuple[bytes, list[tuple[int, int]]]]:
    """Per sample: (IV, [(clear, protected), ...]); no subsamples: whole sample."""
    _, flags = isobmff.full_header(box)
    p = box.payload
    (count,) = struct.unpack_from(">I", p, 4)
    off, out = 8, []
    for _ in range(count):
        iv = p[off : off + iv_size]
        off += iv_size
        subs = []
        if flags & 0x2:
            (n,) = struct.unpack_from(">H", p, off)
            off += 2
            for _ in range(n):
                subs.append(struct.unpack_from(">HI", p, off))
                off += 6
        out.append((iv, subs))
    assert off == len(p)
    return out


def decrypt_sample(sample: bytes, scheme: str, t: Tenc, iv: bytes,
                   subs: list[tuple[int, int]]) -> bytes:
    data = bytearray(sample)
    ranges, pos = [], 0
    for clear, protected in subs or [(0, len(sample))]:
        ranges.append((pos + clear, protected))
        pos += clear + protected
    assert pos == len(sample)
    if scheme == "cenc":
        # One key stream over the protected ranges, counter block IV || 0.
        ctr = Cipher(algorithms.AES(KEY), modes.CTR(iv + bytes(8))).decryptor()
        for start, n in ranges:
            data[start : start + n] = ctr.update(bytes(data[start : start + n]))
        return bytes(data)
    # cbcs: the constant IV at each range; blocks encrypted by the crypt:skip
    # pattern (none: every whole block), chained through the encrypted ones only.
    period = t.crypt + t.skip
    for start, n in ranges:
        blocks = [start + 16 * b for b in range(n // 16) if not period or b % period < t.crypt]
        if not blocks:
            continue
        cbc = Cipher(algorithms.AES(KEY), modes.CBC(t.constant_iv)).decryptor()
        plain = cbc.update(b"".join(bytes(data[b : b + 16]) for b in blocks)) + cbc.finalize()
        for i, b in enumerate(blocks):
            data[b : b + 16] = plain[16 * i : 16 * i + 16]
    return bytes(data)


def samples(segment: bytes) -> tuple[isobmff.Box, list[bytes]]:
    """The traf of a media segment and its samples' bytes (offsets from the moof)."""
    top = isobmff.root(segment)
    moof = top.find("moof")
    traf = moof.find("traf")
    run = isobmff.trun(traf.find("trun"))
    pos, out = moof.offset + run.data_offset, []
    for s in run.samples:
        out.append(segment[pos : pos + s.size])
        pos += s.size
    return traf, out


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("enc") / "m.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4",
           "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=48000:duration=4",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
           "-c:a", "aac", str(path))
    return path


def run(path: str, master: Path, out: Path, enc: native.Encryption | None
        ) -> native.PipelineResult:
    if path == "copy":
        return native.package_copy(master, out, SEGMENT, encryption=enc)
    return native.Transcoder(master, out, [native.Rung("v240", 240, 400_000)],
                             segment_seconds=SEGMENT, gop_seconds=1.0, preset="ultrafast",
                             encoder_threads=1, encryption=enc).run()


@pytest.mark.parametrize("path", ["copy", "transcode"])
@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_ffmpeg_decrypts_with_the_key_only(master: Path, tmp_path: Path, path: str,
                                           scheme: str) -> None:
    clear = run(path, master, tmp_path / "clear", None)
    enc = run(path, master, tmp_path / "enc", native.Encryption(scheme, KID, KEY))
    for c, e in zip(clear.renditions, enc.renditions, strict=True):
        assert c.id == e.id
        init = isobmff.root((tmp_path / "enc" / e.id / "init.mp4").read_bytes())
        entry = init.find("moov/trak/mdia/minf/stbl/stsd").children[0]
        is_video = e.track.kind == native.TrackKind.VIDEO
        assert entry.type == ("encv" if is_video else "enca")
        payload = (tmp_path / "enc" / e.id / "init.mp4").read_bytes()
        assert KID in payload and KEY not in payload
        assert scheme.encode() in payload  # schm
        assert init.find("moov/pssh")
        seg = isobmff.root((tmp_path / "enc" / e.id / "1.m4s").read_bytes())
        traf = seg.find("moof/traf")
        kinds = {b.type for b in traf.children}
        if scheme == "cenc" or is_video:
            assert {"senc", "saiz", "saio"} <= kinds
        # Same layout, other bytes.
        clear_mdat = (tmp_path / "clear" / c.id / "1.m4s").read_bytes()
        enc_mdat = (tmp_path / "enc" / e.id / "1.m4s").read_bytes()
        assert clear_mdat[-200:] != enc_mdat[-200:]
        rc, err, md5 = decoded_md5(joined(tmp_path / "enc", e), KEY)
        assert rc == 0 and err == "", err
        # Decrypted, the samples are the clear run's (x264 and FFmpeg's aac are
        # deterministic), so the decoded frames hash the same.
        rc_clear, _, md5_clear = decoded_md5(joined(tmp_path / "clear", c), None)
        assert rc_clear == 0 and md5 == md5_clear
        rc, err, md5_nokey = decoded_md5(joined(tmp_path / "enc", e), None)
        assert rc != 0 or err != "" or md5_nokey != md5_clear, "decoded without the key"
        rc, err, md5_wrong = decoded_md5(joined(tmp_path / "enc", e), hashlib.md5(b"x").digest())
        assert rc != 0 or err != "" or md5_wrong != md5_clear


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_samples_decrypt_by_the_spec_to_the_clear_bytes(master: Path, tmp_path: Path,
                                                        scheme: str) -> None:
    clear = run("copy", master, tmp_path / "clear", None)
    run("copy", master, tmp_path / "enc", native.Encryption(scheme, KID, KEY))
    checked = 0
    for r in clear.renditions:
        t = tenc((tmp_path / "enc" / r.id / "init.mp4").read_bytes())
        is_video = r.track.kind == native.TrackKind.VIDEO
        if scheme == "cenc":
            assert (t.iv_size, t.crypt, t.skip) == (8, 0, 0)
        else:
            assert t.iv_size == 0 and len(t.constant_iv) == 16
            assert (t.crypt, t.skip) == ((1, 9) if is_video else (0, 0))
        ivs, count = set(), 0
        for seg in r.segments:
            _, plain = samples((tmp_path / "clear" / r.id / f"{seg.number}.m4s").read_bytes())
            traf, crypted = samples((tmp_path / "enc" / r.id / f"{seg.number}.m4s").read_bytes())
            assert [len(c) for c in crypted] == [len(p) for p in plain]
            names = {b.type for b in traf.children}
            info = (senc(traf.find("senc"), t.iv_size) if "senc" in names
                    else [(b"", [])] * len(crypted))
            assert len(info) == len(crypted)
            for p, c, (iv, subs) in zip(plain, crypted, info, strict=True):
                assert bool(subs) == is_video
                # CTR changes every protected byte; CBC only whole blocks.
                least = 16 if scheme == "cbcs" else 1
                assert (c != p) == any(n >= least for _, n in subs or [(0, len(p))])
                assert decrypt_sample(c, scheme, t, iv, subs) == p
                ivs.add(iv)
                count += 1
        # cenc: an IV per sample, never repeated (§9.1); cbcs: none in senc.
        assert len(ivs) == (count if scheme == "cenc" else 1)
        checked += count
    assert checked > 200


def test_bad_encryption_config_is_refused(master: Path, tmp_path: Path) -> None:
    with pytest.raises(native.InvalidDataError, match="16 bytes"):
        native.package_copy(master, tmp_path / "o", SEGMENT,
                            encryption=native.Encryption("cenc", KID[:8], KEY))
    with pytest.raises(native.InvalidDataError, match="not supported"):
        native.package_copy(master, tmp_path / "o", SEGMENT,
                            encryption=native.Encryption("cens", KID, KEY))


def test_encrypted_copy_faults_reach_the_caller(master: Path, tmp_path: Path) -> None:
    """Encrypted segments are read, encrypted and written on the pool's threads: a
    write that fails there (a directory squats on 2.m4s) is an OSError naming the
    file; a master cut off inside its mdat is an error naming the damage."""
    enc = native.Encryption("cbcs", KID, KEY)
    out = tmp_path / "out"
    (out / "v240" / "2.m4s").mkdir(parents=True)
    with pytest.raises(OSError, match=r"v240/2\.m4s"):
        native.package_copy(master, out, SEGMENT, encryption=enc)
    assert native.package_copy(master, tmp_path / "again", SEGMENT, encryption=enc)

    faststart = tmp_path / "faststart.mp4"
    ffmpeg("-i", str(master), "-c", "copy", "-movflags", "+faststart", str(faststart))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    with pytest.raises(native.InvalidDataError, match="truncated or damaged"):
        native.package_copy(truncated, tmp_path / "tr", SEGMENT, encryption=enc)


_SHRINK = shrink_script(
    ', encryption=native.Encryption("cenc", bytes(16), bytes(range(16)))')


def test_master_shrinking_during_an_encrypted_copy_never_crashes(tmp_path: Path) -> None:
    """The encrypted copy reads the master's samples with pread(2), never through
    the mapping: a master truncated under it gives an error (or, when the copy won
    the race, a result), never SIGBUS."""
    path = tmp_path / "m.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=10",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "12", "-b:v", "12M",
           "-pix_fmt", "yuv420p", str(path))
    proc = subprocess.run([sys.executable, "-c", _SHRINK, str(path), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 3), (proc.returncode, proc.stderr)
    if proc.returncode == 3:
        assert "file changed" in proc.stdout or "truncated" in proc.stdout, proc.stdout
