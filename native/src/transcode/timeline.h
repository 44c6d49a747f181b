// The output timeline of a transcode: its frame rate and timescale, segment
// numbering, even picture sizes, and how times read in messages.
#pragma once

#include <cstdint>
#include <string>

extern "C" {
#include <libavformat/avformat.h>
}

#include "transcode/transcoder.h"

namespace cdlc::transcode {

// Output frame rate: the configured one, else the source's snapped to a broadcast
// rate (see timeline.cpp).
AVRational choose_rate(const AVStream* st, const TranscodeConfig& cfg, bool interlaced);

// mdhd timescale of the video renditions for an output frame rate.
uint32_t video_timescale(AVRational fps);

// Segment number of the span's first segment: the one-piece numbering (1-based).
int first_segment_number(const TranscodeConfig& cfg);

// The nearest even number, at least 2 (picture sizes of 4:2:0 video).
int even_at_least_2(double v);

// "12.34 s".
std::string seconds_text(double s);

}  // namespace cdlc::transcode
