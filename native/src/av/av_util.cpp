#include "av/av_util.h"

#include <cmath>
#include <sys/stat.h>

#include "common/error.h"

extern "C" {
#include <libavutil/display.h>
}

namespace cdlc::av {

FramePtr make_frame() {
    AVFrame* f = av_frame_alloc();
    if (!f) throw Error("out of memory allocating a frame");
    return FramePtr(f);
}

PacketPtr make_packet() {
    AVPacket* p = av_packet_alloc();
    if (!p) throw Error("out of memory allocating a packet");
    return PacketPtr(p);
}

bool is_url(const std::string& path) {
    return path.rfind("http://", 0) == 0 || path.rfind("https://", 0) == 0;
}

std::string shown_path(const std::string& path) {
    return is_url(path) ? path.substr(0, path.find('?')) : path;
}

void remote_read_failed(const std::string& path, const std::string& what, int err) {
    throw IOError("reading " + shown_path(path) + " " + what, err);
}

namespace {

AVDictionary* remote_options(double timeout) {
    AVDictionary* opts = nullptr;
    av_dict_set(&opts, "protocol_whitelist", "http,https,tcp,tls", 0);
    av_dict_set_int(&opts, "rw_timeout", static_cast<int64_t>(timeout * 1e6), 0);
    av_dict_set(&opts, "reconnect", "1", 0);
    av_dict_set(&opts, "reconnect_on_network_error", "1", 0);
    av_dict_set(&opts, "reconnect_delay_max", "2", 0);
    return opts;
}

}  // namespace

FormatPtr open_input(const std::string& path, double remote_timeout) {
    const bool remote = remote_timeout > 0 && is_url(path);
    AVDictionary* opts = nullptr;
    if (remote) {
        opts = remote_options(remote_timeout);
    } else {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) throw NotFoundError("no such file: " + path, AVERROR(ENOENT));
        if (S_ISDIR(st.st_mode)) throw InvalidDataError("not a media file (a directory): " + path);
        if (st.st_size == 0) throw InvalidDataError("not a media file (empty): " + path, AVERROR_INVALIDDATA);
    }
    AVFormatContext* raw = nullptr;
    int ret = avformat_open_input(&raw, path.c_str(), nullptr, &opts);
    av_dict_free(&opts);
    if (ret < 0 && remote) {
        // Unreachable, refused, timed out, 403/404/5xx: the store's fault or the
        // network's, for another attempt to try; never "not media".
        remote_read_failed(path, "failed: " + av_error_text(ret), ret);
    }
    if (ret < 0) {
        // Random bytes and truncated containers both end here; libavformat says
        // INVALIDDATA for most of them but EOF/EIO for some: all mean "not media".
        if (ret == AVERROR(ENOENT)) check_av(ret, "open input", path);
        if (ret == AVERROR(EACCES)) check_av(ret, "open input", path);
        throw InvalidDataError("open input failed for " + path + ": " + av_error_text(ret) +
                                   " (not a readable media file)",
                               ret);
    }
    FormatPtr fmt(raw);
    ret = avformat_find_stream_info(fmt.get(), nullptr);
    if (remote && fmt->pb && fmt->pb->error < 0)
        remote_read_failed(path, "failed: " + av_error_text(fmt->pb->error), fmt->pb->error);
    if (ret < 0)
        throw InvalidDataError("read stream info failed for " + path + ": " + av_error_text(ret), ret);
    bool any = false;
    for (unsigned i = 0; i < fmt->nb_streams; ++i) {
        const AVCodecParameters* par = fmt->streams[i]->codecpar;
        if (par->codec_type == AVMEDIA_TYPE_VIDEO && par->width > 0 && par->height > 0) any = true;
        if (par->codec_type == AVMEDIA_TYPE_AUDIO && par->sample_rate > 0) any = true;
    }
    if (!any)
        throw InvalidDataError("no decodable audio or video stream in " + path, AVERROR_INVALIDDATA);
    return fmt;
}

int stream_rotation(const AVStream* stream) {
    size_t size = 0;
    const uint8_t* matrix =
        av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!matrix || size < 9 * sizeof(int32_t)) return 0;
    // av_display_rotation_get() answers counter-clockwise degrees; we want clockwise.
    double ccw = av_display_rotation_get(reinterpret_cast<const int32_t*>(matrix));
    if (std::isnan(ccw)) return 0;
    long cw = std::lround(-ccw);
    cw = ((cw % 360) + 360) % 360;
    // Snap to the nearest quarter turn: phone captures only use those.
    return static_cast<int>(((cw + 45) / 90) * 90 % 360);
}

}  // namespace cdlc::av
