#include "transcode/timeline.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace cdlc::transcode {

int even_at_least_2(double v) {
    long n = std::lround(v / 2.0) * 2;
    return static_cast<int>(std::max(2L, n));
}

// Output frame rate: the configured one, else the source's snapped to a broadcast
// rate. For VFR sources r_frame_rate (the capture's nominal rate, e.g. a phone's 30)
// is used when sane, so no captured frame is dropped; fps-filter semantics then fill
// the gaps. Interlaced streams whose r_frame_rate counts fields keep the frame rate.
AVRational choose_rate(const AVStream* st, const TranscodeConfig& cfg, bool interlaced) {
    if (cfg.fps_num > 0 && cfg.fps_den > 0) return AVRational{cfg.fps_num, cfg.fps_den};
    auto valid = [](AVRational q) { return q.num > 0 && q.den > 0 && av_q2d(q) < 1000; };
    const AVRational avg_q = st->avg_frame_rate, r_q = st->r_frame_rate;
    const double avg = valid(avg_q) ? av_q2d(avg_q) : 0, r = valid(r_q) ? av_q2d(r_q) : 0;
    double v = avg > 0 ? avg : r;
    if (avg > 0 && r > 0 && std::fabs(avg - r) / avg > 0.01) {  // variable frame rate
        const bool field_rate = interlaced && std::fabs(r - 2 * avg) / r < 0.02;
        if (!field_rate && r <= 60.5) v = r;
    }
    if (v <= 0) return AVRational{25, 1};
    static const AVRational standard[] = {{24000, 1001}, {24, 1}, {25, 1},         {30000, 1001},
                                          {30, 1},       {48, 1}, {50, 1},         {60000, 1001},
                                          {60, 1},       {15, 1}, {12, 1}};
    // Exact (container rounding) first, then the nearest standard rate within 1%
    // (a phone's 29.87 fps average is a 29.97/30 fps capture).
    for (const AVRational& q : standard)
        if (std::fabs(v - av_q2d(q)) / av_q2d(q) < 0.0003) return q;  // 29.97 vs 30 is 0.1%
    const AVRational* nearest = nullptr;
    for (const AVRational& q : standard) {
        const double d = std::fabs(v - av_q2d(q)) / av_q2d(q);
        if (d < 0.01 && (!nearest || d < std::fabs(v - av_q2d(*nearest)) / av_q2d(*nearest)))
            nearest = &q;
    }
    if (nearest) return *nearest;
    if (v > 60.5) return AVRational{60, 1};  // high-frame-rate capture: a streaming ladder tops at 60
    if (std::fabs(v - std::round(v)) < 0.01 * v) return AVRational{static_cast<int>(std::lround(v)), 1};
    return av_d2q(v, 1001000);
}

// mdhd timescale: 90 kHz when every frame lands on a tick (like MPEG-TS), else a
// multiple of the frame rate, so frame durations are exact integers.
uint32_t video_timescale(AVRational fps) {
    if ((90000LL * fps.den) % fps.num == 0) return 90000;
    int64_t k = std::max<int64_t>(1, 90000 / fps.num);
    return static_cast<uint32_t>(fps.num * k);
}

// Segment number of the span's first segment: the one-piece numbering (1-based).
int first_segment_number(const TranscodeConfig& cfg) {
    return static_cast<int>(std::llround(cfg.span_start / cfg.segment_seconds)) + 1;
}

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f s", s);
    return buf;
}

}  // namespace cdlc::transcode
