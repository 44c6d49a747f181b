// The demux thread's loop: packets of the master to the video decoder, the audio
// workers and the text readers; decoded pictures on to the normalisation graph.
#include "transcode/pipeline.h"

#include <algorithm>

#include "av/av_log.h"
#include "common/error.h"
#include "transcode/timeline.h"

namespace cdlc::transcode {

namespace {
constexpr auto kProgressEvery = std::chrono::milliseconds(100);
// A span's audio is read this far past its end, so the last kept packet is complete.
constexpr double kAudioTailSeconds = 0.2;
}  // namespace

void Pipeline::report_progress() {
    if (!progress_) return;
    const auto now = Clock::now();
    if (now - last_progress_ < kProgressEvery) return;
    last_progress_ = now;
    double fraction = 0.0;
    if (cfg_.video) {
        int64_t done = frames_out_;
        for (auto& r : rungs_) done = std::min(done, r->frames_encoded());
        fraction = expected_frames_ > 0 ? static_cast<double>(done) / expected_frames_ : 0.0;
    } else if (span_seconds_ > 0) {
        fraction = (audio_seconds_ - cfg_.span_start) / span_seconds_;
    }
    progress_(std::clamp(fraction, 0.0, 0.99));
}

void Pipeline::check_remote_read(int ret) const {
    // Over http a dropped connection, or a refused reconnection when the demuxer
    // seeks to its next sample ("partial file"), is the network's fault, not the
    // master's (the planner read it whole): an IOError for another attempt, never
    // the end of the master (a span cut short would pass for whole) nor corrupt
    // data (which would fail the job for good).
    if (!remote()) return;
    const int err = fmt_->pb && fmt_->pb->error < 0 ? fmt_->pb->error : ret;
    if (err >= 0 || err == AVERROR_EOF) return;
    const std::string why = av::recent_errors(fmt_->iformat->name);
    av::remote_read_failed(cfg_.input, "failed: " + av_error_text(err) + (why.empty() ? "" : " (" + why + ")"),
                           err);
}

void Pipeline::check_remote_end() const {
    // libavformat's mov demuxer takes a refused reconnection on its seek to the
    // next sample for the end of the file ("partial file", then EOF, no error on
    // the context): over http, an end before the master's own is a failed read.
    if (!remote() || master_seconds_ <= 0) return;
    double want = 0, got = 0;
    if (cfg_.video) {
        if (video_done_) return;  // the span's end was reached
        want = cfg_.span_end > 0 ? std::min(cfg_.span_end, master_seconds_) : master_seconds_;
        got = frames_out_ > 0 ? static_cast<double>(last_out_pts_ + 1) * fps_.den / fps_.num
                              : cfg_.span_start;
    } else if (audio_ && !audio_done_ && ast_ && ast_->duration > 0 &&
               ast_->start_time != AV_NOPTS_VALUE) {
        // The audio part: to the audio stream's own end, from time zero.
        const double end = static_cast<double>(ast_->start_time + ast_->duration - audio_origin_) *
                           av_q2d(ast_->time_base);
        want = cfg_.span_end > 0 ? std::min(cfg_.span_end, end) : end;
        got = audio_seconds_ + 0.1;  // the last packet's start, not its end
    }
    if (got + kRemoteEndSlack >= want) return;
    av::remote_read_failed(cfg_.input, "ended at " + seconds_text(got) + " of " + seconds_text(want) +
                                           ": a read failed (the connection dropped)",
                           AVERROR(EIO));
}

[[noreturn]] void Pipeline::read_failed(int ret) {
    check_remote_read(ret);
    std::string why = av::recent_errors(fmt_->iformat->name);
    throw InvalidDataError("read packet failed for " + cfg_.input + ": " + av_error_text(ret) +
                               (why.empty() ? "" : " (" + why + ")"),
                           ret);
}

// Audio packets are read until they pass the span's end (plus the tail).
void Pipeline::note_audio(const AVPacket* pkt) {
    const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    if (ts == AV_NOPTS_VALUE) return;
    const double t = static_cast<double>(ts - audio_origin_) * av_q2d(ast_->time_base);
    audio_seconds_ = std::max(audio_seconds_, t);
    if (cfg_.span_end > 0 && t >= cfg_.span_end + kAudioTailSeconds) audio_done_ = true;
}

void Pipeline::demux() {
    av::PacketPtr pkt = av::make_packet();
    const auto on_wait = [this] { report_progress(); };
    for (;;) {
        rethrow_if_stopped();
        if ((!cfg_.video || video_done_) && (!audio_ || audio_done_)) return;  // the span is complete
        int ret = av_read_frame(fmt_.get(), pkt.get());
        if (ret == AVERROR(EAGAIN)) continue;
        if (ret == AVERROR_EOF) {
            check_remote_read(0);
            break;
        }
        if (ret < 0) {
            check_remote_read(ret);
            if (fmt_->pb && avio_feof(fmt_->pb) && ret != AVERROR_INVALIDDATA) break;
            read_failed(ret);
        }
        if (pkt->stream_index == vst_->index) {
            if (cfg_.video && !video_done_) decode_video(pkt.get());
        } else if (auto a = audio_of_stream_.find(pkt->stream_index);
                   a != audio_of_stream_.end() && !audio_done_) {
            if (a->second == audio_) note_audio(pkt.get());
            av::PacketPtr copy(av_packet_clone(pkt.get()));
            if (!copy) throw Error("out of memory queuing an audio packet");
            a->second->push(std::move(copy), on_wait);
        } else if (auto t = text_of_stream_.find(pkt->stream_index); t != text_of_stream_.end()) {
            texts_[t->second].reader->packet(pkt.get());
        }
        av_packet_unref(pkt.get());
        report_progress();
    }
    if (cfg_.video && !video_done_) decode_video(nullptr);
}

[[noreturn]] void Pipeline::video_corrupt(int ret, int64_t at_pts) {
    std::string why = av::recent_errors(vdec_->codec->name);
    double at = at_pts != AV_NOPTS_VALUE
                    ? static_cast<double>(at_pts - origin_) * av_q2d(vst_->time_base)
                    : static_cast<double>(decoded_) / av_q2d(fps_);
    throw InvalidDataError("decode video failed for " + cfg_.input + ": " + av_error_text(ret) +
                               " near " + seconds_text(at) + " (frame " + std::to_string(decoded_) +
                               (why.empty() ? "" : "; " + std::string(vdec_->codec->name) + ": " + why) +
                               ")",
                           AVERROR_INVALIDDATA);
}

// Streams cut mid-GOP (TS captures) start with undecodable pictures, and so may
// a span whose seek lands mid-GOP (MPEG-TS seeks by timestamp, not keyframe):
// errors are tolerated until the first picture decodes (a span: until its first
// frame is out, frames before it are dropped anyway), never after.
bool Pipeline::tolerate_errors() {
    const bool early = decoded_ == 0 || (cfg_.span_start > 0 && frames_out_ == 0);
    const int limit = cfg_.span_start > 0 ? 1000 : 200;
    return early && ++early_errors_ < limit;
}

void Pipeline::decode_video(const AVPacket* pkt) {
    const int64_t pkt_pts = pkt ? (pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts) : AV_NOPTS_VALUE;
    int ret = avcodec_send_packet(vdec_.get(), pkt);
    if (ret < 0 && ret != AVERROR_EOF) {
        if (tolerate_errors() && ret == AVERROR_INVALIDDATA) return;
        if (ret == AVERROR_INVALIDDATA) video_corrupt(ret, pkt_pts);
        check_av(ret, "decode video", cfg_.input);
    }
    for (;;) {
        if (state_.stop) return;
        ret = avcodec_receive_frame(vdec_.get(), frame_.get());
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
        if (ret == AVERROR_INVALIDDATA) {
            if (tolerate_errors()) continue;
            video_corrupt(ret, pkt_pts);
        }
        check_av(ret, "decode video", cfg_.input);
        if (frame_->decode_error_flags || (frame_->flags & AV_FRAME_FLAG_CORRUPT)) {
            if (tolerate_errors()) {
                av_frame_unref(frame_.get());
                continue;
            }
            video_corrupt(AVERROR_INVALIDDATA, frame_->best_effort_timestamp);
        }
        ++decoded_;
        filter_frame(frame_.get());
        av_frame_unref(frame_.get());
    }
    if (!pkt && decoded_ == 0) {
        std::string why = av::recent_errors(vdec_->codec->name);
        throw InvalidDataError("no video frame could be decoded from " + cfg_.input +
                                   (why.empty() ? "" : " (" + why + ")"),
                               AVERROR_INVALIDDATA);
    }
}

}  // namespace cdlc::transcode
