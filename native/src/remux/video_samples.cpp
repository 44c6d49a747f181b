#include "remux/video_samples.h"

namespace cdlc::remux {

std::vector<uint8_t> inband_parameter_sets(const uint8_t* d, size_t n, bool hevc) {
    std::vector<uint8_t> out;
    for (const NalSpan& s : split_annexb(d, n)) {
        const int type = nal_type(s, hevc);
        if (is_parameter_set_or_aud(type, hevc) && !is_aud(type, hevc)) {
            const uint8_t sc[4] = {0, 0, 0, 1};
            out.insert(out.end(), sc, sc + 4);
            out.insert(out.end(), s.data, s.data + s.size);
        }
    }
    return out;
}

}  // namespace cdlc::remux
