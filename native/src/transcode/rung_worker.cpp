#include "transcode/rung_worker.h"

extern "C" {
#include <libavutil/pixdesc.h>
}

#include "codec/av1.h"
#include "codec/nal.h"
#include "common/error.h"
#include "transcode/rendition_output.h"
#include "transcode/video_encoder.h"

namespace cdlc::transcode {

namespace {
constexpr size_t kFrameQueue = 12;  // decoded frames waiting per rung (refs, not copies)

// RGB or palette pictures: swscale makes YCbCr of them with a matrix.
bool is_rgb(const AVFrame* f) {
    const auto* desc = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(f->format));
    return desc && (desc->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_PAL));
}

// The range of ``f``'s pictures once swscale made them yuv420p. It reads yuvj*,
// gray and RGB as full range and writes limited range; other YCbCr it leaves in
// the range it came in (their tag carries over).
AVColorRange converted_range(const AVFrame* f) {
    if (f->format == AV_PIX_FMT_YUV420P) return f->color_range;
    const auto* desc = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(f->format));
    if (!desc) return f->color_range;
    const bool rgb = is_rgb(f);
    const bool yuvj = std::string(desc->name).rfind("yuvj", 0) == 0;
    const bool gray = desc->nb_components <= 2 && !rgb;  // gray, gray + alpha
    return yuvj || gray || rgb ? AVCOL_RANGE_MPEG : f->color_range;
}
}  // namespace

template class QueueWorker<RungWorker, av::FramePtr>;

RungWorker::RungWorker(RungConfig rung, RunState& state, const std::string& input)
    : QueueWorker(state, kFrameQueue), rung_(std::move(rung)), input_(input) {}

RungWorker::~RungWorker() { release_video_encoder(enc_); }

void RungWorker::open(int width, int height, AVRational fps, uint32_t timescale, int gop_frames,
                      const TranscodeConfig& cfg, const AVFrame* first, int threads) {
    width_ = width;
    height_ = height;
    fps_ = fps;
    timescale_ = timescale;
    VideoEncoderParams p;
    p.width = width;
    p.height = height;
    p.frame_rate = fps;
    p.gop_frames = gop_frames;
    p.preset = cfg.preset;
    p.threads = threads;
    range_ = converted_range(first);
    p.color_range = range_;
    p.color_primaries = first->color_primaries;
    p.color_trc = first->color_trc;
    // An RGB master (PNG, QuickTime Animation, FFV1 RGB) is turned into YCbCr with
    // swscale's default BT.601 matrix: the tag says that matrix, not the source's
    // GBR (players would decode the YCbCr as RGB). YCbCr sources keep their matrix:
    // swscale does not convert between YCbCr matrices, so their tags carry over.
    p.colorspace = is_rgb(first) ? AVCOL_SPC_SMPTE170M : first->colorspace;
    enc_ = open_video_encoder(rung_, p);
    codec_ = encoder_codec(rung_.encoder);

    TrackInfo track;
    track.kind = TrackKind::Video;
    track.codec = codec_;
    track.timescale = timescale;
    const auto* extradata = enc_->extradata;
    const auto extradata_size = static_cast<size_t>(enc_->extradata_size);
    if (codec_ == "av1") {
        track.extradata = av1_decoder_config(extradata, extradata_size);
        av1_reduced_still_ = av1_config_sequence_info(track.extradata).reduced_still_picture_header;
    } else if (codec_ == "hevc") {
        track.extradata = hevc_decoder_config(extradata, extradata_size);
    } else {
        track.extradata = avc_decoder_config(extradata, extradata_size);
    }
    track.width = width;
    track.height = height;
    track.frame_rate_num = fps.num;
    track.frame_rate_den = fps.den;
    track.bitrate = rung_.crf >= 0 ? enc_->rc_max_rate : rung_.bitrate;
    segmenter_ = open_rendition_output(track, cfg, rung_.id);
    pkt_ = av::make_packet();
}

RenditionResult RungWorker::result() const {
    RenditionResult r;
    r.id = rung_.id;
    r.track = segmenter_->track();
    r.segments = segmenter_->segments();
    if (parent_) r.scaled_from = parent_->rung_.id;
    return r;
}

void RungWorker::scale_from(RungWorker& parent) {
    parent_ = &parent;
    parent.children_.push_back(this);
}

bool RungWorker::passes_through(const AVFrame* f) const {
    return f->width == width_ && f->height == height_ && f->format == AV_PIX_FMT_YUV420P;
}

AVFrame* RungWorker::free_frame() {
    for (auto& f : pool_)
        if (av_frame_is_writable(f.get())) return f.get();
    av::FramePtr f = av::make_frame();
    f->width = width_;
    f->height = height_;
    f->format = AV_PIX_FMT_YUV420P;
    check_av(av_frame_get_buffer(f.get(), 0), "allocate frame", rung_.id);
    pool_.push_back(std::move(f));
    return pool_.back().get();
}

void RungWorker::encode(AVFrame* in) {
    AVFrame* send = nullptr;
    if (in) {
        if (passes_through(in)) {
            send = in;  // the 1:1 rung: the decoded buffer goes to the encoder as is
        } else {
            sws_.reset(sws_getCachedContext(sws_.release(), in->width, in->height,
                                            static_cast<AVPixelFormat>(in->format), width_,
                                            height_, AV_PIX_FMT_YUV420P, SWS_BICUBIC, nullptr,
                                            nullptr, nullptr));
            if (!sws_) throw Error("swscale cannot convert to " + rung_.id + " for " + input_);
            AVFrame* scaled = free_frame();
            sws_scale(sws_.get(), in->data, in->linesize, 0, in->height, scaled->data,
                      scaled->linesize);
            scaled->pts = in->pts;
            scaled->pict_type = in->pict_type;
            scaled->key_frame = in->key_frame;
            scaled->color_range = range_;  // what the encoder was opened with
            send = scaled;
        }
        send->sample_aspect_ratio = AVRational{1, 1};
        for (RungWorker* c : children_) {
            av::FramePtr ref(av_frame_clone(send));  // a new reference, not a copy
            if (!ref) throw Error("out of memory referencing a frame");
            if (!c->push(std::move(ref), {})) return;  // the run stopped
        }
    }
    int ret = avcodec_send_frame(enc_.get(), send);
    if (ret < 0 && !(ret == AVERROR_EOF && !send))
        check_av(ret, "encode video", rung_.id + " of " + input_);
    for (;;) {
        if (state_.stop) return;
        ret = avcodec_receive_packet(enc_.get(), pkt_.get());
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
        check_av(ret, "encode video", rung_.id + " of " + input_);
        write_packet(pkt_.get());
        av_packet_unref(pkt_.get());
    }
    if (in) frames_.fetch_add(1);
}

void RungWorker::write_packet(const AVPacket* pkt) {
    const AVRational tb = enc_->time_base;
    const AVRational ts{1, static_cast<int>(timescale_)};
    // Raw encoder times: with B-frames the first decode time is negative; the
    // segmenter shifts decode times by the first composition delay, so each IDR's
    // decode time equals its presentation time, a multiple of the GOP (segmenter.h).
    EncodedPacket ep;
    const auto size = static_cast<size_t>(pkt->size);
    if (codec_ == "av1") {
        ep.data = av1_sample_from_temporal_unit(pkt->data, size);
        ep.keyframe = av1_is_sync_sample(ep.data.data(), ep.data.size(), av1_reduced_still_);
    } else if (codec_ == "hevc") {
        ep.data = hevc_sample_from_annexb(pkt->data, size);
        ep.keyframe = hevc_is_idr_sample(ep.data.data(), ep.data.size());
    } else {
        ep.data = annexb_to_length_prefixed(pkt->data, size);
        ep.keyframe = (pkt->flags & AV_PKT_FLAG_KEY) != 0;
    }
    ep.pts = av_rescale_q(pkt->pts, tb, ts);
    ep.dts = av_rescale_q(pkt->dts, tb, ts);
    ep.duration = av_rescale_q(1, av_inv_q(fps_), ts);
    segmenter_->write(ep);
}

}  // namespace cdlc::transcode
