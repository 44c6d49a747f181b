// One run of the copy path (remux.h): the state package_copy keeps from opening
// the master to the last segment. Its members are defined by job:
//   remux.cpp       the run in order, the demux loop, the results
//   open.cpp        track reading: sidecar subtitles, the master's streams, the
//                   video and audio tracks' set-up, the fast path, time zero
//   video_copy.cpp  video samples to the segmenter: timestamps, decode order,
//                   HEVC sync samples, the cut times audio follows
//   audio_copy.cpp  audio frames to their segmenters at the video's cuts, and
//                   the sidecar audio files
// (sample bytes are encrypted by the segmenters, cmaf/segmenter.h).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "av/streams.h"
#include "io/write_pool.h"
#include "remux/fast_path.h"
#include "remux/remux.h"
#include "remux/tracks.h"

namespace cdlc::remux {

// An audio track's output time 0 is `lead` before time zero (zero_us, the
// master's time zero in microseconds); the edit list skips it.
void align_audio(AudioTrack& audio, int64_t zero_us);

class CopyJob {
public:
    CopyJob(const std::string& input, const std::string& output_dir, double segment_seconds,
            const CopyOptions& options);
    CopyJob(const CopyJob&) = delete;
    CopyJob& operator=(const CopyJob&) = delete;

    PipelineResult run();

private:
    using PacketPtr = std::unique_ptr<AVPacket, PacketFree>;
    using FormatPtr = std::unique_ptr<AVFormatContext, FormatCloser>;

    struct TextOut {
        std::string id;
        TrackInfo track;
        std::unique_ptr<TextStreamReader> reader;
        std::vector<Cue> cues;
    };

    // open.cpp
    void read_sidecar_text();
    void open_input();
    void choose_streams();
    void open_video();
    void setup_audio(AudioTrack& audio, const StreamLabel& label);
    void choose_fast_path();
    void find_time_zero();
    void open_text_readers();

    // remux.cpp
    void dispatch(AVPacket* p);
    void copy_packets();
    void read_text_second_pass();
    PipelineResult collect();

    // video_copy.cpp
    void emit_video(Pending&& q);
    void pop_reordered();
    void submit_video(Pending&& q);
    int vcl_type(const Pending& q);
    void submit_hevc(Pending&& q);
    void on_video(AVPacket* pkt);

    // audio_copy.cpp
    void write_audio(AudioTrack& audio, Pending&& q);
    void release_audio(AudioTrack& audio, bool all);
    void push_audio_frame(AudioTrack& audio, const uint8_t* d, size_t n, int64_t ts, int64_t duration,
                          AVPacket* pkt);
    void on_audio(AudioTrack& audio, AVPacket* pkt);
    void copy_sidecar_audio();

    // In the order package_copy once declared them as locals, so they are
    // destroyed in the same order (the write pool before the tracks' segmenters).
    const std::string& input_;
    const std::string& output_dir_;
    const double segment_seconds_;
    const CopyOptions& options_;
    std::vector<TextOut> sidecar_texts_;
    FormatPtr fmt_;
    const std::string transcode_hint_ = " cannot be packaged without re-encoding; transcode it instead";
    PipelineResult result_;
    std::set<std::string> ids_;
    VideoTrack video_;
    std::vector<std::unique_ptr<AudioTrack>> audios_;
    std::vector<TextOut> texts_;
    std::map<int, AudioTrack*> audio_of_stream_;
    std::map<int, size_t> text_of_stream_;
    int audio_n_ = 0;
    std::shared_ptr<WritePool> pool_;
    std::unique_ptr<FastSource> fast_;
    AVFormatContext* packets_ = nullptr;  // what the demux loop reads: fast_->fmt or fmt_
    PacketPtr pkt_;
    std::deque<PacketPtr> prefetched_;    // read while looking for time zero
    bool eof_ = false;
    int64_t origin_us_ = 0;               // time zero, microseconds of the master
    std::vector<int64_t> boundaries_;     // video cut times, video output ticks (append only)
    std::optional<Pending> held_hevc_;    // see submit_hevc
    int held_type_ = -1;
    std::vector<FormatPtr> sidecar_fmts_;
};

}  // namespace cdlc::remux
