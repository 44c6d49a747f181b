// Which H.264 encoders work on this machine, checked at run time: the CPU path
// (libx264) everywhere, h264_nvenc only where the FFmpeg build has it and a
// driver and an NVENC-capable CUDA device open it. Public: used by the bindings.
#pragma once

#include <string>
#include <vector>

namespace cdlc {

// True when `name` is compiled into libavcodec and opens on this machine (for
// h264_nvenc: a driver and a CUDA device with NVENC are present). Tried once per
// process and name (a tiny 256x144 encoder is opened and closed); the answer is cached.
bool encoder_usable(const std::string& name);

// The H.264 encoders usable here, CPU first: e.g. {"libx264"} or {"libx264", "h264_nvenc"}.
std::vector<std::string> h264_encoders_available();

}  // namespace cdlc
