// CMAF segmenter: one per track. Writes output_dir/init.mp4 (ftyp + moov, the CMAF
// header, ISO/IEC 23000-19 §7.3.2) and output_dir/<n>.m4s (styp, sidx, moof, mdat:
// one CMAF fragment per segment, §7.3.3) for n = 1, 2, ...
// A segment is closed at the first sync sample whose decode time reaches the next
// multiple of segment_seconds (video), or at the first packet at or past it (audio).
// segment_seconds <= 0 disables automatic cuts: segments then end only at
// force_cut() and finish() (the copy path aligns audio to video that way).
//
// init.mp4 is written just before the first segment (or by finish() when there
// was no packet), so set_track() may still change the track until then.
//
// Timeline: decode times are shifted by the first packet's composition delay
// (pts - dts), so the first sample's decode time equals its presentation time and
// tfdt of each segment is the presentation time of its first (sync) sample; the
// remaining B-frame reordering is carried by signed composition offsets (trun
// version 1). A track whose first presentation time is negative is moved to 0.
// Sample durations are the differences of consecutive decode times (the last
// sample keeps its packet duration), so every segment's tfdt equals the previous
// segment's tfdt + duration exactly.
//
// Throws InvalidDataError for unsupported codecs, unusable extradata and decode
// times that go backwards; IOError when a file cannot be written.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cmaf/encryption.h"
#include "common/media_types.h"
#include "io/mapped_file.h"

namespace cdlc {

class WritePool;

class CmafSegmenter : public PacketSink {
public:
    CmafSegmenter(TrackInfo track, std::string output_dir, double segment_seconds);
    ~CmafSegmenter() override;
    CmafSegmenter(const CmafSegmenter&) = delete;
    CmafSegmenter& operator=(const CmafSegmenter&) = delete;
    CmafSegmenter(CmafSegmenter&& other) noexcept;
    CmafSegmenter& operator=(CmafSegmenter&& other) noexcept;
    void write(const EncodedPacket& packet) override;
    // Same, taking ownership of the payload (saves one copy on the copy path).
    void write(EncodedPacket&& packet);
    void finish() override;

    // Zero-copy variant for the copy path: the sample bytes are `size` bytes at
    // `data`, kept valid by `owner` until the segment is written; packet.data is
    // ignored.
    void write_borrowed(const EncodedPacket& packet, std::shared_ptr<const void> owner,
                        const uint8_t* data, size_t size);

    // File-to-file variant: the sample is `range` of a mapped source file, copied
    // by the kernel when the segment is written (one copy, no read buffer).
    struct FileRange {
        std::shared_ptr<const MappedFile> file;
        uint64_t offset = 0;
        uint64_t size = 0;
    };
    void write_range(const EncodedPacket& packet, const FileRange& range);

    // Ends the current segment (if it holds any sample) before the next packet.
    void force_cut();

    // Number of the first segment (default 1): a span of a longer encode keeps the
    // one-piece numbering. Set before the first segment is written.
    void set_first_number(int number);

    // A final segment shorter than `seconds` is merged into the one before it (no
    // runt segment at the end: an audio track that outlasts the video by a frame
    // would otherwise end with a segment of one frame). The closed segment is then
    // written only when the next one closes, so segments() lags by one. 0 = off.
    // Set before the first packet.
    void set_tail_merge(double seconds);

    // Common encryption of every sample (ISO/IEC 23001-7; see cmaf/encryption.h):
    // the header signals it (encv/enca + sinf/tenc, pssh), each segment carries
    // senc/saiz/saio. Borrowed and file-range samples are copied to be encrypted.
    // Set before the first packet. Throws InvalidDataError for a bad config.
    void set_encryption(const EncryptionConfig& config);

    // Output decode time = input dts + decode_time_shift() (fixed by the first
    // packet; 0 before it). Lets a caller map its input times onto tfdt.
    int64_t decode_time_shift() const;

    const TrackInfo& track() const;
    const std::vector<SegmentRecord>& segments() const;

    // For encoders whose extradata is only known after the first packet.
    void set_track(const TrackInfo& track);

    // Media segments go to `pool` instead of being written in the caller's
    // thread (init.mp4 still is). finish() waits for them; a failed write is
    // rethrown by a later write or by finish(). Set before the first packet.
    void set_write_pool(std::shared_ptr<WritePool> pool);

private:
    struct Impl;
    Impl* impl_;
};

}  // namespace cdlc
