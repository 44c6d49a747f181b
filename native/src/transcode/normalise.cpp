// Normalisation of the decoded video (libavfilter: deinterlace, constant rate
// via fps, rotation upright), and what becomes of its frames: the span's frames,
// keyframe flags on the GOP grid, stills, and one reference per rung.
#include "transcode/pipeline.h"

#include <cmath>
#include <cstdio>
#include <optional>
#include <utility>

extern "C" {
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
}

#include "common/error.h"
#include "transcode/timeline.h"

namespace cdlc::transcode {

std::string Pipeline::graph_description(const AVFrame* f) const {
    std::string chain;
    auto add = [&chain](const std::string& s) { chain += (chain.empty() ? "" : ",") + s; };
    // Deinterlace only pictures flagged interlaced (deint=interlaced), one output
    // frame per frame; bwdif's motion-adaptive interpolation beats yadif at 1080i.
    if (interlaced_hint_ || f->interlaced_frame) add("bwdif=mode=send_frame:parity=auto:deint=interlaced");
    char fps[96];
    // fps filter semantics: output frame n shows the input frame current at n/rate;
    // duplicates fill gaps, extras are dropped (VFR -> CFR), timeline starts at 0.
    // A span keeps start_time=0 too: after its seek fps fills back to 0 with
    // references to the first picture, which emit() drops (cheap: no copies),
    // and frame n is still at n/rate on the one-piece run's grid.
    std::snprintf(fps, sizeof(fps), "fps=fps=%d/%d:start_time=0:round=near", fps_.num, fps_.den);
    add(fps);
    if (rotation_ == 90) add("transpose=clock");
    else if (rotation_ == 270) add("transpose=cclock");
    else if (rotation_ == 180) add("hflip,vflip");
    return chain;
}

void Pipeline::build_graph(const AVFrame* f) {
    graph_.reset(avfilter_graph_alloc());
    if (!graph_) throw Error("out of memory allocating a filter graph");
    graph_->nb_threads = 1;
    AVRational sar = f->sample_aspect_ratio;
    if (sar.num <= 0 || sar.den <= 0) sar = vst_->codecpar->sample_aspect_ratio;
    if (sar.num <= 0 || sar.den <= 0) sar = AVRational{1, 1};
    char args[256];
    std::snprintf(args, sizeof(args),
                  "video_size=%dx%d:pix_fmt=%d:time_base=%d/%d:pixel_aspect=%d/%d:frame_rate=%d/%d",
                  f->width, f->height, f->format, vst_->time_base.num, vst_->time_base.den, sar.num,
                  sar.den, fps_.num, fps_.den);
    const std::string subject = "normalise video of " + cfg_.input;
    check_av(avfilter_graph_create_filter(&src_, avfilter_get_by_name("buffer"), "in", args, nullptr,
                                          graph_.get()),
             "create buffer source", subject);
    check_av(avfilter_graph_create_filter(&sink_, avfilter_get_by_name("buffersink"), "out", nullptr,
                                          nullptr, graph_.get()),
             "create buffer sink", subject);
    AVFilterInOut* outputs = avfilter_inout_alloc();
    AVFilterInOut* inputs = avfilter_inout_alloc();
    outputs->name = av_strdup("in");
    outputs->filter_ctx = src_;
    inputs->name = av_strdup("out");
    inputs->filter_ctx = sink_;
    const std::string desc = graph_description(f);
    int ret = avfilter_graph_parse_ptr(graph_.get(), desc.c_str(), &inputs, &outputs, nullptr);
    avfilter_inout_free(&inputs);
    avfilter_inout_free(&outputs);
    check_av(ret, "build filter graph '" + desc + "'", subject);
    check_av(avfilter_graph_config(graph_.get(), nullptr), "configure filter graph", subject);
    graph_w_ = f->width;
    graph_h_ = f->height;
    graph_fmt_ = f->format;
}

void Pipeline::filter_frame(AVFrame* f) {
    int64_t ts = f->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE) ts = next_guess_;
    else ts -= origin_;
    f->pts = ts;
    int64_t dur = f->pkt_duration > 0 ? f->pkt_duration : av_rescale_q(1, av_inv_q(fps_), vst_->time_base);
    next_guess_ = ts + dur;
    last_end_ = std::max(last_end_, ts + dur);
    if (!graph_ || f->width != graph_w_ || f->height != graph_h_ || f->format != graph_fmt_) {
        if (graph_) {  // resolution or format change mid-stream: drain, then rebuild
            check_av(av_buffersrc_close(src_, ts, 0), "flush filter graph", cfg_.input);
            pull_graph();
        }
        build_graph(f);
    }
    check_av(av_buffersrc_add_frame_flags(src_, f, AV_BUFFERSRC_FLAG_KEEP_REF), "filter video",
             cfg_.input);
    pull_graph();
}

void Pipeline::pull_graph() {
    for (;;) {
        if (state_.stop) return;
        int ret = av_buffersink_get_frame(sink_, filtered_.get());
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
        check_av(ret, "filter video", cfg_.input);
        emit(filtered_.get());
        av_frame_unref(filtered_.get());
    }
}

void Pipeline::finish_video() {
    if (!graph_) return;
    // Close at the end of the last frame so the fps filter emits the tail and the
    // output lasts as long as the source (within one frame).
    check_av(av_buffersrc_close(src_, last_end_, 0), "flush filter graph", cfg_.input);
    pull_graph();
}

void Pipeline::start_rungs(const AVFrame* f) {
    AVRational sar = av_buffersink_get_sample_aspect_ratio(sink_);
    if (sar.num <= 0 || sar.den <= 0) sar = AVRational{1, 1};
    const double dar = static_cast<double>(f->width) * sar.num / sar.den / f->height;
    std::vector<std::pair<int, int>> sizes;
    for (auto& r : rungs_) {
        const RungConfig& c = r->config();
        int w = c.width, h = c.height;
        if (w == 0 && h == 0) {
            h = even_at_least_2(f->height);
            w = even_at_least_2(f->height * dar);
        } else if (w == 0) {
            w = even_at_least_2(h * dar);
        } else if (h == 0) {
            h = even_at_least_2(w / dar);
        }
        w = even_at_least_2(w);
        h = even_at_least_2(h);
        sizes.emplace_back(w, h);
    }
    for (size_t i = 0; i < rungs_.size(); ++i)
        rungs_[i]->open(sizes[i].first, sizes[i].second, fps_, timescale_, gop_frames_, cfg_, f,
                        cfg_.encoder_threads);
    chain_rungs(f, sizes);
    for (auto& r : rungs_) r->start();
    rungs_started_ = true;
}

void Pipeline::chain_rungs(const AVFrame* f, const std::vector<std::pair<int, int>>& sizes) {
    // A rung that would scale the master takes the scaled pictures of a rung of its
    // own size instead (an earlier one: no cycles), else of a rung twice its size
    // (rung_worker.h says why only these). Feeding rungs are those that scale.
    const auto scales = [&](size_t j) { return !rungs_[j]->passes_through(f); };
    for (size_t i = 0; i < rungs_.size(); ++i) {
        if (!scales(i)) continue;
        const auto [w, h] = sizes[i];
        std::optional<size_t> parent;
        for (size_t j = 0; j < i && !parent; ++j)
            if (scales(j) && sizes[j] == sizes[i]) parent = j;
        for (size_t j = 0; j < rungs_.size() && !parent; ++j)
            if (scales(j) && sizes[j] == std::make_pair(2 * w, 2 * h)) parent = j;
        if (parent) rungs_[i]->scale_from(*rungs_[*parent]);
    }
}

void Pipeline::emit(AVFrame* f) {
    if (f->pts <= last_out_pts_) return;  // overlap after a mid-stream graph rebuild
    last_out_pts_ = f->pts;
    // A span keeps frames [first_frame_, end_frame_); those before it come from
    // the keyframe the seek landed on (and fps's fill from time zero).
    if (f->pts < first_frame_) return;
    if (end_frame_ >= 0 && f->pts >= end_frame_) {
        video_done_ = true;
        return;
    }
    if (!rungs_started_) start_rungs(f);
    // A keyframe at exactly every GOP boundary, by output time, on every rung.
    const double t = static_cast<double>(f->pts) * fps_.den / fps_.num;
    pictures_.offer(f, av_buffersink_get_sample_aspect_ratio(sink_), t);
    const int64_t gop = static_cast<int64_t>(std::floor(t / cfg_.gop_seconds + 1e-9));
    f->pict_type = gop != last_gop_ ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
    f->key_frame = gop != last_gop_;
    last_gop_ = gop;
    const auto on_wait = [this] { report_progress(); };
    for (auto& r : rungs_) {
        if (!r->fed_by_pipeline()) continue;  // its parent rung feeds it
        av::FramePtr ref(av_frame_clone(f));  // a new reference, not a copy of the picture
        if (!ref) throw Error("out of memory referencing a frame");
        if (!r->push(std::move(ref), on_wait)) return;
    }
    ++frames_out_;
}

}  // namespace cdlc::transcode
