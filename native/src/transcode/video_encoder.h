// Video encoder set-up for one rung: H.264 (libx264 on CPU, h264_nvenc on NVIDIA
// GPUs), HEVC (libx265) and AV1 (libsvtav1).
// Internal to the transcoder.
#pragma once

#include <string>
#include <vector>

#include "av/av_util.h"
#include "transcode/transcoder.h"

namespace cdlc {

struct VideoEncoderParams {
    int width = 0;
    int height = 0;
    AVRational frame_rate{30, 1};
    int gop_frames = 60;              // keyint: frames per GOP at the output rate
    std::string preset = "veryfast";  // x264 preset name; mapped for NVENC and SVT-AV1
    int threads = 0;                  // encoder's own threads; 0 = its default
    AVColorRange color_range = AVCOL_RANGE_UNSPECIFIED;
    AVColorPrimaries color_primaries = AVCOL_PRI_UNSPECIFIED;
    AVColorTransferCharacteristic color_trc = AVCOL_TRC_UNSPECIFIED;
    AVColorSpace colorspace = AVCOL_SPC_UNSPECIFIED;
};

// The codec family a rung's encoder writes: "h264", "hevc" or "av1" ("" = libx264).
// Throws std::invalid_argument (ValueError) for any other encoder name.
std::string encoder_codec(const std::string& encoder);

// Opens the rung's encoder with closed, fixed-length GOPs (no scene-cut keyframes;
// the caller also forces AV_PICTURE_TYPE_I on every GOP's first frame), capped VBR
// (bitrate, maxrate = 1.5 x bitrate, bufsize = 2 x bitrate unless given) or CRF
// capped by maxrate, and global headers (parameter sets or the AV1 sequence header
// in extradata, for avcC / hvcC / av1C).
// Throws std::invalid_argument for an encoder name outside encoder_codec().
// Throws NotFoundError when the encoder is missing, Error when it fails to open.
av::CodecPtr open_video_encoder(const RungConfig& rung, const VideoEncoderParams& params);

// Frees an encoder opened by open_video_encoder, also one that stopped mid-stream:
// libsvtav1 is sent end of stream and drained first (its threads wait for it).
void release_video_encoder(av::CodecPtr& encoder) noexcept;

}  // namespace cdlc
