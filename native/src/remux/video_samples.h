// Video samples of the copy path in CMAF form: NAL units rewritten to 4-byte
// lengths without in-band copies of the parameter sets (MPEG-TS repeats them), the
// parameter sets of a stream that carries them only in band, and the HEVC NAL
// unit types that decide which keyframes are sync samples.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec/nal.h"
#include "common/error.h"

namespace cdlc::remux {

inline bool is_parameter_set_or_aud(int type, bool hevc) {
    if (hevc) return type == 32 || type == 33 || type == 34 || type == 35;  // VPS SPS PPS AUD
    return type == 7 || type == 8 || type == 9;                            // SPS PPS AUD
}

inline int nal_type(const NalSpan& n, bool hevc) {
    return hevc ? (n.data[0] >> 1) & 0x3F : n.data[0] & 0x1F;
}

inline bool is_aud(int type, bool hevc) { return hevc ? type == 35 : type == 9; }

// Brings one video packet into CMAF form (ISO/IEC 14496-15 §5.3.2 / §8.3.2):
// 4-byte NAL lengths; AUDs and parameter sets identical to the sample entry's
// dropped (MPEG-TS repeats them before every IDR). Parameter sets that differ are
// kept so a mid-stream change still decodes.
class VideoNormaliser {
public:
    bool hevc = false;
    bool annexb = false;
    int nal_length_size = 4;
    std::vector<std::vector<uint8_t>> config_sets;

    // MP4/MKV with 4-byte lengths: samples are already in CMAF form.
    bool passthrough() const { return !annexb && nal_length_size == 4; }

    std::vector<uint8_t> operator()(const uint8_t* d, size_t n) const {
        if (passthrough()) return std::vector<uint8_t>(d, d + n);
        const std::vector<NalSpan> nals = annexb ? split_annexb(d, n) : split_sized(d, n);
        std::vector<uint8_t> out;
        out.reserve(n + 4 * nals.size());
        for (const NalSpan& s : nals) {
            const int type = nal_type(s, hevc);
            if (annexb && is_parameter_set_or_aud(type, hevc) && (is_aud(type, hevc) || in_config(s)))
                continue;
            const uint32_t len = static_cast<uint32_t>(s.size);
            const uint8_t hdr[4] = {uint8_t(len >> 24), uint8_t(len >> 16), uint8_t(len >> 8), uint8_t(len)};
            out.insert(out.end(), hdr, hdr + 4);
            out.insert(out.end(), s.data, s.data + s.size);
        }
        return out;
    }

private:
    bool in_config(const NalSpan& s) const {
        return std::any_of(config_sets.begin(), config_sets.end(), [&](const std::vector<uint8_t>& c) {
            return c.size() == s.size && std::equal(c.begin(), c.end(), s.data);
        });
    }
    std::vector<NalSpan> split_sized(const uint8_t* d, size_t n) const {
        std::vector<NalSpan> nals;
        size_t i = 0;
        while (i < n) {
            if (n - i < size_t(nal_length_size)) throw InvalidDataError("video packet truncated in a NAL length");
            size_t len = 0;
            for (int k = 0; k < nal_length_size; ++k) len = (len << 8) | d[i + k];
            i += nal_length_size;
            if (len > n - i) throw InvalidDataError("NAL unit length runs past the end of the packet");
            if (len) nals.push_back({d + i, len});
            i += len;
        }
        return nals;
    }
};

// Parameter sets found in an Annex B access unit, as an Annex B buffer (for
// sources that carry them only in band).
std::vector<uint8_t> inband_parameter_sets(const uint8_t* d, size_t n, bool hevc);

// HEVC NAL unit types (ITU-T H.265 Table 7-1).
constexpr int kHevcRaslN = 8, kHevcRaslR = 9, kHevcBlaWLp = 16, kHevcCra = 21, kHevcIdrWRadl = 19,
              kHevcIdrNLp = 20;

// Type of the first VCL NAL unit (< 32) of a 4-byte length-prefixed HEVC sample; -1
// when there is none. `read(offset, n, buf)` fetches sample bytes (a mapped file is
// read with pread, never through the mapping: see MappedFile).
template <typename Read>
int first_hevc_vcl_type(uint64_t size, Read read) {
    uint64_t pos = 0;
    for (int guard = 0; pos + 5 <= size && guard < 64; ++guard) {
        uint8_t h[5];
        if (!read(pos, 5, h)) return -1;
        const uint64_t len = (uint64_t(h[0]) << 24) | (uint64_t(h[1]) << 16) | (uint64_t(h[2]) << 8) | h[3];
        const int type = (h[4] >> 1) & 0x3F;
        if (type < 32) return type;
        pos += 4 + len;
    }
    return -1;
}

}  // namespace cdlc::remux
