"""HLS AES-128: whole-segment encryption of published CMAF media (RFC 8216 §4.3.2.4).

An ``aes-128`` job packages clear CMAF (the native writer, unencrypted), then this
module encrypts every audio and video media segment (``{n}.m4s``) in the work
directory before anything is published:

- AES-128-CBC over the whole file with PKCS#7 padding (RFC 5652 §6.3), as
  METHOD=AES-128 prescribes;
- the IV of segment ``n`` (1-based) is its media sequence number ``n - 1``
  (playlists carry no EXT-X-MEDIA-SEQUENCE, so the first is 0) as a 16-byte
  big-endian number: RFC 8216 §5.2's rule when EXT-X-KEY has no IV attribute. A
  fresh IV per segment under one key, and nothing to store;
- init segments stay clear: the playlists put EXT-X-MAP before EXT-X-KEY, so the
  key applies to the media segments only (§4.3.2.5), and the init segment needs no
  IV of its own;
- subtitles (WebVTT) stay clear, as with common encryption.

I-frame playlists address the first part of each segment by byte range
(``[0, iframe_size)``: the boxes and the sync sample). Under AES-128 a byte range is
a Media Segment of its own, so it must be a complete CBC + PKCS#7 message. CBC
decrypts any prefix of whole blocks from the same IV, so the range is stretched
to the first block boundary at or after the I-frame where the clear bytes end in a
valid PKCS#7 pad (``k`` bytes of value ``k``) that lies past the I-frame: the
prefix then *is* the AES-128 encryption of the clear bytes before the pad, which
hold the whole I-frame (a player reads a truncated mdat, as with clear ranges).
On random-looking sample data such a block end comes every ~256 blocks (~4 KB);
where none does, the range is the whole segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from metadata.keys import AES_128, ContentKey
from metadata.models import Rendition, Segment
from packager.bitrates import average_bitrate, peak_bitrate

__all__ = ["AES_128", "decrypt_segment", "encrypt_renditions", "encrypt_segment",
           "iframe_range_end", "sequence_iv"]

BLOCK = 16


def sequence_iv(number: int) -> bytes:
    """The IV of 1-based segment ``number``: its media sequence number (``number -
    1``) as a 128-bit big-endian integer (RFC 8216 §5.2)."""
    if number < 1:
        raise ValueError(f"segment numbers start at 1, got {number}")
    return (number - 1).to_bytes(BLOCK, "big")


def encrypt_segment(clear: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-128-CBC of ``clear`` with PKCS#7 padding."""
    k = BLOCK - len(clear) % BLOCK  # 1..16: a whole block of padding when aligned
    enc = Cipher(algorithms.AES128(key), modes.CBC(iv)).encryptor()
    # The pad goes in as a second update: no copy of the segment to append it.
    return enc.update(clear) + enc.update(bytes([k]) * k) + enc.finalize()


def decrypt_segment(data: bytes, key: bytes, iv: bytes) -> bytes:
    """The clear bytes of an AES-128 segment (or byte range); ValueError when the
    length or the padding is wrong (a wrong key, most likely)."""
    if not data or len(data) % BLOCK:
        raise ValueError(f"{len(data)} bytes is not a whole number of AES blocks")
    dec = Cipher(algorithms.AES128(key), modes.CBC(iv)).decryptor()
    out = dec.update(data) + dec.finalize()
    k = out[-1]
    if not 1 <= k <= BLOCK or out[-k:] != bytes([k]) * k:
        raise ValueError("bad PKCS#7 padding: not this key, or not AES-128 CBC")
    return out[:-k]


def iframe_range_end(clear: bytes, iframe_size: int) -> int:
    """The length of the encrypted byte range that holds the first ``iframe_size``
    clear bytes as a complete AES-128 message (module docstring): a multiple of 16,
    at most the encrypted segment's length."""
    if not 0 < iframe_size <= len(clear):
        raise ValueError(f"I-frame size {iframe_size} outside a {len(clear)}-byte segment")
    end = -(-iframe_size // BLOCK) * BLOCK
    while end <= len(clear):
        k = clear[end - 1]
        if 1 <= k <= BLOCK and end - k >= iframe_size and clear[end - k:end] == bytes([k]) * k:
            return end
        end += BLOCK
    return len(clear) + BLOCK - len(clear) % BLOCK  # the whole (padded) segment


def encrypt_renditions(out_dir: Path, key: ContentKey, renditions: Sequence[Rendition],
                       segments: Sequence[Segment]) -> tuple[list[Rendition], list[Segment]]:
    """Encrypt, in place under ``out_dir/{rendition}/``, every media segment of the
    audio and video renditions; returns the models with the encrypted sizes, the
    I-frame ranges that decrypt alone, the bitrates of those sizes, and the
    renditions marked ``aes-128`` with the key's KID. Text renditions are
    returned as they were."""
    if key.scheme != AES_128:
        raise ValueError(f"an {key.scheme} key is not an aes-128 key")
    kinds = {r.id: r.kind for r in renditions}
    out_segments: list[Segment] = []
    for s in segments:
        if kinds.get(s.rendition_id, "text") == "text":
            out_segments.append(s)
            continue
        path = out_dir / s.rendition_id / f"{s.number}.m4s"
        clear = path.read_bytes()
        iframe = iframe_range_end(clear, s.iframe_size) if s.iframe_size > 0 else 0
        sealed = encrypt_segment(clear, key.key, sequence_iv(s.number))
        # Same name, same directory: the work directory is private until publish.
        path.write_bytes(sealed)
        out_segments.append(replace(s, size=len(sealed), iframe_size=iframe))
    by_rendition: dict[str, list[Segment]] = {}
    for s in out_segments:
        by_rendition.setdefault(s.rendition_id, []).append(s)
    out_renditions: list[Rendition] = []
    for r in renditions:
        if r.kind == "text":
            out_renditions.append(r)
            continue
        own = by_rendition.get(r.id, [])
        # The manifests' BANDWIDTH is of the bytes served: the padded ones.
        out_renditions.append(replace(
            r, encryption=AES_128, key_id=key.kid_hex,
            avg_bitrate=average_bitrate(own, r.timescale),
            peak_bitrate=peak_bitrate(own, r.timescale)))
    return out_renditions, out_segments
