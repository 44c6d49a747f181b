// The run of one transcode (transcoder.h): the demux thread's side of it. It owns
// the master, the video decoder and normalisation graph, the rung workers and the
// audio workers. Its members are defined by job:
//   pipeline.cpp   the run from start to result, config checks, stop
//   inputs.cpp     stream choice: video, audio streams and sidecars, text streams
//   span.cpp       span checks and the seek to a span's start
//   decode.cpp     demux loop, video decode, progress
//   normalise.cpp  the normalisation graph, the frames it emits, rung start-up
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern "C" {
#include <libavfilter/avfilter.h>
}

#include "av/av_util.h"
#include "av/streams.h"
#include "transcode/audio_worker.h"
#include "transcode/pictures.h"
#include "transcode/rung_worker.h"
#include "transcode/transcoder.h"
#include "transcode/worker.h"

namespace cdlc::transcode {

using Clock = std::chrono::steady_clock;

class Pipeline {
public:
    Pipeline(const TranscodeConfig& cfg, std::atomic<bool>& stop, const ProgressFn& progress);
    ~Pipeline();
    Pipeline(const Pipeline&) = delete;
    Pipeline& operator=(const Pipeline&) = delete;

    PipelineResult run();

private:
    // pipeline.cpp
    void validate() const;
    void rethrow_if_stopped();
    void wait_for_workers();

    // inputs.cpp
    void open_video();
    void open_audio();
    bool whole_run() const { return cfg_.span_start <= 0 && cfg_.span_end <= 0; }
    void open_text();
    void read_sidecar_text();
    void open_sidecar_audio();

    // span.cpp
    std::string span_text() const;
    void validate_span() const;
    int64_t gop_of(int64_t n) const;
    int64_t first_frame_at(double seconds) const;
    void seek_to_span();
    int64_t first_timestamp(const AVStream* st);

    // decode.cpp
    void report_progress();
    [[noreturn]] void read_failed(int ret);
    // The input is an http(s) URL read remotely (TranscodeConfig::remote_timeout).
    bool remote() const { return cfg_.remote_timeout > 0 && av::is_url(cfg_.input); }
    // How far short of the master's stated end a remote read may stop (container
    // durations against the frames there are) before it counts as a failed read.
    static constexpr double kRemoteEndSlack = 0.5;
    void check_remote_read(int ret) const;
    void check_remote_end() const;
    void note_audio(const AVPacket* pkt);
    void demux();
    [[noreturn]] void video_corrupt(int ret, int64_t at_pts);
    bool tolerate_errors();
    void decode_video(const AVPacket* pkt);

    // normalise.cpp
    std::string graph_description(const AVFrame* f) const;
    void build_graph(const AVFrame* f);
    void filter_frame(AVFrame* f);
    void pull_graph();
    void finish_video();
    void start_rungs(const AVFrame* f);
    void chain_rungs(const AVFrame* f, const std::vector<std::pair<int, int>>& sizes);
    void emit(AVFrame* f);

    // A text rendition: cues read from a master stream (reader) or a sidecar file.
    struct TextOut {
        std::string id;
        TrackInfo track;
        std::unique_ptr<TextStreamReader> reader;
        std::vector<Cue> cues;
    };

    const TranscodeConfig& cfg_;
    RunState state_;
    const ProgressFn& progress_;
    bool stop_requested_on_exit_ = false;
    av::FormatPtr fmt_;
    AVStream* vst_ = nullptr;
    AVStream* ast_ = nullptr;
    av::CodecPtr vdec_;
    av::FramePtr frame_, filtered_;
    av::GraphPtr graph_;
    AVFilterContext* src_ = nullptr;
    AVFilterContext* sink_ = nullptr;
    int graph_w_ = 0, graph_h_ = 0, graph_fmt_ = -1;
    AVRational fps_{30, 1};
    uint32_t timescale_ = 90000;
    int gop_frames_ = 60;
    int rotation_ = 0;
    bool interlaced_hint_ = false;
    int64_t origin_ = 0;
    int64_t next_guess_ = 0;
    int64_t last_end_ = 0;
    double expected_frames_ = 0;
    double master_seconds_ = 0;   // video duration as the container states it
    double span_seconds_ = 0;     // of the span, clipped to the master
    int64_t first_frame_ = 0;     // span in output frames: [first_frame_, end_frame_)
    int64_t end_frame_ = -1;      // -1: to the end
    bool video_done_ = false;     // a frame at or past end_frame_ came out
    bool audio_done_ = false;     // an audio packet past the span's end (+ tail) was read
    int64_t audio_origin_ = 0;    // origin_ in the audio stream's time base
    double audio_seconds_ = 0;    // latest audio packet read, seconds from time zero
    int64_t decoded_ = 0;
    int early_errors_ = 0;
    int64_t frames_out_ = 0;
    int64_t last_out_pts_ = INT64_MIN;
    int64_t last_gop_ = -1;
    bool rungs_started_ = false;
    std::vector<std::unique_ptr<RungWorker>> rungs_;
    AudioWorker* audio_ = nullptr;  // the one that drives a span's audio (the best stream)
    std::vector<av::FormatPtr> sidecar_fmts_;         // outlive the workers reading them
    std::vector<std::unique_ptr<AudioWorker>> audios_; // master streams first, then sidecars
    size_t master_audio_ = 0;
    std::map<int, AudioWorker*> audio_of_stream_;
    std::vector<std::thread> sidecar_threads_;
    std::set<std::string> ids_;
    std::vector<TextOut> texts_, sidecar_texts_;
    std::map<int, size_t> text_of_stream_;
    std::vector<SkippedStream> skipped_;
    Clock::time_point last_progress_{};
    PictureTap pictures_;
};

}  // namespace cdlc::transcode
