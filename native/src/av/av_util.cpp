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

FormatPtr open_input(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw NotFoundError("no such file: " + path, AVERROR(ENOENT));
    if (S_ISDIR(st.st_mode)) throw InvalidDataError("not a media file (a directory): " + path);
    if (st.st_size == 0) throw InvalidDataError("not a media file (empty): " + path, AVERROR_INVALIDDATA);
    AVFormatContext* raw = nullptr;
    int ret = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
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
