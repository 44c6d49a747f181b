#include "transcode/rendition_output.h"

#include <filesystem>
#include <system_error>

#include "common/error.h"
#include "transcode/timeline.h"

namespace cdlc::transcode {

std::unique_ptr<CmafSegmenter> open_rendition_output(const TrackInfo& track,
                                                     const TranscodeConfig& cfg,
                                                     const std::string& id) {
    const std::filesystem::path dir = std::filesystem::path(cfg.output_dir) / id;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw IOError("create output directory " + dir.string() + ": " + ec.message());
    auto segmenter = std::make_unique<CmafSegmenter>(track, dir.string(), cfg.segment_seconds);
    segmenter->set_first_number(first_segment_number(cfg));
    segmenter->set_encryption(cfg.encryption);
    return segmenter;
}

}  // namespace cdlc::transcode
