// AV1 in ISO-BMFF (AV1 Codec ISO Media File Format Binding, "AV1-ISOBMFF"):
// the av1C record (§2.3) built from the encoder's sequence header OBU, samples as
// temporal units without temporal delimiters (§2.4), and sync-sample detection
// (§2.4: a key frame shown at once). Everything parses untrusted bytes: reads are
// bounds-checked and failures raise InvalidDataError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cdlc {

// The sequence header fields av1C and the codecs parameter string carry
// (AV1 spec §5.5, color_config §5.5.2).
struct Av1SequenceInfo {
    uint8_t seq_profile = 0;
    uint8_t seq_level_idx_0 = 0;
    uint8_t seq_tier_0 = 0;
    bool reduced_still_picture_header = false;
    bool high_bitdepth = false;
    bool twelve_bit = false;
    bool monochrome = false;
    uint8_t chroma_subsampling_x = 1;
    uint8_t chroma_subsampling_y = 1;
    uint8_t chroma_sample_position = 0;
    bool color_description_present = false;
    uint8_t color_primaries = 2;  // 2 = unspecified (AV1 spec §6.4.2)
    uint8_t transfer_characteristics = 2;
    uint8_t matrix_coefficients = 2;
    bool color_range = false;
};

// Parses the payload of a sequence header OBU (the bytes after its OBU header and size).
Av1SequenceInfo parse_av1_sequence_header(const uint8_t* payload, size_t size);

// AV1CodecConfigurationRecord (av1C, AV1-ISOBMFF §2.3.3) from encoder extradata:
// a sequence of low-overhead OBUs holding a sequence header (as libsvtav1 gives with
// a global header) is turned into a record whose configOBUs is that sequence header;
// an existing record (first byte 0x81) is returned as is.
// Throws InvalidDataError when no sequence header OBU is found or it is malformed.
std::vector<uint8_t> av1_decoder_config(const uint8_t* extradata, size_t size);

// The sequence header fields of an av1C record (its configOBUs' sequence header).
Av1SequenceInfo av1_config_sequence_info(const std::vector<uint8_t>& record);

// One temporal unit (encoder packet) as an ISO-BMFF sample: temporal delimiter and
// padding OBUs removed (§2.4), every other OBU kept as is.
std::vector<uint8_t> av1_sample_from_temporal_unit(const uint8_t* data, size_t size);

// True when the temporal unit's first frame is a key frame with show_frame = 1,
// i.e. a sync sample (§2.4). reduced_still_picture_header comes from the sequence.
bool av1_is_sync_sample(const uint8_t* data, size_t size, bool reduced_still_picture_header);

}  // namespace cdlc
