// CMAF segmenter: one per track. Writes output_dir/init.mp4 on the first packet
// (ftyp + moov) and output_dir/<n>.m4s (styp, sidx, moof, mdat) for n = 1, 2, ...
// A segment is closed at the first sync sample whose decode time reaches the next
// multiple of segment_seconds (video), or at the first packet at or past it (audio).
#pragma once

#include <string>
#include <vector>

#include "common/media_types.h"

namespace cdlc {

class CmafSegmenter : public PacketSink {
public:
    CmafSegmenter(TrackInfo track, std::string output_dir, double segment_seconds);
    ~CmafSegmenter() override;
    void write(const EncodedPacket& packet) override;
    void finish() override;

    const TrackInfo& track() const;
    const std::vector<SegmentRecord>& segments() const;

    // For encoders whose extradata is only known after the first packet.
    void set_track(const TrackInfo& track);

private:
    struct Impl;
    Impl* impl_;
};

}  // namespace cdlc
