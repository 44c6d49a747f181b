// One funnel for every error the core raises. FFmpeg return codes go
// through check_av(); each class maps to one Python exception in bindings.cpp.
#pragma once

#include <stdexcept>
#include <string>

namespace cdlc {

// Base of all core errors. `code` is the FFmpeg AVERROR when there is one, else 0.
class Error : public std::runtime_error {
public:
    Error(const std::string& message, int code = 0) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }
private:
    int code_;
};

// Input is not valid media (corrupt, truncated, unsupported layout). -> ValueError
class InvalidDataError : public Error { using Error::Error; };
// File, stream, codec or encoder not found. -> LookupError
class NotFoundError : public Error { using Error::Error; };
// Reading or writing files failed. -> OSError
class IOError : public Error { using Error::Error; };
// The run was cancelled through cancel(). -> cdlc CancelledError
class CancelledError : public Error { using Error::Error; };

// Throws the matching Error when ret < 0. `operation` names what was attempted
// ("open input", "decode video"), `subject` the file or codec it was attempted on.
void check_av(int ret, const std::string& operation, const std::string& subject);

// libav*'s own stderr logging threshold (AV_LOG_QUIET -8 ... AV_LOG_DEBUG 48). Errors
// still reach callers as exceptions whatever the level: a CLI can go quiet.
void set_library_log_level(int level);

// Human-readable text for an AVERROR code.
std::string av_error_text(int code);

}  // namespace cdlc
