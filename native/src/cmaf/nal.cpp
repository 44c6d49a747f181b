// Placeholder so the tree links; the CMAF owner replaces it.
#include "cmaf/nal.h"
#include "common/error.h"
namespace cdlc {
bool is_annexb(const uint8_t* d, size_t n) {
    return (n >= 3 && d[0] == 0 && d[1] == 0 && d[2] == 1) ||
           (n >= 4 && d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 1);
}
std::vector<uint8_t> annexb_to_length_prefixed(const uint8_t* d, size_t n) {
    if (!is_annexb(d, n)) return std::vector<uint8_t>(d, d + n);
    throw Error("annexb_to_length_prefixed not implemented");
}
std::vector<uint8_t> avc_decoder_config(const uint8_t*, size_t) { throw Error("avc_decoder_config not implemented"); }
std::vector<uint8_t> hevc_decoder_config(const uint8_t*, size_t) { throw Error("hevc_decoder_config not implemented"); }
}
