// RAII owners for libav* objects and small helpers shared by the transcoder files.
// Internal to native/src/transcode and native/src/probe; nothing here is public API.
#pragma once

#include <memory>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavfilter/avfilter.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}

namespace cdlc::av {

struct FormatCloser {
    void operator()(AVFormatContext* p) const { avformat_close_input(&p); }
};
struct CodecFreer {
    void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
};
struct FrameFreer {
    void operator()(AVFrame* p) const { av_frame_free(&p); }
};
struct PacketFreer {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct GraphFreer {
    void operator()(AVFilterGraph* p) const { avfilter_graph_free(&p); }
};
struct SwrFreer {
    void operator()(SwrContext* p) const { swr_free(&p); }
};
struct SwsFreer {
    void operator()(SwsContext* p) const { sws_freeContext(p); }
};

using FormatPtr = std::unique_ptr<AVFormatContext, FormatCloser>;
using CodecPtr = std::unique_ptr<AVCodecContext, CodecFreer>;
using FramePtr = std::unique_ptr<AVFrame, FrameFreer>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFreer>;
using GraphPtr = std::unique_ptr<AVFilterGraph, GraphFreer>;
using SwrPtr = std::unique_ptr<SwrContext, SwrFreer>;
using SwsPtr = std::unique_ptr<SwsContext, SwsFreer>;

FramePtr make_frame();
PacketPtr make_packet();

// Opens `path` and reads stream info. Missing files -> NotFoundError, anything that
// is not media (empty, random bytes, an MP4 without moov) -> InvalidDataError.
// With `remote_timeout` > 0, `path` may also be an http(s) URL (a presigned object
// URL: read with ranged GETs, so a span costs its bytes, not the master's). Only
// those protocols, each read waiting at most that long, a dropped connection
// reopened (twice, backing off); failures to reach it -> IOError, naming the URL
// without its query (the signature).
FormatPtr open_input(const std::string& path, double remote_timeout = 0.0);

// Whether `path` is an http(s) URL, and `path` as messages show it (no query).
bool is_url(const std::string& path);
std::string shown_path(const std::string& path);

// A failed read of the remote input `path`: IOError "reading <path, no query> <what>"
// (a fault of the store or the network, for another attempt to try).
[[noreturn]] void remote_read_failed(const std::string& path, const std::string& what, int err);

// Clockwise display rotation (0/90/180/270) from the stream's display matrix
// (ISO/IEC 14496-12 §8.2.2.3 tkhd matrix, surfaced by libavformat as side data).
int stream_rotation(const AVStream* stream);

}  // namespace cdlc::av
