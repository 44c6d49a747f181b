// Span ("chunk") encoding: the checks of a span against the segment grid, the
// span in output frames, and the seek to its start. The frames before and after
// a span are dropped in emit() (normalise.cpp).
#include "transcode/pipeline.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "common/error.h"
#include "transcode/timeline.h"

namespace cdlc::transcode {

namespace {
// A span with audio seeks this much before its start, so the AAC encoder's
// pre-roll (its priming plus one frame, ~43 ms at 48 kHz) has source audio under it.
constexpr double kAudioPrerollSeconds = 0.1;
}  // namespace

std::string Pipeline::span_text() const {
    char buf[96];
    if (cfg_.span_end > 0)
        std::snprintf(buf, sizeof(buf), "[%g s, %g s)", cfg_.span_start, cfg_.span_end);
    else
        std::snprintf(buf, sizeof(buf), "[%g s, end)", cfg_.span_start);
    return buf;
}

// The engine cuts masters at segment boundaries (docs/jobs.md); anything else
// could not be stitched by merging segment indexes.
void Pipeline::validate_span() const {
    const double seg = cfg_.segment_seconds;
    auto on_boundary = [seg](double t) {
        const double k = t / seg;
        return std::fabs(k - std::round(k)) <= 1e-6 * std::max(1.0, std::fabs(k));
    };
    if (!std::isfinite(cfg_.span_start) || cfg_.span_start < 0)
        throw std::invalid_argument("span start must be a finite number of seconds >= 0, not " +
                                    std::to_string(cfg_.span_start));
    if (!std::isfinite(cfg_.span_end) || cfg_.span_end < 0)
        throw std::invalid_argument("span end must be a finite number of seconds >= 0 (0 = to the end), "
                                    "not " + std::to_string(cfg_.span_end));
    if (!on_boundary(cfg_.span_start))
        throw std::invalid_argument("span start " + seconds_text(cfg_.span_start) +
                                    " is not a multiple of segment_seconds (" + seconds_text(seg) + ")");
    if (cfg_.span_end > 0 && !on_boundary(cfg_.span_end))
        throw std::invalid_argument("span end " + seconds_text(cfg_.span_end) +
                                    " is not a multiple of segment_seconds (" + seconds_text(seg) + ")");
    if (cfg_.span_end > 0 && cfg_.span_start >= cfg_.span_end)
        throw std::invalid_argument("span start " + seconds_text(cfg_.span_start) +
                                    " must be before its end " + seconds_text(cfg_.span_end));
}

// First output frame n whose time n/fps is at or after `seconds` (a multiple of
// gop_seconds), by the same test emit() uses to start GOPs, so the span's
// first frame is exactly the one-piece run's first frame of that GOP.
int64_t Pipeline::gop_of(int64_t n) const {
    const double t = static_cast<double>(n) * fps_.den / fps_.num;
    return static_cast<int64_t>(std::floor(t / cfg_.gop_seconds + 1e-9));
}

int64_t Pipeline::first_frame_at(double seconds) const {
    const int64_t k = std::llround(seconds / cfg_.gop_seconds);
    int64_t n = static_cast<int64_t>(std::ceil(seconds * fps_.num / fps_.den - 1e-6));
    while (gop_of(n) < k) ++n;
    while (n > 0 && gop_of(n - 1) >= k) --n;
    return n;
}

// Seeks the stream that drives the run (video, else audio) to the keyframe at
// or before the span start (less the audio pre-roll; less one frame for
// interlaced masters, so bwdif has the previous picture). Demuxers index decode
// times (an MP4's sync sample may present after the time asked for), so the
// first picture (audio: packet) is checked and the seek retried further back
// until it is not late. Every frame before the span is decoded and dropped
// later (emit), so the fps grid stays the one-piece run's, anchored at origin_.
void Pipeline::seek_to_span() {
    if (cfg_.span_start <= 0) return;
    AVStream* st = cfg_.video ? vst_ : ast_;
    double lead = ast_ ? kAudioPrerollSeconds : 0.0;
    if (cfg_.video && interlaced_hint_) lead = std::max(lead, 1.0 / av_q2d(fps_));
    const int64_t origin = av_rescale_q(origin_, vst_->time_base, st->time_base);
    const int64_t target =
        origin + av_rescale_q(std::llround((cfg_.span_start - lead) * AV_TIME_BASE), AV_TIME_BASE_Q,
                              st->time_base);
    const int64_t second = std::max<int64_t>(1, av_rescale_q(AV_TIME_BASE, AV_TIME_BASE_Q, st->time_base));
    int64_t back = 0, at = target;
    for (int attempt = 0;; ++attempt) {
        at = target - back;
        const int ret = avformat_seek_file(fmt_.get(), st->index, INT64_MIN, at, at, AVSEEK_FLAG_BACKWARD);
        if (ret < 0) {
            if (attempt == 0) return;  // not seekable: decode from the start, drop what precedes the span
            check_av(ret, "seek to " + seconds_text(cfg_.span_start - lead), cfg_.input);
        }
        const int64_t first = first_timestamp(st);
        if (first == AV_NOPTS_VALUE) {
            // No clean picture from here on: past the end, or (MPEG-TS seeks by
            // bytes) inside a GOP whose keyframe lies further back. Over http,
            // before the master's end: a read that failed (check_remote_end).
            if (remote() && cfg_.span_start + kRemoteEndSlack < master_seconds_)
                av::remote_read_failed(cfg_.input, "found no picture after " + seconds_text(cfg_.span_start) +
                                                       " of " + seconds_text(master_seconds_) +
                                                       ": a read failed",
                                       AVERROR(EIO));
            if (at < origin || attempt >= 12)
                throw std::invalid_argument("span start " + seconds_text(cfg_.span_start) +
                                            " is at or past the end of " + cfg_.input);
        } else if (first <= target || at < origin || attempt >= 12) {
            break;
        }
        back = back ? back * 2 : second;
        // Last resort: before the first timestamp, i.e. the start of the file (MPEG-TS
        // flags keyframes loosely, so a seek near the start can land mid-GOP).
        if (target - back <= origin) back = target - origin + second;
    }
    check_av(avformat_seek_file(fmt_.get(), st->index, INT64_MIN, at, at, AVSEEK_FLAG_BACKWARD),
             "seek to " + seconds_text(cfg_.span_start - lead), cfg_.input);
    avcodec_flush_buffers(vdec_.get());
    decoded_ = 0;
    early_errors_ = 0;
    next_guess_ = av_rescale_q(at - origin, st->time_base, vst_->time_base);
}

// Timestamp (st's time base) of the first clean picture (video) or packet
// (audio) read from here; AV_NOPTS_VALUE at the end of the file. Decode errors
// before the first picture are expected after a seek and skipped.
int64_t Pipeline::first_timestamp(const AVStream* st) {
    av::PacketPtr pkt = av::make_packet();
    const bool video = st == vst_;
    bool flushed = false;
    while (!flushed) {
        rethrow_if_stopped();
        int ret = av_read_frame(fmt_.get(), pkt.get());
        if (ret == AVERROR(EAGAIN)) continue;
        if (ret < 0 && ret != AVERROR_EOF) read_failed(ret);
        if (ret == AVERROR_EOF) {
            if (!video) return AV_NOPTS_VALUE;
            avcodec_send_packet(vdec_.get(), nullptr);
            flushed = true;
        } else if (pkt->stream_index != st->index) {
            av_packet_unref(pkt.get());
            continue;
        } else if (!video) {
            const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
            av_packet_unref(pkt.get());
            if (ts != AV_NOPTS_VALUE) return ts;
            continue;
        } else {
            avcodec_send_packet(vdec_.get(), pkt.get());  // errors: see above
            av_packet_unref(pkt.get());
        }
        while (avcodec_receive_frame(vdec_.get(), frame_.get()) >= 0) {
            const bool bad = frame_->decode_error_flags || (frame_->flags & AV_FRAME_FLAG_CORRUPT);
            const int64_t ts = frame_->best_effort_timestamp;
            av_frame_unref(frame_.get());
            if (!bad && ts != AV_NOPTS_VALUE) {
                avcodec_flush_buffers(vdec_.get());
                return ts;
            }
        }
    }
    avcodec_flush_buffers(vdec_.get());  // out of draining, for a seek further back
    return AV_NOPTS_VALUE;
}

}  // namespace cdlc::transcode
