// probe(): container and stream facts for the ladder planner and the error path.
#include "probe/probe.h"

#include <cmath>

#include "av/av_util.h"
#include "common/error.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/pixdesc.h>
}

namespace cdlc {

namespace {

double q2d_or0(AVRational r) { return (r.num > 0 && r.den > 0) ? av_q2d(r) : 0.0; }

bool field_order_interlaced(AVFieldOrder order) {
    return order == AV_FIELD_TT || order == AV_FIELD_BB || order == AV_FIELD_TB ||
           order == AV_FIELD_BT;
}

// What a viewer sees: the stored size stretched by the SAR, then rotated.
void display_size(StreamInfo& s) {
    double w = s.width, h = s.height;
    if (s.sar_num > 0 && s.sar_den > 0) w = w * s.sar_num / s.sar_den;
    int dw = static_cast<int>(std::lround(w)), dh = static_cast<int>(std::lround(h));
    if (s.rotation == 90 || s.rotation == 270) std::swap(dw, dh);
    s.display_width = dw;
    s.display_height = dh;
}

StreamInfo describe(const AVFormatContext* fmt, const AVStream* st) {
    const AVCodecParameters* par = st->codecpar;
    StreamInfo s;
    s.index = st->index;
    s.codec = avcodec_get_name(par->codec_id);
    if (const char* prof = avcodec_profile_name(par->codec_id, par->profile)) s.profile = prof;
    s.bit_rate = par->bit_rate;
    if (st->duration != AV_NOPTS_VALUE && st->duration > 0)
        s.duration = static_cast<double>(st->duration) * av_q2d(st->time_base);
    else if (fmt->duration > 0)
        s.duration = static_cast<double>(fmt->duration) / AV_TIME_BASE;
    if (par->codec_type == AVMEDIA_TYPE_VIDEO && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
        s.kind = "video";
        s.width = par->width;
        s.height = par->height;
        AVRational sar = av_guess_sample_aspect_ratio(const_cast<AVFormatContext*>(fmt),
                                                      const_cast<AVStream*>(st), nullptr);
        if (sar.num > 0 && sar.den > 0) {
            av_reduce(&s.sar_num, &s.sar_den, sar.num, sar.den, 1 << 30);
        }
        s.rotation = av::stream_rotation(st);
        display_size(s);
        const double avg = q2d_or0(st->avg_frame_rate);
        const double r = q2d_or0(st->r_frame_rate);
        s.frame_rate = avg > 0 ? avg : r;
        // r_frame_rate is the lowest rate that represents every timestamp; a CFR
        // stream's average matches it. Allow 1% for rounding of container timebases.
        s.variable_frame_rate = avg > 0 && r > 0 && std::fabs(avg - r) / r > 0.01;
        s.interlaced = field_order_interlaced(par->field_order);
        const auto pf = static_cast<AVPixelFormat>(par->format);
        if (const AVPixFmtDescriptor* d = av_pix_fmt_desc_get(pf)) {
            s.pix_fmt = d->name;
            s.bit_depth = d->comp[0].depth;
        }
        if (par->bits_per_raw_sample > 0 && s.pix_fmt.empty()) s.bit_depth = par->bits_per_raw_sample;
    } else if (par->codec_type == AVMEDIA_TYPE_AUDIO) {
        s.kind = "audio";
        s.sample_rate = par->sample_rate;
        s.channels = par->ch_layout.nb_channels;
        char buf[128] = {0};
        if (par->ch_layout.nb_channels > 0 &&
            av_channel_layout_describe(&par->ch_layout, buf, sizeof(buf)) > 0)
            s.channel_layout = buf;
    } else {
        s.kind = "other";
    }
    return s;
}

}  // namespace

MediaInfo probe(const std::string& path) {
    av::FormatPtr fmt = av::open_input(path);
    MediaInfo info;
    info.path = path;
    info.format = fmt->iformat->name;
    if (fmt->duration > 0) info.duration = static_cast<double>(fmt->duration) / AV_TIME_BASE;
    info.bit_rate = fmt->bit_rate;
    int64_t size = fmt->pb ? avio_size(fmt->pb) : -1;
    info.size = size > 0 ? size : 0;
    for (unsigned i = 0; i < fmt->nb_streams; ++i)
        info.streams.push_back(describe(fmt.get(), fmt->streams[i]));
    if (info.duration <= 0) {
        for (const auto& s : info.streams) info.duration = std::max(info.duration, s.duration);
    }
    return info;
}

}  // namespace cdlc
