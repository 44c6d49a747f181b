// Package-only path: a master that already holds H.264/HEVC video and AAC audio is
// demuxed and its packets go straight to the CMAF segmenters (no decode). Segment
// boundaries follow the source's keyframes (at or after each target duration).
#pragma once

#include <string>

#include "common/media_types.h"

namespace cdlc {

// Renditions: "v<height>" for the first video stream, "audio" for the first audio
// stream. Throws InvalidDataError when the codecs cannot be copied (the message
// names the codec and says to transcode instead).
PipelineResult package_copy(const std::string& input, const std::string& output_dir,
                            double segment_seconds);

}  // namespace cdlc
