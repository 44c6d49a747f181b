// Annex B <-> ISO (length-prefixed) conversions and decoder configuration records,
// ISO/IEC 14496-15 §5.3.3 (AVCDecoderConfigurationRecord) and §8.3.3
// (HEVCDecoderConfigurationRecord). All parsing runs on untrusted input: every read
// is bounds-checked and failures raise InvalidDataError.
#include "codec/nal.h"

#include <algorithm>
#include <cstring>

#include "codec/bit_reader.h"
#include "common/error.h"

namespace cdlc {

namespace {

// Offset of the next 00 00 01 at or after `from`, or `size` when there is none.
size_t find_start_code(const uint8_t* d, size_t size, size_t from) {
    size_t i = from;
    while (i + 3 <= size) {
        // memchr finds candidate zero bytes fast; most of a slice is not zeros.
        const void* z = std::memchr(d + i, 0, size - i);
        if (!z) return size;
        i = static_cast<size_t>(static_cast<const uint8_t*>(z) - d);
        if (i + 3 > size) return size;
        if (d[i + 1] == 0 && d[i + 2] == 1) return i;
        ++i;
    }
    return size;
}

constexpr int kAvcSps = 7, kAvcPps = 8, kAvcSpsExt = 13;
constexpr int kHevcVps = 32, kHevcSps = 33, kHevcPps = 34, kHevcAud = 35;
constexpr int kHevcIdrWRadl = 19, kHevcIdrNLp = 20;

int avc_type(const NalSpan& n) { return n.data[0] & 0x1F; }
int hevc_type(const NalSpan& n) { return (n.data[0] >> 1) & 0x3F; }

// Fields of an H.264 SPS that the avcC needs (H.264 §7.3.2.1.1).
struct AvcSpsFacts {
    uint8_t profile_idc = 0, constraints = 0, level_idc = 0;
    uint32_t chroma_format_idc = 1, bit_depth_luma_minus8 = 0, bit_depth_chroma_minus8 = 0;
};

bool avc_high_profile(uint8_t profile_idc) {
    // Profiles that carry chroma_format_idc in the SPS and need the avcC extension
    // fields (14496-15 §5.3.3.1.2).
    switch (profile_idc) {
        case 100: case 110: case 122: case 244: case 44: case 83: case 86: case 118:
        case 128: case 138: case 139: case 134: case 135: case 144:
            return true;
        default:
            return false;
    }
}

AvcSpsFacts parse_avc_sps(const NalSpan& sps) {
    const std::vector<uint8_t> rbsp = nal_to_rbsp(sps.data + 1, sps.size - 1);
    BitReader br(rbsp.data(), rbsp.size());
    AvcSpsFacts f;
    f.profile_idc = static_cast<uint8_t>(br.bits(8));
    f.constraints = static_cast<uint8_t>(br.bits(8));
    f.level_idc = static_cast<uint8_t>(br.bits(8));
    if (br.ue() > 31) throw InvalidDataError("H.264 SPS: seq_parameter_set_id out of range");
    if (avc_high_profile(f.profile_idc)) {
        f.chroma_format_idc = br.ue();
        if (f.chroma_format_idc > 3) throw InvalidDataError("H.264 SPS: chroma_format_idc out of range");
        if (f.chroma_format_idc == 3) br.skip(1);  // separate_colour_plane_flag
        f.bit_depth_luma_minus8 = br.ue();
        f.bit_depth_chroma_minus8 = br.ue();
        if (f.bit_depth_luma_minus8 > 6 || f.bit_depth_chroma_minus8 > 6)
            throw InvalidDataError("H.264 SPS: bit depth out of range");
    }
    return f;
}

// Fields of an H.265 SPS that the hvcC needs (H.265 §7.3.2.2, §7.3.3).
struct HevcSpsFacts {
    uint8_t profile_space_tier_idc = 0;  // general_profile_space(2) tier(1) profile_idc(5)
    uint32_t compat_flags = 0;
    uint64_t constraint_flags = 0;       // 48 bits
    uint8_t level_idc = 0;
    uint32_t max_sub_layers = 1;
    uint32_t temporal_id_nested = 0;
    uint32_t chroma_format_idc = 1, bit_depth_luma_minus8 = 0, bit_depth_chroma_minus8 = 0;
};

HevcSpsFacts parse_hevc_sps(const NalSpan& sps) {
    if (sps.size < 3) throw InvalidDataError("H.265 SPS too short");
    const std::vector<uint8_t> rbsp = nal_to_rbsp(sps.data + 2, sps.size - 2);  // 2-byte NAL header
    BitReader br(rbsp.data(), rbsp.size());
    HevcSpsFacts f;
    br.skip(4);  // sps_video_parameter_set_id
    const uint32_t max_sub_layers_minus1 = static_cast<uint32_t>(br.bits(3));
    if (max_sub_layers_minus1 > 6) throw InvalidDataError("H.265 SPS: sps_max_sub_layers_minus1 out of range");
    f.max_sub_layers = max_sub_layers_minus1 + 1;
    f.temporal_id_nested = br.bit();
    // profile_tier_level(1, max_sub_layers_minus1), §7.3.3
    f.profile_space_tier_idc = static_cast<uint8_t>(br.bits(8));
    f.compat_flags = static_cast<uint32_t>(br.bits(32));
    f.constraint_flags = br.bits(48);
    f.level_idc = static_cast<uint8_t>(br.bits(8));
    bool profile_present[8] = {}, level_present[8] = {};
    for (uint32_t i = 0; i < max_sub_layers_minus1; ++i) {
        profile_present[i] = br.bit();
        level_present[i] = br.bit();
    }
    if (max_sub_layers_minus1 > 0)
        for (uint32_t i = max_sub_layers_minus1; i < 8; ++i) br.skip(2);
    for (uint32_t i = 0; i < max_sub_layers_minus1; ++i) {
        if (profile_present[i]) br.skip(88);
        if (level_present[i]) br.skip(8);
    }
    if (br.ue() > 15) throw InvalidDataError("H.265 SPS: sps_seq_parameter_set_id out of range");
    f.chroma_format_idc = br.ue();
    if (f.chroma_format_idc > 3) throw InvalidDataError("H.265 SPS: chroma_format_idc out of range");
    if (f.chroma_format_idc == 3) br.skip(1);
    br.ue();  // pic_width_in_luma_samples
    br.ue();  // pic_height_in_luma_samples
    if (br.bit()) {  // conformance_window_flag
        br.ue(); br.ue(); br.ue(); br.ue();
    }
    f.bit_depth_luma_minus8 = br.ue();
    f.bit_depth_chroma_minus8 = br.ue();
    if (f.bit_depth_luma_minus8 > 8 || f.bit_depth_chroma_minus8 > 8)
        throw InvalidDataError("H.265 SPS: bit depth out of range");
    return f;
}

void put_u16_len(std::vector<uint8_t>& out, const NalSpan& n) {
    if (n.size > 0xFFFF) throw InvalidDataError("parameter set larger than 65535 bytes");
    out.push_back(static_cast<uint8_t>(n.size >> 8));
    out.push_back(static_cast<uint8_t>(n.size));
    out.insert(out.end(), n.data, n.data + n.size);
}

}  // namespace

bool is_annexb(const uint8_t* d, size_t n) {
    return (n >= 3 && d[0] == 0 && d[1] == 0 && d[2] == 1) ||
           (n >= 4 && d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 1);
}

std::vector<NalSpan> split_annexb(const uint8_t* d, size_t size) {
    std::vector<NalSpan> nals;
    size_t sc = find_start_code(d, size, 0);
    while (sc < size) {
        const size_t begin = sc + 3;
        const size_t next = find_start_code(d, size, begin);
        size_t end = next;
        while (end > begin && d[end - 1] == 0) --end;  // trailing_zero_8bits / 4-byte start code
        if (end > begin) nals.push_back({d + begin, end - begin});
        sc = next;
    }
    return nals;
}

std::vector<NalSpan> split_length_prefixed(const uint8_t* d, size_t size) {
    std::vector<NalSpan> nals;
    size_t i = 0;
    while (i < size) {
        if (size - i < 4) throw InvalidDataError("length-prefixed NAL stream truncated");
        const uint32_t len = (uint32_t(d[i]) << 24) | (uint32_t(d[i + 1]) << 16) |
                             (uint32_t(d[i + 2]) << 8) | d[i + 3];
        i += 4;
        if (len > size - i) throw InvalidDataError("NAL unit length runs past the end of the packet");
        if (len > 0) nals.push_back({d + i, len});
        i += len;
    }
    return nals;
}

std::vector<uint8_t> nal_to_rbsp(const uint8_t* d, size_t size) {
    std::vector<uint8_t> out;
    out.reserve(size);
    int zeros = 0;
    for (size_t i = 0; i < size; ++i) {
        if (zeros >= 2 && d[i] == 3) {
            zeros = 0;
            continue;
        }
        zeros = d[i] == 0 ? zeros + 1 : 0;
        out.push_back(d[i]);
    }
    return out;
}

std::vector<uint8_t> annexb_to_length_prefixed(const uint8_t* d, size_t n) {
    if (!is_annexb(d, n)) return std::vector<uint8_t>(d, d + n);
    const std::vector<NalSpan> nals = split_annexb(d, n);
    size_t total = 0;
    for (const NalSpan& s : nals) total += 4 + s.size;
    std::vector<uint8_t> out;
    out.reserve(total);
    for (const NalSpan& s : nals) {
        const uint32_t len = static_cast<uint32_t>(s.size);
        const uint8_t hdr[4] = {uint8_t(len >> 24), uint8_t(len >> 16), uint8_t(len >> 8), uint8_t(len)};
        out.insert(out.end(), hdr, hdr + 4);
        out.insert(out.end(), s.data, s.data + s.size);
    }
    return out;
}

std::vector<uint8_t> hevc_sample_from_annexb(const uint8_t* d, size_t n) {
    if (!is_annexb(d, n)) return std::vector<uint8_t>(d, d + n);
    std::vector<uint8_t> out;
    out.reserve(n + 16);
    for (const NalSpan& s : split_annexb(d, n)) {
        const int type = hevc_type(s);
        if (type == kHevcVps || type == kHevcSps || type == kHevcPps || type == kHevcAud) continue;
        const uint32_t len = static_cast<uint32_t>(s.size);
        const uint8_t hdr[4] = {uint8_t(len >> 24), uint8_t(len >> 16), uint8_t(len >> 8), uint8_t(len)};
        out.insert(out.end(), hdr, hdr + 4);
        out.insert(out.end(), s.data, s.data + s.size);
    }
    return out;
}

bool hevc_is_idr_sample(const uint8_t* d, size_t n) {
    for (const NalSpan& s : split_length_prefixed(d, n)) {
        if (s.size < 2) continue;
        const int type = hevc_type(s);
        if (type == kHevcIdrWRadl || type == kHevcIdrNLp) return true;
        if (type < 32) return false;  // the first VCL NAL unit decides
    }
    return false;
}

std::vector<uint8_t> avc_decoder_config(const uint8_t* d, size_t n) {
    if (n >= 7 && d[0] == 1) return std::vector<uint8_t>(d, d + n);  // already an avcC
    if (!is_annexb(d, n)) throw InvalidDataError("H.264 extradata is neither avcC nor Annex B");
    std::vector<NalSpan> sps, pps, sps_ext;
    for (const NalSpan& s : split_annexb(d, n)) {
        switch (avc_type(s)) {
            case kAvcSps: if (s.size >= 4) sps.push_back(s); break;
            case kAvcPps: pps.push_back(s); break;
            case kAvcSpsExt: sps_ext.push_back(s); break;
            default: break;  // x264 puts its version SEI here; it has no place in avcC
        }
    }
    if (sps.empty() || pps.empty()) throw InvalidDataError("H.264 extradata has no SPS/PPS");
    if (sps.size() > 31 || pps.size() > 255 || sps_ext.size() > 255)
        throw InvalidDataError("H.264 extradata has too many parameter sets");
    const AvcSpsFacts f = parse_avc_sps(sps.front());
    std::vector<uint8_t> out;
    out.push_back(1);                    // configurationVersion
    out.push_back(f.profile_idc);        // AVCProfileIndication
    out.push_back(f.constraints);        // profile_compatibility
    out.push_back(f.level_idc);          // AVCLevelIndication
    out.push_back(0xFC | 3);             // lengthSizeMinusOne = 3 (4-byte lengths)
    out.push_back(static_cast<uint8_t>(0xE0 | sps.size()));
    for (const NalSpan& s : sps) put_u16_len(out, s);
    out.push_back(static_cast<uint8_t>(pps.size()));
    for (const NalSpan& s : pps) put_u16_len(out, s);
    if (avc_high_profile(f.profile_idc)) {
        out.push_back(static_cast<uint8_t>(0xFC | f.chroma_format_idc));
        out.push_back(static_cast<uint8_t>(0xF8 | f.bit_depth_luma_minus8));
        out.push_back(static_cast<uint8_t>(0xF8 | f.bit_depth_chroma_minus8));
        out.push_back(static_cast<uint8_t>(sps_ext.size()));
        for (const NalSpan& s : sps_ext) put_u16_len(out, s);
    }
    return out;
}

std::vector<uint8_t> hevc_decoder_config(const uint8_t* d, size_t n) {
    if (n >= 23 && d[0] == 1) return std::vector<uint8_t>(d, d + n);  // already an hvcC
    if (!is_annexb(d, n)) throw InvalidDataError("HEVC extradata is neither hvcC nor Annex B");
    std::vector<NalSpan> vps, sps, pps;
    for (const NalSpan& s : split_annexb(d, n)) {
        if (s.size < 2) continue;
        switch (hevc_type(s)) {
            case kHevcVps: vps.push_back(s); break;
            case kHevcSps: sps.push_back(s); break;
            case kHevcPps: pps.push_back(s); break;
            default: break;
        }
    }
    if (vps.empty() || sps.empty() || pps.empty()) throw InvalidDataError("HEVC extradata has no VPS/SPS/PPS");
    const HevcSpsFacts f = parse_hevc_sps(sps.front());
    std::vector<uint8_t> out;
    out.push_back(1);  // configurationVersion
    out.push_back(f.profile_space_tier_idc);
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(f.compat_flags >> s));
    for (int s = 40; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(f.constraint_flags >> s));
    out.push_back(f.level_idc);
    out.push_back(0xF0);  // reserved(4) + min_spatial_segmentation_idc = 0 (unknown)
    out.push_back(0x00);
    out.push_back(0xFC);  // reserved(6) + parallelismType = 0 (unknown)
    out.push_back(static_cast<uint8_t>(0xFC | f.chroma_format_idc));
    out.push_back(static_cast<uint8_t>(0xF8 | f.bit_depth_luma_minus8));
    out.push_back(static_cast<uint8_t>(0xF8 | f.bit_depth_chroma_minus8));
    out.push_back(0);  // avgFrameRate = 0 (unspecified)
    out.push_back(0);
    // constantFrameRate(2)=0, numTemporalLayers(3), temporalIdNested(1), lengthSizeMinusOne(2)=3
    out.push_back(static_cast<uint8_t>(((f.max_sub_layers & 7) << 3) | (f.temporal_id_nested << 2) | 3));
    out.push_back(3);  // numOfArrays
    const std::pair<int, const std::vector<NalSpan>*> arrays[] = {
        {kHevcVps, &vps}, {kHevcSps, &sps}, {kHevcPps, &pps}};
    for (const auto& [type, list] : arrays) {
        if (list->size() > 0xFFFF) throw InvalidDataError("HEVC extradata has too many parameter sets");
        out.push_back(static_cast<uint8_t>(0x80 | type));  // array_completeness = 1
        out.push_back(static_cast<uint8_t>(list->size() >> 8));
        out.push_back(static_cast<uint8_t>(list->size()));
        for (const NalSpan& s : *list) put_u16_len(out, s);
    }
    return out;
}

std::vector<std::vector<uint8_t>> decoder_config_parameter_sets(const std::vector<uint8_t>& r, bool hevc) {
    std::vector<std::vector<uint8_t>> sets;
    size_t pos = 0;
    auto need = [&](size_t n) {
        if (r.size() - pos < n || pos > r.size()) throw InvalidDataError("decoder configuration record truncated");
    };
    auto take = [&]() {
        need(2);
        const size_t len = (size_t(r[pos]) << 8) | r[pos + 1];
        pos += 2;
        need(len);
        sets.emplace_back(r.begin() + long(pos), r.begin() + long(pos + len));
        pos += len;
    };
    if (!hevc) {
        pos = 5;
        need(1);
        const int nsps = r[pos++] & 0x1F;
        for (int i = 0; i < nsps; ++i) take();
        need(1);
        const int npps = r[pos++];
        for (int i = 0; i < npps; ++i) take();
    } else {
        pos = 22;
        need(1);
        const int arrays = r[pos++];
        for (int a = 0; a < arrays; ++a) {
            need(3);
            const size_t count = (size_t(r[pos + 1]) << 8) | r[pos + 2];
            pos += 3;
            for (size_t i = 0; i < count; ++i) take();
        }
    }
    return sets;
}

int decoder_config_nal_length_size(const std::vector<uint8_t>& r, bool hevc) {
    const size_t at = hevc ? 21 : 4;
    if (r.size() <= at || r[0] != 1) throw InvalidDataError("decoder configuration record truncated");
    const int n = (r[at] & 3) + 1;
    if (n == 3) throw InvalidDataError("NAL length size 3 is not allowed (ISO/IEC 14496-15)");
    return n;
}

}  // namespace cdlc
