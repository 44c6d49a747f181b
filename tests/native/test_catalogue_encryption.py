"""CMAF common encryption (ISO/IEC 23001-7) in the writer: 'cenc' (AES-CTR) and
'cbcs' (AES-CBC, 1:9 pattern on video NAL units), on both paths. FFmpeg is the
judge: with -decryption_key it decodes what we encrypted to the same pictures and
sound as the clear output, without the key it cannot."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

import native
from tests.media import ffmpeg
from tests.native import isobmff

KID = bytes.fromhex("0123456789abcdef0123456789abcdef")
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
SEGMENT = 2.0


def joined(out: Path, r: native.RenditionResult) -> Path:
    target = out / f"{r.id}.joined.mp4"
    parts = [(out / r.id / "init.mp4").read_bytes()]
    parts += [(out / r.id / f"{s.number}.m4s").read_bytes() for s in r.segments]
    target.write_bytes(b"".join(parts))
    return target


def decoded_md5(path: Path, key: bytes | None) -> tuple[int, str, str]:
    """(exit code, stderr, md5 of the decoded frames) as ffmpeg decodes the file."""
    args = ["ffmpeg", "-hide_banner", "-v", "error"]
    if key is not None:
        args += ["-decryption_key", key.hex()]
    args += ["-i", str(path), "-f", "md5", "-"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr, proc.stdout.strip()


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


def test_bad_encryption_config_is_refused(master: Path, tmp_path: Path) -> None:
    with pytest.raises(native.InvalidDataError, match="16 bytes"):
        native.package_copy(master, tmp_path / "o", SEGMENT,
                            encryption=native.Encryption("cenc", KID[:8], KEY))
    with pytest.raises(native.InvalidDataError, match="not supported"):
        native.package_copy(master, tmp_path / "o", SEGMENT,
                            encryption=native.Encryption("cens", KID, KEY))
