// H.264/HEVC bitstream form conversions (ISO/IEC 14496-15). Encoders through
// libavcodec and MPEG-TS demuxing give Annex B (start codes); CMAF wants 4-byte
// length-prefixed NAL units and an avcC/hvcC decoder configuration record.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cdlc {

// True if data starts with a 00 00 01 or 00 00 00 01 start code.
bool is_annexb(const uint8_t* data, size_t size);

// Annex B -> 4-byte length-prefixed NAL units. Input already length-prefixed
// (is_annexb false) is returned unchanged. Call it only on data known to be Annex B
// (encoder output without a global header, MPEG-TS): a length-prefixed sample whose
// first NAL is 256-511 bytes long starts with 00 00 01 too and would be mangled.
std::vector<uint8_t> annexb_to_length_prefixed(const uint8_t* data, size_t size);

// AVCDecoderConfigurationRecord from encoder/demuxer extradata: Annex B SPS/PPS
// is converted, an ISO record (first byte 1) is returned as is.
// Throws InvalidDataError when no SPS/PPS is found.
std::vector<uint8_t> avc_decoder_config(const uint8_t* extradata, size_t size);

// HEVCDecoderConfigurationRecord from Annex B VPS/SPS/PPS or an ISO record.
// Throws InvalidDataError when no VPS/SPS/PPS is found or the SPS is malformed.
std::vector<uint8_t> hevc_decoder_config(const uint8_t* extradata, size_t size);

// An HEVC access unit in Annex B as an 'hvc1' sample: 4-byte length-prefixed NAL
// units without VPS/SPS/PPS or access unit delimiters (hvc1 keeps parameter sets
// in the hvcC only, 14496-15 §8.4.1). Length-prefixed input is returned unchanged.
std::vector<uint8_t> hevc_sample_from_annexb(const uint8_t* data, size_t size);

// True when the first VCL NAL unit of a length-prefixed HEVC sample is an IDR
// (IDR_W_RADL or IDR_N_LP: a sync sample). A CRA is not counted: its leading
// pictures may reference frames before it, and closed GOPs never make one.
bool hevc_is_idr_sample(const uint8_t* data, size_t size);

// --- helpers shared with the copy path (additive to the original contract) ---

// One NAL unit inside a larger buffer (no start code, no length prefix).
struct NalSpan {
    const uint8_t* data;
    size_t size;
};

// NAL units of an Annex B buffer, in order; trailing zero bytes (the leading byte
// of a following 4-byte start code, H.264 §B.1.1 trailing_zero_8bits) are trimmed.
std::vector<NalSpan> split_annexb(const uint8_t* data, size_t size);

// NAL units of a 4-byte length-prefixed buffer. Throws InvalidDataError when a
// length runs past the end.
std::vector<NalSpan> split_length_prefixed(const uint8_t* data, size_t size);

// Parameter sets (SPS/PPS, or VPS/SPS/PPS) listed in an avcC / hvcC record, and
// the record's NAL length size (1, 2 or 4). Throw InvalidDataError on a malformed
// record.
std::vector<std::vector<uint8_t>> decoder_config_parameter_sets(const std::vector<uint8_t>& record, bool hevc);
int decoder_config_nal_length_size(const std::vector<uint8_t>& record, bool hevc);

// Removes emulation prevention bytes (00 00 03 -> 00 00), H.264 §7.4.1.
std::vector<uint8_t> nal_to_rbsp(const uint8_t* data, size_t size);

}  // namespace cdlc
