// What the copy path keeps per track while it copies: the packets on their way
// to a segmenter (Pending), and the state of the video track and of each audio
// track (times, offsets, cuts, packets held back).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <utility>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
}

#include "cmaf/segmenter.h"
#include "remux/video_samples.h"

namespace cdlc::remux {

struct FormatCloser {
    void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};
struct PacketFree {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};

// A packet on its way to a segmenter: owned bytes in p.data, or bytes borrowed
// from the demuxer's AVPacket (kept alive by owner) so the copy path moves each
// sample from the read buffer to the output file without another copy.
struct Pending {
    EncodedPacket p;
    std::shared_ptr<const void> owner;
    const uint8_t* data = nullptr;
    size_t size = 0;
    CmafSegmenter::FileRange range;  // set (range.file) on the MP4 fast path
};

inline void write_to(CmafSegmenter& seg, Pending&& q) {
    if (q.range.file) seg.write_range(q.p, q.range);
    else if (q.owner) seg.write_borrowed(q.p, std::move(q.owner), q.data, q.size);
    else seg.write(std::move(q.p));
}

// Takes over the packet's reference; the returned owner frees it.
std::shared_ptr<const void> adopt(AVPacket* pkt);

// libavcodec's name of a codec, "unknown" when it has none.
std::string codec_name(AVCodecID id);

inline int64_t pick_ts(int64_t preferred, int64_t fallback) {
    return preferred != AV_NOPTS_VALUE ? preferred : fallback;
}

struct VideoTrack {
    AVStream* st = nullptr;
    std::unique_ptr<CmafSegmenter> seg;
    VideoNormaliser norm;
    AVRational out_tb{1, 90000};
    int64_t offset = 0;           // output ticks subtracted (global start)
    bool started = false;         // a keyframe has been written
    bool need_config = false;     // extradata only in band
    int64_t last_dts = AV_NOPTS_VALUE;
    size_t known_segments = 0;
    int64_t progress = INT64_MIN; // output decode time of the last written packet
    // Matroska stores no decode times (libavformat guesses them late or not at
    // all). Then dts is rebuilt as the n-th smallest pts, decided once kReorder
    // later packets are known: monotonic, and an IDR's dts equals its pts.
    bool rebuild_dts = false;
    std::deque<Pending> reorder;
    std::multiset<int64_t> reorder_pts;
    static constexpr size_t kReorder = 16;
};

struct AudioTrack {
    AVStream* st = nullptr;
    std::string source;           // the file it comes from (the master or a sidecar)
    std::string id;
    std::unique_ptr<CmafSegmenter> seg;
    AVRational out_tb{1, 48000};
    int64_t offset = 0;
    bool adts = false;
    bool from_master = true;      // sidecars: no fast path, all video cuts already known
    int64_t frame_samples = 1024;
    int64_t next_ts = AV_NOPTS_VALUE;  // expected time of the next frame
    int64_t snap = 2;                   // output ticks a container timestamp may be off by
    int64_t first_us = INT64_MAX;       // first packet's time (prefetch), microseconds
    int64_t lead = 0;                   // output ticks before time zero (the edit list's media_time)
    size_t next_boundary = 0;           // index of the next video cut it has not reached
    std::deque<Pending> pending;  // held until the video has passed them
};

}  // namespace cdlc::remux
