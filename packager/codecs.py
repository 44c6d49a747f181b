"""RFC 6381 codec strings from the real decoder configuration.

The strings go into HLS CODECS (RFC 8216 §4.3.4.2) and DASH @codecs; players
decide from them whether they can play a rendition, so they are read from the
stream's own avcC / SPS, hvcC, AudioSpecificConfig or av1C, never guessed.

Every parser works on untrusted bytes and raises ValueError on anything malformed.
"""

from __future__ import annotations

__all__ = ["codec_string"]


class _Bits:
    """MSB-first bit reader; ValueError past the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > len(self.data) * 8:
            raise ValueError("bitstream truncated")
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data) * 8:
            raise ValueError("bitstream truncated")
        self.pos += n

    def left(self) -> int:
        return len(self.data) * 8 - self.pos


def _rbsp(nal: bytes) -> bytes:
    """Drop emulation prevention bytes (H.264 §7.4.1: 00 00 03 -> 00 00)."""
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        zeros = zeros + 1 if b == 0 else 0
        out.append(b)
    return bytes(out)


def _annexb_nals(data: bytes) -> list[bytes]:
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        i = nxt
    return nals


def _is_annexb(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


# ---- H.264 (ISO/IEC 14496-15 §5.3.3, RFC 6381 §3.3) ---------------------------

def _avc(extradata: bytes) -> str:
    if extradata[:1] == b"\x01":
        if len(extradata) < 4:
            raise ValueError("avcC too short")
        profile, compat, level = extradata[1], extradata[2], extradata[3]
    elif _is_annexb(extradata):
        sps = next((n for n in _annexb_nals(extradata) if n[0] & 0x1F == 7), None)
        if sps is None or len(sps) < 4:
            raise ValueError("no H.264 SPS in extradata")
        profile, compat, level = sps[1], sps[2], sps[3]
    else:
        raise ValueError("H.264 extradata is neither avcC nor Annex B")
    if profile == 0 or level == 0:
        raise ValueError("H.264 profile/level is zero")
    return f"avc1.{profile:02X}{compat:02X}{level:02X}"


# ---- HEVC (ISO/IEC 14496-15 Annex E.3) -----------------------------------------

def _hevc_fields_from_sps(sps: bytes) -> tuple[int, int, int, int, int, bytes]:
    """profile_space, tier, profile_idc, compat flags, level, constraint bytes from
    an SPS NAL unit (H.265 §7.3.2.2.1 and profile_tier_level §7.3.3)."""
    r = _Bits(_rbsp(sps[2:]))  # 2-byte NAL unit header
    r.skip(4)  # sps_video_parameter_set_id
    r.skip(3)  # sps_max_sub_layers_minus1
    r.skip(1)  # sps_temporal_id_nesting_flag
    space, tier, profile = r.read(2), r.read(1), r.read(5)
    compat = r.read(32)
    constraints = r.read(48).to_bytes(6, "big")
    level = r.read(8)
    return space, tier, profile, compat, level, constraints


def _hevc(extradata: bytes) -> str:
    if extradata[:1] == b"\x01":
        if len(extradata) < 13:
            raise ValueError("hvcC too short")
        b = extradata[1]
        space, tier, profile = b >> 6, (b >> 5) & 1, b & 0x1F
        compat = int.from_bytes(extradata[2:6], "big")
        constraints = extradata[6:12]
        level = extradata[12]
    elif _is_annexb(extradata):
        sps = next((n for n in _annexb_nals(extradata) if len(n) > 2 and (n[0] >> 1) & 0x3F == 33),
                   None)
        if sps is None:
            raise ValueError("no HEVC SPS in extradata")
        space, tier, profile, compat, level, constraints = _hevc_fields_from_sps(sps)
    else:
        raise ValueError("HEVC extradata is neither hvcC nor Annex B")
    if profile == 0:
        raise ValueError("HEVC general_profile_idc is zero")
    # Compatibility flags are written in reverse bit order, hex, no leading zeros.
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    parts = [
        "hvc1",
        ("", "A", "B", "C")[space] + str(profile),
        f"{reversed_compat:X}",
        ("L", "H")[tier] + str(level),
    ]
    trimmed = constraints.rstrip(b"\x00")
    parts += [f"{c:02X}" for c in trimmed]
    return ".".join(parts)


# ---- AAC (ISO/IEC 14496-3 §1.6.2.1, RFC 6381 §3.3) -----------------------------

_SAMPLING_ESCAPE = 15


def _aac_object_type(r: _Bits) -> int:
    aot = r.read(5)
    return 32 + r.read(6) if aot == 31 else aot


def _aac(extradata: bytes) -> str:
    if len(extradata) < 2:
        raise ValueError("AudioSpecificConfig too short")
    r = _Bits(extradata)
    aot = _aac_object_type(r)
    if aot == 0:
        raise ValueError("AudioSpecificConfig: audioObjectType 0 is invalid")
    if r.read(4) == _SAMPLING_ESCAPE:
        r.skip(24)
    r.skip(4)  # channelConfiguration
    if aot in (5, 29):
        return f"mp4a.40.{aot}"  # explicit hierarchical SBR / PS signalling
    # Backward-compatible explicit signalling (§1.6.5.2): after GASpecificConfig,
    # syncExtensionType 0x2B7 -> extension AOT 5 with sbrPresentFlag, then 0x548 for PS.
    if aot == 2 and r.left() >= 16:
        r.skip(3)  # GASpecificConfig of AAC LC: frameLengthFlag, dependsOnCoreCoder, extensionFlag
        if r.left() >= 16 and r.read(11) == 0x2B7:
            ext = _aac_object_type(r)
            if ext == 5 and r.read(1):
                if r.read(4) == _SAMPLING_ESCAPE:
                    r.skip(24)
                if r.left() >= 12 and r.read(11) == 0x548 and r.read(1):
                    return "mp4a.40.29"
                return "mp4a.40.5"
    return f"mp4a.40.{aot}"


# ---- AV1 (AV1 Codec ISOBMFF binding §2.3.3, Annex A codecs parameter) ----------

_OBU_SEQUENCE_HEADER = 1


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise ValueError("AV1 OBU size truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise ValueError("AV1 OBU size longer than 8 bytes")


def _sequence_header_payload(obus: bytes) -> bytes | None:
    """The payload of the first sequence header OBU in `obus` (av1C configOBUs)."""
    pos = 0
    while pos < len(obus):
        header = obus[pos]
        obu_type, extension, has_size = (header >> 3) & 0x0F, header & 0x04, header & 0x02
        pos += 2 if extension else 1
        size = len(obus) - pos
        if has_size:
            size, pos = _leb128(obus, pos)
        if pos + size > len(obus):
            raise ValueError("AV1 OBU runs past the end of av1C")
        if obu_type == _OBU_SEQUENCE_HEADER:
            return obus[pos:pos + size]
        pos += size
    return None


def _uvlc(r: _Bits) -> None:
    zeros = 0
    while r.read(1) == 0:
        zeros += 1
        if zeros >= 32:
            return
    r.skip(zeros)


def _av1_colour(seq: bytes) -> tuple[int, int, int, bool]:
    """(color_primaries, transfer_characteristics, matrix_coefficients, full range)
    from a sequence header OBU payload (AV1 spec §5.5); 2 (unspecified) where the
    stream has no colour description. Skips the fields before color_config."""
    r = _Bits(seq)
    profile = r.read(3)
    r.skip(1)  # still_picture
    reduced = r.read(1)
    if reduced:
        r.skip(5)  # seq_level_idx[0]
    else:
        decoder_model, delay_length = False, 0
        if r.read(1):  # timing_info_present_flag
            r.skip(64)
            if r.read(1):  # equal_picture_interval
                _uvlc(r)
            decoder_model = bool(r.read(1))
            if decoder_model:
                delay_length = r.read(5) + 1
                r.skip(32 + 10)
        initial_display_delay = r.read(1)
        for _ in range(r.read(5) + 1):
            r.skip(12)
            if r.read(5) > 7:
                r.skip(1)  # seq_tier
            if decoder_model and r.read(1):
                r.skip(2 * delay_length + 1)
            if initial_display_delay and r.read(1):
                r.skip(4)
    width_bits, height_bits = r.read(4) + 1, r.read(4) + 1
    r.skip(width_bits + height_bits)
    if not reduced and r.read(1):  # frame_id_numbers_present_flag
        r.skip(7)
    r.skip(3)
    if not reduced:
        r.skip(4)
        order_hint = r.read(1)
        if order_hint:
            r.skip(2)
        force_screen_content = 2 if r.read(1) else r.read(1)
        if force_screen_content and not r.read(1):
            r.skip(1)
        if order_hint:
            r.skip(3)
    r.skip(3)
    high_bitdepth = r.read(1)
    if profile == 2 and high_bitdepth:
        r.skip(1)
    mono = 0 if profile == 1 else r.read(1)
    cp = tc = mc = 2
    if r.read(1):  # color_description_present_flag
        cp, tc, mc = r.read(8), r.read(8), r.read(8)
    if not mono and cp == 1 and tc == 13 and mc == 0:
        return cp, tc, mc, True  # sRGB: full range implied
    return cp, tc, mc, bool(r.read(1))


def _av1(extradata: bytes) -> str:
    """av01.P.LLT.DD, plus .M.CCC.cp.tc.mc.F when any of those differ from the
    defaults (AV1-ISOBMFF "Codecs Parameter String": 0, 110, 01, 01, 01, 0). A
    stream without a colour description (primaries etc. 2, unspecified) counts as
    the default: nothing in it asks a player for anything but BT.709 handling."""
    if len(extradata) < 4 or extradata[0] != 0x81:
        raise ValueError("av1C missing or not version 1")
    b1, b2 = extradata[1], extradata[2]
    profile, level = b1 >> 5, b1 & 0x1F
    tier = "H" if b2 & 0x80 else "M"
    high_bitdepth, twelve_bit = (b2 >> 6) & 1, (b2 >> 5) & 1
    mono, sub_x, sub_y, position = (b2 >> 4) & 1, (b2 >> 3) & 1, (b2 >> 2) & 1, b2 & 3
    depth = 12 if (profile == 2 and high_bitdepth and twelve_bit) else (10 if high_bitdepth else 8)
    short = f"av01.{profile}.{level:02d}{tier}.{depth:02d}"
    seq = _sequence_header_payload(extradata[4:])
    cp, tc, mc, full = _av1_colour(seq) if seq is not None else (2, 2, 2, False)
    if (cp, tc, mc) == (2, 2, 2):
        cp = tc = mc = 1
    chroma = f"{sub_x}{sub_y}{position if sub_x and sub_y else 0}"
    if (mono, chroma, cp, tc, mc, full) == (0, "110", 1, 1, 1, False):
        return short
    return f"{short}.{mono}.{chroma}.{cp:02d}.{tc:02d}.{mc:02d}.{int(full)}"


def codec_string(codec: str, extradata: bytes) -> str:
    """RFC 6381 string for `codec` ("h264", "hevc", "aac", "opus", "av1") from its
    decoder configuration (avcC or Annex B SPS/PPS, hvcC or Annex B VPS/SPS/PPS,
    AudioSpecificConfig, OpusHead/none, av1C; none for "webvtt": "wvtt"). Raises
    ValueError for unknown codecs and malformed configuration."""
    data = bytes(extradata)
    if codec == "h264":
        return _avc(data)
    if codec in ("hevc", "h265"):
        return _hevc(data)
    if codec == "aac":
        return _aac(data)
    if codec == "opus":
        return "opus"
    if codec == "av1":
        return _av1(data)
    if codec == "webvtt":
        # ISO/IEC 14496-30 §7.5 sample entry 'wvtt'; manifests leave text out of
        # CODECS (packager.hls), so this only names the format in the metadata.
        return "wvtt"
    raise ValueError(f"no codec string for codec {codec!r}")
