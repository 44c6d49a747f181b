#include "common/error.h"

extern "C" {
#include <libavutil/error.h>
#include <libavutil/log.h>
}

namespace cdlc {

void set_library_log_level(int level) { av_log_set_level(level); }

std::string av_error_text(int code) {
    char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, buf, sizeof(buf));
    return std::string(buf);
}

void check_av(int ret, const std::string& operation, const std::string& subject) {
    if (ret >= 0) return;
    const std::string msg = operation + " failed for " + subject + ": " + av_error_text(ret);
    switch (ret) {
        case AVERROR_INVALIDDATA:
        case AVERROR_EOF:
        case AVERROR_PATCHWELCOME:
        case AVERROR_BUG:
            throw InvalidDataError(msg, ret);
        case AVERROR_DECODER_NOT_FOUND:
        case AVERROR_DEMUXER_NOT_FOUND:
        case AVERROR_ENCODER_NOT_FOUND:
        case AVERROR_STREAM_NOT_FOUND:
        case AVERROR_MUXER_NOT_FOUND:
        case AVERROR_FILTER_NOT_FOUND:
        case AVERROR_OPTION_NOT_FOUND:
            throw NotFoundError(msg, ret);
        case AVERROR(ENOENT):
            throw NotFoundError(msg, ret);
        case AVERROR(EIO):
        case AVERROR(EACCES):
        case AVERROR(ENOSPC):
            throw IOError(msg, ret);
        case AVERROR_EXIT:
            throw CancelledError(msg, ret);
        default:
            throw Error(msg, ret);
    }
}

}  // namespace cdlc
