#include "codec/adts.h"

#include "common/error.h"

namespace cdlc {

bool is_adts(const uint8_t* d, size_t n) {
    return n >= 2 && d[0] == 0xFF && (d[1] & 0xF6) == 0xF0;
}

AdtsHeader parse_adts(const uint8_t* d, size_t n) {
    if (n < 7 || !is_adts(d, n)) throw InvalidDataError("AAC packet has no ADTS header");
    AdtsHeader h;
    const bool protection_absent = d[1] & 1;
    h.object_type = ((d[2] >> 6) & 3) + 1;
    h.sampling_index = (d[2] >> 2) & 0xF;
    h.channel_config = ((d[2] & 1) << 2) | (d[3] >> 6);
    h.frame_size = (size_t(d[3] & 3) << 11) | (size_t(d[4]) << 3) | (d[5] >> 5);
    h.raw_blocks = (d[6] & 3) + 1;
    h.header_size = protection_absent ? 7 : 9;
    if (h.frame_size < h.header_size || h.frame_size > n)
        throw InvalidDataError("ADTS frame length out of range");
    if (adts_sample_rate(h.sampling_index) == 0) throw InvalidDataError("ADTS sampling frequency index reserved");
    return h;
}

std::vector<uint8_t> adts_audio_specific_config(const AdtsHeader& h) {
    if (h.channel_config == 0)
        throw InvalidDataError("ADTS with channel configuration 0 (in-band PCE) cannot be packaged");
    // audioObjectType(5) samplingFrequencyIndex(4) channelConfiguration(4)
    // GASpecificConfig: frameLengthFlag 0, dependsOnCoreCoder 0, extensionFlag 0.
    const uint16_t asc = static_cast<uint16_t>((h.object_type << 11) | (h.sampling_index << 7) |
                                               (h.channel_config << 3));
    return {static_cast<uint8_t>(asc >> 8), static_cast<uint8_t>(asc)};
}

int adts_sample_rate(int i) {
    static const int rates[] = {96000, 88200, 64000, 48000, 44100, 32000, 24000,
                                22050, 16000, 12000, 11025, 8000,  7350};
    return i >= 0 && i < 13 ? rates[i] : 0;
}

}  // namespace cdlc
