// Package-only path: a master that already holds H.264/HEVC video and AAC audio is
// demuxed and its packets go straight to the CMAF segmenters (no decode). Segment
// boundaries follow the source's keyframes (at or after each target duration).
#pragma once

#include <string>

#include "common/media_types.h"

namespace cdlc {

// Renditions: "v<height>" for the first video stream, "audio" for the first audio
// stream, written to output_dir/<id>/. Containers: anything libavformat reads
// (MP4/MOV, Matroska, MPEG-TS, ...); H.264/HEVC (avcC/hvcC or Annex B) + AAC (raw
// or ADTS) or Opus. Video segments end at the source's first keyframe at or after
// each multiple of segment_seconds; audio segments end at the first audio frame at
// or after each video cut. The earliest first timestamp of the two streams
// becomes time 0 (A/V sync kept).
// Throws InvalidDataError when the codecs cannot be copied (the message names the
// codec and says to transcode instead), for corrupt or truncated input and for
// segment_seconds <= 0; NotFoundError for a missing file; IOError when writing
// fails. On error output_dir may hold partial files: publish only on success.
PipelineResult package_copy(const std::string& input, const std::string& output_dir,
                            double segment_seconds);

}  // namespace cdlc
