// Where one rendition of a transcode is written: its directory under the output
// directory and the CMAF segmenter that numbers (and maybe encrypts) its segments.
#pragma once

#include <memory>
#include <string>

#include "cmaf/segmenter.h"
#include "common/media_types.h"
#include "transcode/transcoder.h"

namespace cdlc::transcode {

// output_dir/<id> created, and a segmenter for `track` in it that starts at the
// span's first segment number and applies the job's encryption. IOError when the
// directory cannot be made.
std::unique_ptr<CmafSegmenter> open_rendition_output(const TrackInfo& track,
                                                     const TranscodeConfig& cfg,
                                                     const std::string& id);

}  // namespace cdlc::transcode
