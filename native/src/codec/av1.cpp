#include "codec/av1.h"

#include "codec/bit_reader.h"
#include "common/error.h"

namespace cdlc {

namespace {

// OBU types, AV1 spec §6.2.2.
constexpr int kObuSequenceHeader = 1;
constexpr int kObuTemporalDelimiter = 2;
constexpr int kObuFrameHeader = 3;
constexpr int kObuFrame = 6;
constexpr int kObuPadding = 15;

// One OBU of a low-overhead bitstream (§5.2): where it starts, its type, where
// its payload lies.
struct Obu {
    size_t start = 0;
    size_t end = 0;
    int type = 0;
    size_t payload = 0;
};

// leb128() §4.10.5: at most 8 bytes, the value must fit in 32 bits for any size here.
uint64_t read_leb128(const uint8_t* d, size_t size, size_t& pos) {
    uint64_t value = 0;
    for (int i = 0; i < 8; ++i) {
        if (pos >= size) throw InvalidDataError("AV1 OBU size truncated");
        const uint8_t byte = d[pos++];
        value |= uint64_t(byte & 0x7F) << (7 * i);
        if (!(byte & 0x80)) return value;
    }
    throw InvalidDataError("AV1 OBU size longer than 8 bytes");
}

// Splits a temporal unit (or extradata) into its OBUs. An OBU without a size field
// runs to the end of the buffer (§5.3.1, allowed for the last OBU).
std::vector<Obu> split_obus(const uint8_t* d, size_t size) {
    std::vector<Obu> out;
    size_t pos = 0;
    while (pos < size) {
        Obu o;
        o.start = pos;
        const uint8_t header = d[pos++];
        if (header & 0x80) throw InvalidDataError("AV1 OBU forbidden bit set");
        o.type = (header >> 3) & 0x0F;
        const bool extension = (header & 0x04) != 0;
        const bool has_size = (header & 0x02) != 0;
        if (extension) {
            if (pos >= size) throw InvalidDataError("AV1 OBU extension header truncated");
            ++pos;
        }
        uint64_t payload_size = size - pos;
        if (has_size) payload_size = read_leb128(d, size, pos);
        if (payload_size > size - pos) throw InvalidDataError("AV1 OBU runs past the end of its buffer");
        o.payload = pos;
        o.end = pos + static_cast<size_t>(payload_size);
        pos = o.end;
        out.push_back(o);
    }
    return out;
}

// uvlc() §4.10.3.
uint32_t read_uvlc(BitReader& br) {
    int zeros = 0;
    while (br.bit() == 0) {
        if (++zeros >= 32) return UINT32_MAX;
    }
    return static_cast<uint32_t>(br.bits(zeros) + (1ull << zeros) - 1);
}

void parse_color_config(BitReader& br, Av1SequenceInfo& s) {
    s.high_bitdepth = br.bit() != 0;
    int bit_depth = s.high_bitdepth ? 10 : 8;
    if (s.seq_profile == 2 && s.high_bitdepth) {
        s.twelve_bit = br.bit() != 0;
        bit_depth = s.twelve_bit ? 12 : 10;
    }
    s.monochrome = s.seq_profile == 1 ? false : br.bit() != 0;
    s.color_description_present = br.bit() != 0;
    if (s.color_description_present) {
        s.color_primaries = static_cast<uint8_t>(br.bits(8));
        s.transfer_characteristics = static_cast<uint8_t>(br.bits(8));
        s.matrix_coefficients = static_cast<uint8_t>(br.bits(8));
    }
    if (s.monochrome) {
        s.color_range = br.bit() != 0;
        s.chroma_subsampling_x = s.chroma_subsampling_y = 1;
        s.chroma_sample_position = 0;
        return;
    }
    // sRGB (BT.709 primaries, sRGB transfer, identity matrix) is 4:4:4 full range.
    if (s.color_primaries == 1 && s.transfer_characteristics == 13 && s.matrix_coefficients == 0) {
        s.color_range = true;
        s.chroma_subsampling_x = s.chroma_subsampling_y = 0;
        return;
    }
    s.color_range = br.bit() != 0;
    if (s.seq_profile == 0) {
        s.chroma_subsampling_x = s.chroma_subsampling_y = 1;
    } else if (s.seq_profile == 1) {
        s.chroma_subsampling_x = s.chroma_subsampling_y = 0;
    } else if (bit_depth == 12) {
        s.chroma_subsampling_x = static_cast<uint8_t>(br.bit());
        s.chroma_subsampling_y = s.chroma_subsampling_x ? static_cast<uint8_t>(br.bit()) : 0;
    } else {
        s.chroma_subsampling_x = 1;
        s.chroma_subsampling_y = 0;
    }
    if (s.chroma_subsampling_x && s.chroma_subsampling_y)
        s.chroma_sample_position = static_cast<uint8_t>(br.bits(2));
}

const Obu* find_sequence_header(const std::vector<Obu>& obus) {
    for (const Obu& o : obus)
        if (o.type == kObuSequenceHeader) return &o;
    return nullptr;
}

}  // namespace

Av1SequenceInfo parse_av1_sequence_header(const uint8_t* payload, size_t size) {
    BitReader br(payload, size);
    Av1SequenceInfo s;
    s.seq_profile = static_cast<uint8_t>(br.bits(3));
    if (s.seq_profile > 2) throw InvalidDataError("AV1 sequence header: seq_profile " +
                                                  std::to_string(s.seq_profile) + " is reserved");
    br.skip(1);  // still_picture
    s.reduced_still_picture_header = br.bit() != 0;
    if (s.reduced_still_picture_header) {
        s.seq_level_idx_0 = static_cast<uint8_t>(br.bits(5));
    } else {
        bool decoder_model_info_present = false;
        int buffer_delay_length = 0;
        if (br.bit()) {  // timing_info_present_flag
            br.skip(64);  // num_units_in_display_tick, time_scale
            if (br.bit()) read_uvlc(br);  // equal_picture_interval -> num_ticks_per_picture_minus_1
            decoder_model_info_present = br.bit() != 0;
            if (decoder_model_info_present) {
                buffer_delay_length = static_cast<int>(br.bits(5)) + 1;
                br.skip(32 + 5 + 5);  // num_units_in_decoding_tick, two length fields
            }
        }
        const bool initial_display_delay_present = br.bit() != 0;
        const int operating_points = static_cast<int>(br.bits(5)) + 1;
        for (int i = 0; i < operating_points; ++i) {
            br.skip(12);  // operating_point_idc
            const auto level = static_cast<uint8_t>(br.bits(5));
            const auto tier = static_cast<uint8_t>(level > 7 ? br.bit() : 0);
            if (i == 0) {
                s.seq_level_idx_0 = level;
                s.seq_tier_0 = tier;
            }
            if (decoder_model_info_present && br.bit()) {
                br.skip(2 * static_cast<size_t>(buffer_delay_length) + 1);  // delays, low_delay_mode_flag
            }
            if (initial_display_delay_present && br.bit()) br.skip(4);
        }
    }
    const int width_bits = static_cast<int>(br.bits(4)) + 1;
    const int height_bits = static_cast<int>(br.bits(4)) + 1;
    br.skip(static_cast<size_t>(width_bits + height_bits));
    if (!s.reduced_still_picture_header && br.bit()) br.skip(4 + 3);  // frame id lengths
    br.skip(3);  // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if (!s.reduced_still_picture_header) {
        br.skip(4);  // interintra, masked compound, warped motion, dual filter
        const bool order_hint = br.bit() != 0;
        if (order_hint) br.skip(2);  // enable_jnt_comp, enable_ref_frame_mvs
        const bool choose_screen_content = br.bit() != 0;
        uint32_t force_screen_content = 2;  // SELECT_SCREEN_CONTENT_TOOLS
        if (!choose_screen_content) force_screen_content = br.bit();
        if (force_screen_content > 0 && !br.bit()) br.skip(1);  // seq_choose_integer_mv, seq_force_integer_mv
        if (order_hint) br.skip(3);
    }
    br.skip(3);  // enable_superres, enable_cdef, enable_restoration
    parse_color_config(br, s);
    return s;
}

std::vector<uint8_t> av1_decoder_config(const uint8_t* extradata, size_t size) {
    if (!extradata || size == 0) throw InvalidDataError("AV1 track has no sequence header");
    if (extradata[0] == 0x81) {
        if (size < 4) throw InvalidDataError("av1C record too short");
        return std::vector<uint8_t>(extradata, extradata + size);
    }
    const std::vector<Obu> obus = split_obus(extradata, size);
    const Obu* seq = find_sequence_header(obus);
    if (!seq) throw InvalidDataError("AV1 extradata holds no sequence header OBU");
    const Av1SequenceInfo s = parse_av1_sequence_header(extradata + seq->payload, seq->end - seq->payload);
    std::vector<uint8_t> out;
    out.push_back(0x81);  // marker 1, version 1
    out.push_back(static_cast<uint8_t>(s.seq_profile << 5 | (s.seq_level_idx_0 & 0x1F)));
    out.push_back(static_cast<uint8_t>(s.seq_tier_0 << 7 | s.high_bitdepth << 6 | s.twelve_bit << 5 |
                                       s.monochrome << 4 | s.chroma_subsampling_x << 3 |
                                       s.chroma_subsampling_y << 2 | (s.chroma_sample_position & 3)));
    out.push_back(0);  // reserved, initial_presentation_delay_present = 0
    // configOBUs: the sequence header with a size field (§2.3.4 requires one).
    const uint8_t* obu = extradata + seq->start;
    const bool has_size = (obu[0] & 0x02) != 0;
    if (has_size) {
        out.insert(out.end(), obu, extradata + seq->end);
    } else {
        const size_t header_len = seq->payload - seq->start;
        const size_t payload_len = seq->end - seq->payload;
        out.push_back(static_cast<uint8_t>(obu[0] | 0x02));
        out.insert(out.end(), obu + 1, obu + header_len);
        size_t v = payload_len;
        do {
            uint8_t byte = v & 0x7F;
            v >>= 7;
            if (v) byte |= 0x80;
            out.push_back(byte);
        } while (v);
        out.insert(out.end(), extradata + seq->payload, extradata + seq->end);
    }
    return out;
}

Av1SequenceInfo av1_config_sequence_info(const std::vector<uint8_t>& record) {
    if (record.size() < 4 || record[0] != 0x81) throw InvalidDataError("av1C missing or not version 1");
    const std::vector<Obu> obus = split_obus(record.data() + 4, record.size() - 4);
    const Obu* seq = find_sequence_header(obus);
    if (!seq) throw InvalidDataError("av1C holds no sequence header OBU");
    return parse_av1_sequence_header(record.data() + 4 + seq->payload, seq->end - seq->payload);
}

std::vector<uint8_t> av1_sample_from_temporal_unit(const uint8_t* data, size_t size) {
    std::vector<uint8_t> out;
    out.reserve(size);
    for (const Obu& o : split_obus(data, size)) {
        if (o.type == kObuTemporalDelimiter || o.type == kObuPadding) continue;
        out.insert(out.end(), data + o.start, data + o.end);
    }
    return out;
}

bool av1_is_sync_sample(const uint8_t* data, size_t size, bool reduced_still_picture_header) {
    for (const Obu& o : split_obus(data, size)) {
        if (o.type != kObuFrameHeader && o.type != kObuFrame) continue;
        if (reduced_still_picture_header) return true;  // every frame is a shown key frame (§5.9.2)
        BitReader br(data + o.payload, o.end - o.payload);
        if (br.bit()) return false;  // show_existing_frame
        const uint64_t frame_type = br.bits(2);
        const bool show_frame = br.bit() != 0;
        return frame_type == 0 && show_frame;  // KEY_FRAME
    }
    return false;
}

}  // namespace cdlc
