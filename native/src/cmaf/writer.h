// CMAF header and segment byte builders: the model (TrackInfo + samples) in,
// ISO-BMFF bytes out. No policy (where to cut) and no files: that is the
// segmenter's job (parse, model, write kept apart).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cmaf/encryption.h"
#include "common/media_types.h"

namespace cdlc {

// ftyp + moov for one track (ISO/IEC 23000-19 §7.3.2 CMAF header). The decoder
// configuration is normalised: Annex B H.264/HEVC extradata is converted to
// avcC/hvcC. Throws InvalidDataError for codecs CMAF cannot carry here.
std::vector<uint8_t> build_init_segment(const TrackInfo& track);

// How a protected track is signalled in its CMAF header (ISO/IEC 23001-7 §4).
struct TrackProtection {
    std::string scheme;                 // "cenc" / "cbcs"
    std::vector<uint8_t> kid;           // 16 bytes
    std::vector<uint8_t> constant_iv;   // cbcs
    uint8_t per_sample_iv_size = 8;
    uint8_t crypt_byte_block = 0, skip_byte_block = 0;
};

// The same with the sample entry turned into 'encv'/'enca' + sinf, and a pssh box
// of the common system in moov.
std::vector<uint8_t> build_init_segment(const TrackInfo& track, const TrackProtection* protection);

// The sample entry fourcc used for a codec: "avc1", "hvc1", "mp4a", "Opus".
const char* sample_entry_type(const std::string& codec);

struct FragmentSample {
    const uint8_t* data = nullptr;
    size_t size = 0;
    uint32_t duration = 0;            // track timescale
    int32_t composition_offset = 0;   // presentation - decode time
    bool sync = false;
};

struct MediaSegmentLayout {
    uint64_t header_size = 0;   // styp + sidx + moof + mdat header: offset of the first sample
    uint64_t iframe_size = 0;   // header_size + bytes through the end of the first sync sample
};

// styp + sidx + moof + mdat header (one CMAF fragment, §7.3.3) for the samples;
// the caller appends the sample bytes in order. `audio` selects tfhd default
// sample flags instead of per-sample flags.
std::vector<uint8_t> build_media_segment_header(uint32_t sequence_number, uint32_t timescale,
                                                uint64_t base_media_decode_time, bool audio,
                                                const std::vector<FragmentSample>& samples,
                                                MediaSegmentLayout* layout);

// With senc/saiz/saio for encrypted samples (`crypto`, one entry per sample; the
// sample bytes the caller appends are the encrypted ones). iv_size 0 and no
// subsamples (cbcs audio) need no auxiliary information: nothing is added.
std::vector<uint8_t> build_media_segment_header(uint32_t sequence_number, uint32_t timescale,
                                                uint64_t base_media_decode_time, bool audio,
                                                const std::vector<FragmentSample>& samples,
                                                MediaSegmentLayout* layout,
                                                const std::vector<SampleCryptoInfo>* crypto, uint8_t iv_size,
                                                bool subsamples);

}  // namespace cdlc
