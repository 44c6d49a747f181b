// H.264 encoder set-up for one rung: libx264 on CPU, h264_nvenc on NVIDIA GPUs.
// Internal to the transcoder.
#pragma once

#include <string>
#include <vector>

#include "transcode/av_util.h"
#include "transcode/transcoder.h"

namespace cdlc {

struct VideoEncoderParams {
    int width = 0;
    int height = 0;
    AVRational frame_rate{30, 1};
    int gop_frames = 60;              // keyint: frames per GOP at the output rate
    std::string preset = "veryfast";  // x264 preset name; mapped for NVENC
    int threads = 0;                  // encoder's own threads; 0 = its default
    AVColorRange color_range = AVCOL_RANGE_UNSPECIFIED;
    AVColorPrimaries color_primaries = AVCOL_PRI_UNSPECIFIED;
    AVColorTransferCharacteristic color_trc = AVCOL_TRC_UNSPECIFIED;
    AVColorSpace colorspace = AVCOL_SPC_UNSPECIFIED;
};

// Opens the rung's encoder with closed, fixed-length GOPs (no scene-cut keyframes;
// the caller also forces AV_PICTURE_TYPE_I on every GOP's first frame), capped VBR
// (bitrate, maxrate = 1.5 x bitrate, bufsize = 2 x bitrate unless given) or CRF
// capped by maxrate, and global headers (SPS/PPS in extradata for avcC).
// Throws NotFoundError when the encoder is missing, Error when it fails to open.
av::CodecPtr open_video_encoder(const RungConfig& rung, const VideoEncoderParams& params);

}  // namespace cdlc
