// ADTS (ISO/IEC 13818-7 §6.2 / 14496-3 §1.A.2) framing, as MPEG-TS carries AAC.
// CMAF wants raw access units plus an AudioSpecificConfig (14496-3 §1.6.2.1).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cdlc {

struct AdtsHeader {
    int object_type = 0;          // audioObjectType = ADTS profile + 1 (2 = AAC LC)
    int sampling_index = 0;       // samplingFrequencyIndex
    int channel_config = 0;       // channelConfiguration (0: PCE in band, unsupported)
    size_t header_size = 0;       // 7, or 9 with CRC
    size_t frame_size = 0;        // whole frame, header included
    int raw_blocks = 1;           // number_of_raw_data_blocks_in_frame + 1
};

// True if data starts with an ADTS syncword (0xFFF) and layer 0.
bool is_adts(const uint8_t* data, size_t size);

// Parses one header. Throws InvalidDataError when it is malformed or truncated.
AdtsHeader parse_adts(const uint8_t* data, size_t size);

// The two-byte AudioSpecificConfig an ADTS header implies.
std::vector<uint8_t> adts_audio_specific_config(const AdtsHeader& h);

// Sampling frequency of an index (14496-3 Table 1.18); 0 for escape/reserved.
int adts_sample_rate(int sampling_index);

}  // namespace cdlc
