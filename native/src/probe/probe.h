// Probe a master: what the planner and the error path need to know before any
// decoding starts. Throws InvalidDataError for files that are not media,
// NotFoundError for missing files.
#pragma once

#include <string>
#include <vector>

namespace cdlc {

struct StreamInfo {
    int index = -1;
    std::string kind;            // "video", "audio", "other"
    std::string codec;           // FFmpeg codec name: "h264", "hevc", "prores", "aac", ...
    std::string profile;
    // video
    int width = 0;               // coded size as stored
    int height = 0;
    int display_width = 0;       // after SAR and rotation: what a viewer sees
    int display_height = 0;
    int sar_num = 1;
    int sar_den = 1;
    double frame_rate = 0.0;     // average frame rate
    bool variable_frame_rate = false;
    bool interlaced = false;
    int rotation = 0;            // degrees clockwise to apply for display: 0/90/180/270
    std::string pix_fmt;
    int bit_depth = 8;
    // audio
    int sample_rate = 0;
    int channels = 0;
    std::string channel_layout;
    long long bit_rate = 0;
    double duration = 0.0;       // seconds, 0 if unknown
};

struct MediaInfo {
    std::string path;
    std::string format;          // container: "mov,mp4,m4a,3gp,3g2,mj2", "mpegts", ...
    double duration = 0.0;       // seconds
    long long size = 0;          // bytes
    long long bit_rate = 0;
    std::vector<StreamInfo> streams;
};

MediaInfo probe(const std::string& path);

}  // namespace cdlc
