#include "transcode/pipeline.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <stdexcept>

#include "cmaf/encryption.h"
#include "common/error.h"
#include "text/webvtt_writer.h"
#include "transcode/timeline.h"
#include "transcode/video_encoder.h"

namespace cdlc::transcode {

Pipeline::Pipeline(const TranscodeConfig& cfg, std::atomic<bool>& stop, const ProgressFn& progress)
    : cfg_(cfg),
      state_(stop),
      progress_(progress),
      pictures_(PictureConfig{cfg.video ? cfg.thumbnail_interval : 0.0, cfg.thumbnail_long,
                              cfg.poster_long}) {}

Pipeline::~Pipeline() {
    // Any path out (success, failure, cancel) stops and joins every thread first.
    state_.stop = stop_requested_on_exit_ ? true : state_.stop.load();
    for (auto& r : rungs_) r->close();
    for (auto& a : audios_) a->close();
    for (auto& r : rungs_) r->join();
    for (std::thread& t : sidecar_threads_)
        if (t.joinable()) t.join();
    for (auto& a : audios_) a->join();
}

PipelineResult Pipeline::run() {
    stop_requested_on_exit_ = true;
    validate();
    read_sidecar_text();  // a bad subtitle file fails before any media work
    fmt_ = av::open_input(cfg_.input, cfg_.remote_timeout);
    open_video();
    open_audio();
    open_text();
    open_sidecar_audio();
    seek_to_span();
    demux();
    if (cfg_.video && !video_done_) finish_video();
    check_remote_end();
    if (cfg_.video && frames_out_ == 0)  // only a span can miss every frame
        throw std::invalid_argument("span " + span_text() + " holds no video frame of " + cfg_.input +
                                    " (" + seconds_text(master_seconds_) + " long)");
    for (auto& r : rungs_)
        if (r->fed_by_pipeline()) r->close();  // the others are closed by the rung feeding them
    for (size_t i = 0; i < master_audio_; ++i) audios_[i]->close();  // sidecars close their own
    wait_for_workers();
    rethrow_if_stopped();
    stop_requested_on_exit_ = false;

    PipelineResult result;
    for (auto& r : rungs_) result.renditions.push_back(r->result());
    for (auto& a : audios_) result.renditions.push_back(a->result());
    result.duration_seconds = cfg_.video ? static_cast<double>(frames_out_) * fps_.den / fps_.num
                              : audio_->seconds();
    for (TextOut& t : texts_) {
        std::vector<Cue> cues = t.reader ? std::move(t.reader->cues()) : std::move(t.cues);
        std::stable_sort(cues.begin(), cues.end(),
                         [](const Cue& a, const Cue& b) { return a.start_ms < b.start_ms; });
        result.renditions.push_back(write_webvtt_rendition(
            t.id, t.track, cues, (std::filesystem::path(cfg_.output_dir) / t.id).string(),
            cfg_.segment_seconds, result.duration_seconds));
    }
    result.skipped = skipped_;
    result.source_frames = decoded_;
    result.thumbnails = pictures_.take_thumbnails();
    result.poster = pictures_.take_poster();
    if (progress_) progress_(1.0);
    return result;
}

void Pipeline::validate() const {
    validate_encryption(cfg_.encryption);
    if (!cfg_.video && !cfg_.audio)
        throw std::invalid_argument("nothing to encode: video and audio are both off");
    if (cfg_.video && cfg_.rungs.empty()) throw std::invalid_argument("transcode needs at least one rung");
    if (!(cfg_.gop_seconds > 0) || !(cfg_.segment_seconds > 0))
        throw std::invalid_argument("gop_seconds and segment_seconds must be > 0");
    validate_span();
    const double ratio = cfg_.segment_seconds / cfg_.gop_seconds;
    if (ratio < 1 - 1e-9 || std::fabs(ratio - std::round(ratio)) > 1e-6)
        throw std::invalid_argument("segment_seconds (" + std::to_string(cfg_.segment_seconds) +
                                    ") must be a multiple of gop_seconds (" +
                                    std::to_string(cfg_.gop_seconds) + ")");
    std::set<std::string> ids;
    for (const auto& r : cfg_.rungs) {
        if (!cfg_.video) break;  // audio only: rungs are ignored
        if (r.id.empty() || r.id.find('/') != std::string::npos || r.id == "." || r.id == "..")
            throw std::invalid_argument("bad rung id '" + r.id + "'");
        if (!ids.insert(r.id).second) throw std::invalid_argument("duplicate rung id " + r.id);
        // An unknown encoder, or one the run cannot use, fails before any decoding.
        if (encoder_codec(r.encoder) == "av1" && cfg_.encryption.enabled())
            throw std::invalid_argument("rung " + r.id +
                                        ": encryption of AV1 tracks is not supported (H.264 and HEVC are)");
        if (r.width < 0 || r.height < 0 || (r.crf < 0 && r.bitrate <= 0))
            throw std::invalid_argument("rung " + r.id + ": needs a size >= 0 and a bitrate > 0");
    }
    if (cfg_.audio && ids.count(cfg_.audio_id))
        throw std::invalid_argument("audio id " + cfg_.audio_id + " clashes with a rung id");
    if (cfg_.audio_channels < 1 || cfg_.audio_sample_rate < 8000)
        throw std::invalid_argument("bad audio channel count or sample rate");
}

void Pipeline::rethrow_if_stopped() {
    if (std::exception_ptr e = state_.first_error()) std::rethrow_exception(e);
    if (state_.stop) throw CancelledError("transcode of " + cfg_.input + " cancelled");
}

void Pipeline::wait_for_workers() {
    for (auto& r : rungs_) r->join();
    for (std::thread& t : sidecar_threads_)
        if (t.joinable()) t.join();
    for (auto& a : audios_) a->join();
}

}  // namespace cdlc::transcode
