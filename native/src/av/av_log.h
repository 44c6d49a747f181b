// Capture of libav* error messages, so a failure can carry the decoder's own
// reason ("corrupted macroblock", "Invalid NAL unit size") instead of only an
// AVERROR code. Messages are forwarded to libav's default logger unchanged.
#pragma once

#include <string>

namespace cdlc::av {

// Installs the capturing logger once per process; cheap to call again.
void install_log_capture();

// The last error-level messages logged by the libav* object named `name`
// (a decoder's codec name, a demuxer's short name), joined by "; ", newest last.
// Empty when there were none.
std::string recent_errors(const std::string& name);

// Forgets the messages recorded for `name` (before a new run uses it).
void clear_errors(const std::string& name);

// While alive, messages logged from this thread are dropped (probing an encoder
// that is expected to fail, e.g. h264_nvenc without a GPU).
class QuietLogScope {
public:
    QuietLogScope();
    ~QuietLogScope();
    QuietLogScope(const QuietLogScope&) = delete;
    QuietLogScope& operator=(const QuietLogScope&) = delete;
};

}  // namespace cdlc::av
