// One-pass ABR transcoder (see transcoder.h). Stages and threads:
//
//   main thread:  demux ─► video decode ─► normalise (libavfilter: deinterlace,
//                 CFR via fps, rotation) ─► one reference-counted AVFrame ─┬─► rung queue ×N
//                 audio packets ─► audio queue                             │
//   rung thread ×N: swscale to the rung's size/8-bit 4:2:0 ─► H.264 encode ─► CmafSegmenter
//   audio thread: decode ─► swresample (48 kHz stereo) ─► AAC encode ─► CmafSegmenter
//
// Queues are bounded, so memory stays flat and the demuxer runs at the pace of the
// slowest rung. Every loop and every queue wait checks the stop flag, which both
// cancel() and the first failure of any stage set; the first failure is rethrown.
//
// A span (span_start/span_end, a chunk of a longer encode) changes only the ends:
// the demuxer seeks to the keyframe at or before its start, the normalised frames
// before it and from its end on are dropped in emit(), and the segmenters number
// from the span's first segment; the frame grid, keyframes and timestamps are
// the one-piece run's because time zero stays the master's first picture.
#include "transcode/transcoder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "av/streams.h"
#include "codec/av1.h"
#include "codec/nal.h"
#include "cmaf/segmenter.h"
#include "text/subtitle_parse.h"
#include "text/webvtt_writer.h"
#include "common/error.h"
#include "av/av_log.h"
#include "transcode/pictures.h"
#include "av/av_util.h"
#include "transcode/video_encoder.h"
#include "transcode/queue.h"

extern "C" {
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
}

namespace cdlc {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kFrameQueue = 12;    // decoded frames waiting per rung (refs, not copies)
constexpr size_t kPacketQueue = 256;  // audio packets waiting (they are small)
constexpr auto kProgressEvery = std::chrono::milliseconds(100);
// A span with audio seeks this much before its start, so the AAC encoder's
// pre-roll (its priming plus one frame, ~43 ms at 48 kHz) has source audio under it,
// and reads audio this far past its end, so the last kept packet is complete.
constexpr double kAudioPrerollSeconds = 0.1;
constexpr double kAudioTailSeconds = 0.2;

// Shared by all stages of one run: the stop flag and the first failure.
struct RunState {
    std::atomic<bool>& stop;
    std::mutex mutex;
    std::exception_ptr error;

    explicit RunState(std::atomic<bool>& s) : stop(s) {}
    void fail(std::exception_ptr e) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (!error) error = std::move(e);
        }
        stop = true;
    }
    std::exception_ptr first_error() {
        std::lock_guard<std::mutex> lock(mutex);
        return error;
    }
};

int even_at_least_2(double v) {
    long n = std::lround(v / 2.0) * 2;
    return static_cast<int>(std::max(2L, n));
}

// Output frame rate: the configured one, else the source's snapped to a broadcast
// rate. For VFR sources r_frame_rate (the capture's nominal rate, e.g. a phone's 30)
// is used when sane, so no captured frame is dropped; fps-filter semantics then fill
// the gaps. Interlaced streams whose r_frame_rate counts fields keep the frame rate.
AVRational choose_rate(const AVStream* st, const TranscodeConfig& cfg, bool interlaced) {
    if (cfg.fps_num > 0 && cfg.fps_den > 0) return AVRational{cfg.fps_num, cfg.fps_den};
    auto valid = [](AVRational q) { return q.num > 0 && q.den > 0 && av_q2d(q) < 1000; };
    const AVRational avg_q = st->avg_frame_rate, r_q = st->r_frame_rate;
    const double avg = valid(avg_q) ? av_q2d(avg_q) : 0, r = valid(r_q) ? av_q2d(r_q) : 0;
    double v = avg > 0 ? avg : r;
    if (avg > 0 && r > 0 && std::fabs(avg - r) / avg > 0.01) {  // variable frame rate
        const bool field_rate = interlaced && std::fabs(r - 2 * avg) / r < 0.02;
        if (!field_rate && r <= 60.5) v = r;
    }
    if (v <= 0) return AVRational{25, 1};
    static const AVRational standard[] = {{24000, 1001}, {24, 1}, {25, 1},         {30000, 1001},
                                          {30, 1},       {48, 1}, {50, 1},         {60000, 1001},
                                          {60, 1},       {15, 1}, {12, 1}};
    // Exact (container rounding) first, then the nearest standard rate within 1%
    // (a phone's 29.87 fps average is a 29.97/30 fps capture).
    for (const AVRational& q : standard)
        if (std::fabs(v - av_q2d(q)) / av_q2d(q) < 0.0003) return q;  // 29.97 vs 30 is 0.1%
    const AVRational* nearest = nullptr;
    for (const AVRational& q : standard) {
        const double d = std::fabs(v - av_q2d(q)) / av_q2d(q);
        if (d < 0.01 && (!nearest || d < std::fabs(v - av_q2d(*nearest)) / av_q2d(*nearest)))
            nearest = &q;
    }
    if (nearest) return *nearest;
    if (v > 60.5) return AVRational{60, 1};  // high-frame-rate capture: a streaming ladder tops at 60
    if (std::fabs(v - std::round(v)) < 0.01 * v) return AVRational{static_cast<int>(std::lround(v)), 1};
    return av_d2q(v, 1001000);
}

// mdhd timescale: 90 kHz when every frame lands on a tick (like MPEG-TS), else a
// multiple of the frame rate, so frame durations are exact integers.
uint32_t video_timescale(AVRational fps) {
    if ((90000LL * fps.den) % fps.num == 0) return 90000;
    int64_t k = std::max<int64_t>(1, 90000 / fps.num);
    return static_cast<uint32_t>(fps.num * k);
}

// Segment number of the span's first segment: the one-piece numbering (1-based).
int first_segment_number(const TranscodeConfig& cfg) {
    return static_cast<int>(std::llround(cfg.span_start / cfg.segment_seconds)) + 1;
}

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f s", s);
    return buf;
}

// ---------------------------------------------------------------------------
// One rung: scale + encode + segment, on its own thread.
class RungWorker {
public:
    RungWorker(RungConfig rung, RunState& state, const std::string& input)
        : rung_(std::move(rung)), state_(state), input_(input), queue_(kFrameQueue, state.stop) {}
    ~RungWorker() { release_video_encoder(enc_); }
    RungWorker(const RungWorker&) = delete;
    RungWorker& operator=(const RungWorker&) = delete;

    // Opens encoder and segmenter; called by the main thread once the first
    // normalised frame fixes the source size.
    void open(int width, int height, AVRational fps, uint32_t timescale, int gop_frames,
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
        const auto* desc = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(first->format));
        const bool jpeg_fmt = desc && std::string(desc->name).rfind("yuvj", 0) == 0;
        // swscale turns yuvj* into limited range; other formats keep their range
        // (and their matrix: swscale does not convert colour spaces, so tags carry over).
        p.color_range = jpeg_fmt ? AVCOL_RANGE_MPEG : first->color_range;
        p.color_primaries = first->color_primaries;
        p.color_trc = first->color_trc;
        p.colorspace = first->colorspace;
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
        const std::filesystem::path dir = std::filesystem::path(cfg.output_dir) / rung_.id;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw IOError("create output directory " + dir.string() + ": " + ec.message());
        segmenter_ = std::make_unique<CmafSegmenter>(track, dir.string(), cfg.segment_seconds);
        segmenter_->set_first_number(first_segment_number(cfg));
        segmenter_->set_encryption(cfg.encryption);
        scaled_ = av::make_frame();
        pkt_ = av::make_packet();
    }

    void start() { thread_ = std::thread([this] { loop(); }); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }
    bool push(av::FramePtr f, const std::function<void()>& on_wait) {
        return queue_.push(std::move(f), on_wait);
    }
    void close() { queue_.close(); }
    int64_t frames_encoded() const { return frames_.load(); }
    const RungConfig& config() const { return rung_; }
    int width() const { return width_; }
    int height() const { return height_; }
    RenditionResult result() const {
        RenditionResult r;
        r.id = rung_.id;
        r.track = segmenter_->track();
        r.segments = segmenter_->segments();
        return r;
    }

private:
    void loop() {
        try {
            av::FramePtr f;
            while (queue_.pop(f)) {
                encode(f.get());
                f.reset();
            }
            if (state_.stop) return;
            encode(nullptr);
            if (state_.stop) return;
            segmenter_->finish();
        } catch (...) {
            state_.fail(std::current_exception());
        }
    }

    void encode(AVFrame* in) {
        AVFrame* send = nullptr;
        if (in) {
            if (in->width == width_ && in->height == height_ && in->format == AV_PIX_FMT_YUV420P) {
                send = in;  // the 1:1 rung: the decoded buffer goes to the encoder as is
            } else {
                sws_.reset(sws_getCachedContext(sws_.release(), in->width, in->height,
                                                static_cast<AVPixelFormat>(in->format), width_,
                                                height_, AV_PIX_FMT_YUV420P, SWS_BICUBIC, nullptr,
                                                nullptr, nullptr));
                if (!sws_) throw Error("swscale cannot convert to " + rung_.id + " for " + input_);
                if (!scaled_->buf[0]) {
                    scaled_->width = width_;
                    scaled_->height = height_;
                    scaled_->format = AV_PIX_FMT_YUV420P;
                    check_av(av_frame_get_buffer(scaled_.get(), 0), "allocate frame", rung_.id);
                }
                // The encoder copied the previous picture; this only copies if it still holds it.
                check_av(av_frame_make_writable(scaled_.get()), "allocate frame", rung_.id);
                sws_scale(sws_.get(), in->data, in->linesize, 0, in->height, scaled_->data,
                          scaled_->linesize);
                scaled_->pts = in->pts;
                scaled_->pict_type = in->pict_type;
                scaled_->color_range = in->color_range;
                send = scaled_.get();
            }
            send->sample_aspect_ratio = AVRational{1, 1};
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

    void write_packet(const AVPacket* pkt) {
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

    RungConfig rung_;
    RunState& state_;
    std::string input_;
    BoundedQueue<av::FramePtr> queue_;
    std::thread thread_;
    std::atomic<int64_t> frames_{0};
    int width_ = 0, height_ = 0;
    AVRational fps_{30, 1};
    uint32_t timescale_ = 90000;
    av::CodecPtr enc_;
    std::string codec_ = "h264";      // the encoder's codec family (encoder_codec)
    bool av1_reduced_still_ = false;  // from the AV1 sequence header
    av::SwsPtr sws_;
    av::FramePtr scaled_;
    av::PacketPtr pkt_;
    std::unique_ptr<CmafSegmenter> segmenter_;
};

// ---------------------------------------------------------------------------
// Audio: decode, resample to 48 kHz stereo (downmixing any layout), AAC once for
// every rung, on its own thread.
class AudioWorker {
public:
    // st: the stream (of the master or of a sidecar file `input`); origin: its time
    // that becomes the output's time zero; id: the rendition id.
    AudioWorker(const AVStream* st, const TranscodeConfig& cfg, RunState& state, int64_t origin, std::string id,
                const StreamLabel& label, std::string input)
        : st_(st), cfg_(cfg), state_(state), origin_(origin), id_(std::move(id)), input_(std::move(input)),
          queue_(kPacketQueue, state.stop) {
        const AVCodec* dcodec = avcodec_find_decoder(st->codecpar->codec_id);
        if (!dcodec)
            throw NotFoundError("no decoder for audio codec " +
                                    std::string(avcodec_get_name(st->codecpar->codec_id)) + " in " +
                                    input_,
                                AVERROR_DECODER_NOT_FOUND);
        dec_.reset(avcodec_alloc_context3(dcodec));
        check_av(avcodec_parameters_to_context(dec_.get(), st->codecpar), "open audio decoder", input_);
        dec_->pkt_timebase = st->time_base;
        check_av(avcodec_open2(dec_.get(), dcodec, nullptr), "open audio decoder", input_);
        av::clear_errors(dcodec->name);

        const AVCodec* ecodec = avcodec_find_encoder(AV_CODEC_ID_AAC);
        if (!ecodec) throw NotFoundError("AAC encoder not found", AVERROR_ENCODER_NOT_FOUND);
        enc_.reset(avcodec_alloc_context3(ecodec));
        enc_->sample_rate = cfg.audio_sample_rate;
        enc_->sample_fmt = AV_SAMPLE_FMT_FLTP;
        av_channel_layout_default(&enc_->ch_layout, cfg.audio_channels);
        enc_->bit_rate = cfg.audio_bitrate;
        enc_->time_base = AVRational{1, cfg.audio_sample_rate};
        enc_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;  // AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1)
        check_av(avcodec_open2(enc_.get(), ecodec, nullptr), "open AAC encoder", input_);

        TrackInfo track;
        track.kind = TrackKind::Audio;
        track.codec = "aac";
        track.timescale = static_cast<uint32_t>(cfg.audio_sample_rate);
        track.extradata.assign(enc_->extradata, enc_->extradata + enc_->extradata_size);
        track.sample_rate = cfg.audio_sample_rate;
        track.channels = cfg.audio_channels;
        track.bitrate = cfg.audio_bitrate;
        track.language = label.language;
        track.name = label.name;
        // The encoder's priming samples (initial_padding) are decoded but not
        // presented: an edit list (ISO/IEC 14496-12 §8.6.6) starts the presentation
        // after them, so source time 0 plays together with the first video picture.
        track.presentation_offset = enc_->initial_padding;
        const std::filesystem::path dir = std::filesystem::path(cfg.output_dir) / id_;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw IOError("create output directory " + dir.string() + ": " + ec.message());
        segmenter_ = std::make_unique<CmafSegmenter>(track, dir.string(), cfg.segment_seconds);
        segmenter_->set_first_number(first_segment_number(cfg));
        segmenter_->set_encryption(cfg.encryption);
        // No runt at the end: audio that outlasts the video's last cut by a frame or
        // two joins the last full segment.
        segmenter_->set_tail_merge(cfg.segment_seconds / 2);
        // A span starts the encoder one frame plus its priming before span_start (so
        // the first packet kept is warmed up) and keeps the packets in the span, on
        // the one-piece timeline: track time t plays source time t - initial_padding.
        if (cfg.span_start > 0) {
            const int fs = enc_->frame_size > 0 ? enc_->frame_size : 1024;
            keep_from_ = std::llround(cfg.span_start * cfg.audio_sample_rate);
            base_ = keep_from_ - enc_->initial_padding - fs;
        }
        if (cfg.span_end > 0) keep_until_ = std::llround(cfg.span_end * cfg.audio_sample_rate);
        fifo_ = av_audio_fifo_alloc(AV_SAMPLE_FMT_FLTP, cfg.audio_channels, 4096);
        if (!fifo_) throw Error("out of memory allocating the audio FIFO");
        frame_ = av::make_frame();
        pkt_ = av::make_packet();
    }
    ~AudioWorker() {
        join();
        if (fifo_) av_audio_fifo_free(fifo_);
    }

    void start() { thread_ = std::thread([this] { loop(); }); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }
    bool push(av::PacketPtr p, const std::function<void()>& on_wait) {
        return queue_.push(std::move(p), on_wait);
    }
    void close() { queue_.close(); }
    const AVStream* stream() const { return st_; }
    // Length of the rendition as written (its segments), seconds.
    double seconds() const {
        int64_t total = 0;
        for (const SegmentRecord& s : segmenter_->segments()) total += s.duration;
        return static_cast<double>(total) / cfg_.audio_sample_rate;
    }
    RenditionResult result() const {
        RenditionResult r;
        r.id = id_;
        r.track = segmenter_->track();
        r.segments = segmenter_->segments();
        return r;
    }

private:
    void loop() {
        try {
            av::PacketPtr p;
            while (queue_.pop(p)) {
                decode(p.get());
                p.reset();
            }
            if (state_.stop) return;
            decode(nullptr);
            if (swr_) resample(nullptr);
            drain_fifo(true);
            encode(nullptr);
            if (state_.stop) return;
            segmenter_->finish();
        } catch (...) {
            state_.fail(std::current_exception());
        }
    }

    [[noreturn]] void corrupt(int ret) {
        std::string why = av::recent_errors(dec_->codec->name);
        throw InvalidDataError("decode audio failed for " + input_ + ": " + av_error_text(ret) +
                                   " after " + seconds_text(static_cast<double>(samples_in_) /
                                                            cfg_.audio_sample_rate) +
                                   (why.empty() ? "" : " (" + std::string(dec_->codec->name) +
                                                           ": " + why + ")"),
                               AVERROR_INVALIDDATA);
    }

    void decode(AVPacket* pkt) {
        int ret = avcodec_send_packet(dec_.get(), pkt);
        if (ret < 0 && ret != AVERROR_EOF) {
            if (ret == AVERROR_INVALIDDATA && decoded_ == 0) return;  // garbage before the first frame
            if (ret == AVERROR_INVALIDDATA) corrupt(ret);
            check_av(ret, "decode audio", input_);
        }
        for (;;) {
            if (state_.stop) return;
            ret = avcodec_receive_frame(dec_.get(), frame_.get());
            if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
            if (ret == AVERROR_INVALIDDATA) corrupt(ret);
            check_av(ret, "decode audio", input_);
            if (frame_->decode_error_flags || (frame_->flags & AV_FRAME_FLAG_CORRUPT))
                corrupt(AVERROR_INVALIDDATA);
            ++decoded_;
            if (!swr_) open_resampler(frame_.get());
            resample(frame_.get());
            av_frame_unref(frame_.get());
            drain_fifo(false);
        }
    }

    void open_resampler(const AVFrame* f) {
        AVChannelLayout in_layout{};
        if (f->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || f->ch_layout.nb_channels <= 0)
            av_channel_layout_default(&in_layout, std::max(1, f->ch_layout.nb_channels));
        else
            check_av(av_channel_layout_copy(&in_layout, &f->ch_layout), "read channel layout", input_);
        SwrContext* raw = nullptr;
        // Downmix uses swresample's matrix (ITU-R BS.775 coefficients: centre and
        // surrounds at -3 dB), with normalisation so the sum cannot clip.
        int ret = swr_alloc_set_opts2(&raw, &enc_->ch_layout, enc_->sample_fmt, enc_->sample_rate,
                                      &in_layout, static_cast<AVSampleFormat>(f->format),
                                      f->sample_rate, 0, nullptr);
        av_channel_layout_uninit(&in_layout);
        swr_.reset(raw);
        check_av(ret, "set up resampler", input_);
        check_av(swr_init(swr_.get()), "set up resampler", input_);
        // Both tracks share time zero, the first video picture: audio that starts
        // later is padded with silence, audio that starts earlier is trimmed.
        int64_t ts = f->best_effort_timestamp;
        if (ts != AV_NOPTS_VALUE) {
            const int64_t lead = av_rescale_q(ts - origin_, st_->time_base, enc_->time_base) - base_;
            if (lead < 0) skip_ = -lead;
            if (lead > 0 && lead < int64_t{cfg_.audio_sample_rate} * 10) {
                av::FramePtr silence = av::make_frame();
                silence->nb_samples = static_cast<int>(lead);
                silence->format = AV_SAMPLE_FMT_FLTP;
                check_av(av_channel_layout_copy(&silence->ch_layout, &enc_->ch_layout), "pad audio", input_);
                check_av(av_frame_get_buffer(silence.get(), 0), "pad audio", input_);
                av_samples_set_silence(silence->extended_data, 0, silence->nb_samples,
                                       cfg_.audio_channels, AV_SAMPLE_FMT_FLTP);
                av_audio_fifo_write(fifo_, reinterpret_cast<void**>(silence->extended_data),
                                    silence->nb_samples);
            }
        }
    }

    void resample(const AVFrame* f) {
        const int in_samples = f ? f->nb_samples : 0;
        const int cap = swr_get_out_samples(swr_.get(), in_samples) + 32;
        if (cap <= 0) return;
        if (!conv_ || conv_->nb_samples < cap) {
            conv_ = av::make_frame();
            conv_->nb_samples = cap;
            conv_->format = AV_SAMPLE_FMT_FLTP;
            check_av(av_channel_layout_copy(&conv_->ch_layout, &enc_->ch_layout), "resample", input_);
            check_av(av_frame_get_buffer(conv_.get(), 0), "resample", input_);
        }
        int n = swr_convert(swr_.get(), conv_->extended_data, cap,
                            f ? const_cast<const uint8_t**>(f->extended_data) : nullptr, in_samples);
        check_av(n, "resample audio", input_);
        if (n > 0) {
            av_audio_fifo_write(fifo_, reinterpret_cast<void**>(conv_->extended_data), n);
            samples_in_ += n;
            if (skip_ > 0) {
                const int drop = static_cast<int>(std::min<int64_t>(skip_, av_audio_fifo_size(fifo_)));
                av_audio_fifo_drain(fifo_, drop);
                skip_ -= drop;
            }
        }
    }

    void drain_fifo(bool final) {
        const int fs = enc_->frame_size > 0 ? enc_->frame_size : 1024;
        while (av_audio_fifo_size(fifo_) >= fs || (final && av_audio_fifo_size(fifo_) > 0)) {
            if (state_.stop) return;
            const int n = std::min(fs, av_audio_fifo_size(fifo_));
            av::FramePtr f = av::make_frame();
            f->nb_samples = n;
            f->format = enc_->sample_fmt;
            f->sample_rate = enc_->sample_rate;
            check_av(av_channel_layout_copy(&f->ch_layout, &enc_->ch_layout), "encode audio", input_);
            check_av(av_frame_get_buffer(f.get(), 0), "encode audio", input_);
            av_audio_fifo_read(fifo_, reinterpret_cast<void**>(f->extended_data), n);
            f->pts = next_pts_;
            next_pts_ += n;
            encode(f.get());
        }
    }

    void encode(const AVFrame* f) {
        int ret = avcodec_send_frame(enc_.get(), f);
        if (ret < 0 && !(ret == AVERROR_EOF && !f)) check_av(ret, "encode audio", input_);
        for (;;) {
            if (state_.stop) return;
            ret = avcodec_receive_packet(enc_.get(), pkt_.get());
            if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
            check_av(ret, "encode audio", input_);
            // The AAC encoder's packets start at -initial_padding (its priming
            // samples); the track starts at 0, so the priming plays as 21 ms of lead-in.
            EncodedPacket ep;
            ep.data.assign(pkt_->data, pkt_->data + pkt_->size);
            ep.pts = pkt_->pts + enc_->initial_padding + base_;
            ep.dts = pkt_->dts + enc_->initial_padding + base_;
            if (ep.pts < keep_from_ || (keep_until_ > 0 && ep.pts >= keep_until_)) {
                av_packet_unref(pkt_.get());  // pre-roll, or past the span
                continue;
            }
            ep.duration = pkt_->duration > 0 ? pkt_->duration : enc_->frame_size;
            ep.keyframe = true;
            segmenter_->write(ep);
            av_packet_unref(pkt_.get());
        }
    }

    const AVStream* st_;
    const TranscodeConfig& cfg_;
    RunState& state_;
    int64_t origin_;
    std::string id_;
    std::string input_;
    BoundedQueue<av::PacketPtr> queue_;
    std::thread thread_;
    av::CodecPtr dec_, enc_;
    av::SwrPtr swr_;
    AVAudioFifo* fifo_ = nullptr;
    av::FramePtr frame_, conv_;
    av::PacketPtr pkt_;
    std::unique_ptr<CmafSegmenter> segmenter_;
    int64_t next_pts_ = 0;
    int64_t skip_ = 0;  // output samples before the video's first picture, to drop
    int64_t base_ = 0;       // time of the first encoded sample, output samples (span pre-roll)
    int64_t keep_from_ = 0;  // packets before this track time are not written
    int64_t keep_until_ = 0; // nor those at or after it (0: no end)
    int64_t samples_in_ = 0;
    int64_t decoded_ = 0;
};

// ---------------------------------------------------------------------------
class Pipeline {
public:
    Pipeline(const TranscodeConfig& cfg, std::atomic<bool>& stop, const ProgressFn& progress)
        : cfg_(cfg),
          state_(stop),
          progress_(progress),
          pictures_(PictureConfig{cfg.video ? cfg.thumbnail_interval : 0.0, cfg.thumbnail_long,
                                  cfg.poster_long}) {}

    ~Pipeline() {
        // Any path out (success, failure, cancel) stops and joins every thread first.
        state_.stop = stop_requested_on_exit_ ? true : state_.stop.load();
        for (auto& r : rungs_) r->close();
        for (auto& a : audios_) a->close();
        for (auto& r : rungs_) r->join();
        for (std::thread& t : sidecar_threads_)
            if (t.joinable()) t.join();
        for (auto& a : audios_) a->join();
    }

    PipelineResult run() {
        stop_requested_on_exit_ = true;
        validate();
        read_sidecar_text();  // a bad subtitle file fails before any media work
        fmt_ = av::open_input(cfg_.input);
        open_video();
        open_audio();
        open_text();
        open_sidecar_audio();
        seek_to_span();
        demux();
        if (cfg_.video && !video_done_) finish_video();
        if (cfg_.video && frames_out_ == 0)  // only a span can miss every frame
            throw std::invalid_argument("span " + span_text() + " holds no video frame of " + cfg_.input +
                                        " (" + seconds_text(master_seconds_) + " long)");
        for (auto& r : rungs_) r->close();
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

private:
    void validate() const {
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

    std::string span_text() const {
        char buf[96];
        if (cfg_.span_end > 0)
            std::snprintf(buf, sizeof(buf), "[%g s, %g s)", cfg_.span_start, cfg_.span_end);
        else
            std::snprintf(buf, sizeof(buf), "[%g s, end)", cfg_.span_start);
        return buf;
    }

    // The engine cuts masters at segment boundaries (docs/jobs.md); anything else
    // could not be stitched by merging segment indexes.
    void validate_span() const {
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
    int64_t gop_of(int64_t n) const {
        const double t = static_cast<double>(n) * fps_.den / fps_.num;
        return static_cast<int64_t>(std::floor(t / cfg_.gop_seconds + 1e-9));
    }
    int64_t first_frame_at(double seconds) const {
        const int64_t k = std::llround(seconds / cfg_.gop_seconds);
        int64_t n = static_cast<int64_t>(std::ceil(seconds * fps_.num / fps_.den - 1e-6));
        while (gop_of(n) < k) ++n;
        while (n > 0 && gop_of(n - 1) >= k) --n;
        return n;
    }

    void open_video() {
        int idx = av_find_best_stream(fmt_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
        if (idx < 0) throw InvalidDataError("no video stream in " + cfg_.input, AVERROR_STREAM_NOT_FOUND);
        vst_ = fmt_->streams[idx];
        const AVCodec* codec = avcodec_find_decoder(vst_->codecpar->codec_id);
        if (!codec)
            throw NotFoundError("no decoder for video codec " +
                                    std::string(avcodec_get_name(vst_->codecpar->codec_id)) +
                                    " in " + cfg_.input,
                                AVERROR_DECODER_NOT_FOUND);
        vdec_.reset(avcodec_alloc_context3(codec));
        check_av(avcodec_parameters_to_context(vdec_.get(), vst_->codecpar), "open video decoder", cfg_.input);
        vdec_->pkt_timebase = vst_->time_base;
        vdec_->thread_count = 0;  // libavcodec picks (frame and slice threads)
        check_av(avcodec_open2(vdec_.get(), codec, nullptr), "open video decoder", cfg_.input);
        av::clear_errors(codec->name);
        interlaced_hint_ = vst_->codecpar->field_order != AV_FIELD_PROGRESSIVE &&
                           vst_->codecpar->field_order != AV_FIELD_UNKNOWN;
        fps_ = choose_rate(vst_, cfg_, interlaced_hint_);
        timescale_ = video_timescale(fps_);
        gop_frames_ = std::max(1, static_cast<int>(std::lround(cfg_.gop_seconds * av_q2d(fps_))));
        rotation_ = av::stream_rotation(vst_);
        // Time zero of the output is the first video picture: the ladder then has
        // exactly the master's frames; audio is trimmed or padded to that origin.
        if (vst_->start_time != AV_NOPTS_VALUE)
            origin_ = vst_->start_time;
        else if (fmt_->start_time != AV_NOPTS_VALUE)
            origin_ = av_rescale_q(fmt_->start_time, AV_TIME_BASE_Q, vst_->time_base);
        double duration = fmt_->duration > 0 ? static_cast<double>(fmt_->duration) / AV_TIME_BASE : 0;
        if (vst_->duration > 0) duration = static_cast<double>(vst_->duration) * av_q2d(vst_->time_base);
        master_seconds_ = duration;
        // A duration guessed from the bitrate is no ground for refusing a span; the
        // decode still finds out (seek_to_span, run).
        const bool stated = fmt_->duration_estimation_method != AVFMT_DURATION_FROM_BITRATE;
        if (cfg_.span_start > 0 && duration > 0 && stated && cfg_.span_start >= duration - 1e-6)
            throw std::invalid_argument("span start " + seconds_text(cfg_.span_start) +
                                        " is at or past the end of " + cfg_.input + " (" +
                                        seconds_text(duration) + " long)");
        // The span in output frames: [first_frame_, end_frame_), end_frame_ -1 = to the end.
        first_frame_ = cfg_.span_start > 0 ? first_frame_at(cfg_.span_start) : 0;
        end_frame_ = cfg_.span_end > 0 ? first_frame_at(cfg_.span_end) : -1;
        const bool cut_end = cfg_.span_end > 0 && (duration <= 0 || cfg_.span_end < duration);
        const double span_end = cut_end ? cfg_.span_end : duration;
        span_seconds_ = std::max(0.0, span_end - cfg_.span_start);
        expected_frames_ = span_seconds_ * av_q2d(fps_);
        frame_ = av::make_frame();
        filtered_ = av::make_frame();
        if (cfg_.video)
            for (const auto& r : cfg_.rungs)
                rungs_.push_back(std::make_unique<RungWorker>(r, state_, cfg_.input));
        for (unsigned i = 0; i < fmt_->nb_streams; ++i)
            if (static_cast<int>(i) != idx || !cfg_.video) fmt_->streams[i]->discard = AVDISCARD_ALL;
    }

    void open_audio() {
        if (!cfg_.audio) {
            for (unsigned i = 0; i < fmt_->nb_streams; ++i)
                if (fmt_->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
                    skipped_.push_back(skipped(cfg_.input, fmt_->streams[i], "audio is off for this run"));
            return;
        }
        int idx = av_find_best_stream(fmt_.get(), AVMEDIA_TYPE_AUDIO, -1, vst_->index, nullptr, 0);
        if (idx < 0) {  // a silent master gives a video-only ladder
            if (!cfg_.video)
                throw InvalidDataError("no audio stream in " + cfg_.input + " for an audio-only transcode",
                                       AVERROR_STREAM_NOT_FOUND);
            return;
        }
        // The best stream first (it keeps audio_id and drives a span's audio), then
        // every other audio stream in file order.
        std::vector<AVStream*> streams{fmt_->streams[idx]};
        for (unsigned i = 0; i < fmt_->nb_streams; ++i)
            if (static_cast<int>(i) != idx && fmt_->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
                streams.push_back(fmt_->streams[i]);
        ast_ = streams.front();
        audio_origin_ = av_rescale_q(origin_, vst_->time_base, ast_->time_base);
        for (const auto& r : cfg_.rungs) ids_.insert(r.id);
        ids_.insert(cfg_.audio_id);
        int n = 1;
        for (AVStream* st : streams) {
            if (!avcodec_find_decoder(st->codecpar->codec_id) && st != ast_) {
                skipped_.push_back(skipped(cfg_.input, st, "no decoder for this audio codec"));
                continue;
            }
            st->discard = AVDISCARD_DEFAULT;
            const StreamLabel label = stream_label(st);
            const std::string id = st == ast_ ? cfg_.audio_id : audio_id(label, ++n, ids_);
            const int64_t origin = av_rescale_q(origin_, vst_->time_base, st->time_base);
            audios_.push_back(std::make_unique<AudioWorker>(st, cfg_, state_, origin, id, label, cfg_.input));
            audio_of_stream_[st->index] = audios_.back().get();
        }
        audio_ = audios_.front().get();
        master_audio_ = audios_.size();
        for (auto& w : audios_) w->start();
    }

    bool whole_run() const { return cfg_.span_start <= 0 && cfg_.span_end <= 0; }

    // Text streams of the master; everything else that is not the video or an
    // audio stream is listed as skipped, with the reason.
    void open_text() {
        for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
            AVStream* st = fmt_->streams[i];
            const AVMediaType type = st->codecpar->codec_type;
            if (st == vst_ || type == AVMEDIA_TYPE_AUDIO) continue;
            if (type == AVMEDIA_TYPE_VIDEO) {
                skipped_.push_back(skipped(cfg_.input, st, (st->disposition & AV_DISPOSITION_ATTACHED_PIC)
                                                                ? "cover art (an attached picture)"
                                                                : "only the first video stream becomes the ladder"));
            } else if (type == AVMEDIA_TYPE_SUBTITLE) {
                if (!is_text_subtitle(st->codecpar->codec_id)) {
                    skipped_.push_back(skipped(cfg_.input, st, "bitmap subtitles cannot become WebVTT (they need OCR)"));
                } else if (!cfg_.subtitles || !whole_run()) {
                    skipped_.push_back(skipped(cfg_.input, st, "subtitles are off for this run (a span or subtitles=false)"));
                } else {
                    const StreamLabel label = stream_label(st);
                    const bool forced = st->disposition & AV_DISPOSITION_FORCED;
                    const bool sdh = st->disposition & AV_DISPOSITION_HEARING_IMPAIRED;
                    const int64_t origin = av_rescale_q(origin_, vst_->time_base, st->time_base);
                    TextOut t;
                    t.id = text_id(label, forced, ids_);
                    t.track = text_track(label, forced, sdh);
                    t.reader = std::make_unique<TextStreamReader>(st, origin, cfg_.input);
                    st->discard = AVDISCARD_DEFAULT;
                    text_of_stream_[st->index] = texts_.size();
                    texts_.push_back(std::move(t));
                }
            } else if (type == AVMEDIA_TYPE_ATTACHMENT) {
                skipped_.push_back(skipped(cfg_.input, st, "attachment (fonts or files), not media"));
            } else {
                skipped_.push_back(skipped(cfg_.input, st, "data stream, no audio/video/text to package"));
            }
        }
        // Sidecars come after the master's own text streams.
        for (TextOut& t : sidecar_texts_) {
            t.id = text_id(StreamLabel{t.track.language, t.track.name}, t.track.forced, ids_);
            texts_.push_back(std::move(t));
        }
        sidecar_texts_.clear();
    }

    void read_sidecar_text() {
        for (const SidecarText& s : cfg_.sidecar_text) {
            TextOut t;
            t.cues = parse_subtitle_file(s.path);
            t.track = text_track(sidecar_label(s.language, s.name), s.forced, s.sdh);
            if (cfg_.subtitles && whole_run()) sidecar_texts_.push_back(std::move(t));
        }
    }

    // Each sidecar audio file is read by a thread of its own into its worker.
    void open_sidecar_audio() {
        if (!cfg_.audio) return;
        for (const SidecarAudio& side : cfg_.sidecar_audio) {
            av::FormatPtr fmt = av::open_input(side.path);
            const int idx = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
            if (idx < 0) throw InvalidDataError("no audio stream in sidecar " + side.path, AVERROR_STREAM_NOT_FOUND);
            AVStream* st = fmt->streams[idx];
            for (unsigned i = 0; i < fmt->nb_streams; ++i)
                if (static_cast<int>(i) != idx) {
                    fmt->streams[i]->discard = AVDISCARD_ALL;
                    skipped_.push_back(skipped(side.path, fmt->streams[i], "a sidecar gives one audio stream (the best)"));
                }
            // Its own first sample is the master's time zero.
            const int64_t origin = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
            const StreamLabel label = sidecar_label(side.language, side.name);
            const int n = static_cast<int>(audios_.size()) + 1;
            audios_.push_back(std::make_unique<AudioWorker>(st, cfg_, state_, origin, audio_id(label, n, ids_),
                                                            label, side.path));
            AudioWorker* worker = audios_.back().get();
            if (!audio_) audio_ = worker;
            worker->start();
            sidecar_fmts_.push_back(std::move(fmt));
            AVFormatContext* f = sidecar_fmts_.back().get();
            const std::string path = side.path;
            sidecar_threads_.emplace_back([this, f, idx, worker, path] {
                try {
                    av::PacketPtr pkt = av::make_packet();
                    for (;;) {
                        if (state_.stop) break;
                        const int ret = av_read_frame(f, pkt.get());
                        if (ret == AVERROR(EAGAIN)) continue;
                        if (ret == AVERROR_EOF) break;
                        check_av(ret, "read packet", path);
                        if (pkt->stream_index == idx) {
                            av::PacketPtr copy(av_packet_clone(pkt.get()));
                            if (!copy) throw Error("out of memory queuing an audio packet");
                            if (!worker->push(std::move(copy), [] {})) break;
                        }
                        av_packet_unref(pkt.get());
                    }
                } catch (...) {
                    state_.fail(std::current_exception());
                }
                worker->close();
            });
        }
    }

    // ---- span: seek to its start ---------------------------------------------
    // Seeks the stream that drives the run (video, else audio) to the keyframe at
    // or before the span start (less the audio pre-roll; less one frame for
    // interlaced masters, so bwdif has the previous picture). Demuxers index decode
    // times (an MP4's sync sample may present after the time asked for), so the
    // first picture (audio: packet) is checked and the seek retried further back
    // until it is not late. Every frame before the span is decoded and dropped
    // later (emit), so the fps grid stays the one-piece run's, anchored at origin_.
    void seek_to_span() {
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
            if (first == AV_NOPTS_VALUE)
                throw std::invalid_argument("span start " + seconds_text(cfg_.span_start) +
                                            " is at or past the end of " + cfg_.input);
            if (first <= target || at < origin || attempt >= 12) break;
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
    int64_t first_timestamp(const AVStream* st) {
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
        return AV_NOPTS_VALUE;
    }

    // ---- progress and stop -------------------------------------------------
    void report_progress() {
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

    [[noreturn]] void read_failed(int ret) {
        std::string why = av::recent_errors(fmt_->iformat->name);
        throw InvalidDataError("read packet failed for " + cfg_.input + ": " + av_error_text(ret) +
                                   (why.empty() ? "" : " (" + why + ")"),
                               ret);
    }

    // Audio packets are read until they pass the span's end (plus the tail).
    void note_audio(const AVPacket* pkt) {
        const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
        if (ts == AV_NOPTS_VALUE) return;
        const double t = static_cast<double>(ts - audio_origin_) * av_q2d(ast_->time_base);
        audio_seconds_ = std::max(audio_seconds_, t);
        if (cfg_.span_end > 0 && t >= cfg_.span_end + kAudioTailSeconds) audio_done_ = true;
    }

    void rethrow_if_stopped() {
        if (std::exception_ptr e = state_.first_error()) std::rethrow_exception(e);
        if (state_.stop) throw CancelledError("transcode of " + cfg_.input + " cancelled");
    }

    // ---- demux and video decode --------------------------------------------
    void demux() {
        av::PacketPtr pkt = av::make_packet();
        const auto on_wait = [this] { report_progress(); };
        for (;;) {
            rethrow_if_stopped();
            if ((!cfg_.video || video_done_) && (!audio_ || audio_done_)) return;  // the span is complete
            int ret = av_read_frame(fmt_.get(), pkt.get());
            if (ret == AVERROR(EAGAIN)) continue;
            if (ret == AVERROR_EOF) break;
            if (ret < 0) {
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

    [[noreturn]] void video_corrupt(int ret, int64_t at_pts) {
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
    bool tolerate_errors() {
        const bool early = decoded_ == 0 || (cfg_.span_start > 0 && frames_out_ == 0);
        const int limit = cfg_.span_start > 0 ? 1000 : 200;
        return early && ++early_errors_ < limit;
    }

    void decode_video(const AVPacket* pkt) {
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

    // ---- normalisation graph -----------------------------------------------
    std::string graph_description(const AVFrame* f) const {
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

    void build_graph(const AVFrame* f) {
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

    void filter_frame(AVFrame* f) {
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

    void pull_graph() {
        for (;;) {
            if (state_.stop) return;
            int ret = av_buffersink_get_frame(sink_, filtered_.get());
            if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
            check_av(ret, "filter video", cfg_.input);
            emit(filtered_.get());
            av_frame_unref(filtered_.get());
        }
    }

    void finish_video() {
        if (!graph_) return;
        // Close at the end of the last frame so the fps filter emits the tail and the
        // output lasts as long as the source (within one frame).
        check_av(av_buffersrc_close(src_, last_end_, 0), "flush filter graph", cfg_.input);
        pull_graph();
    }

    void start_rungs(const AVFrame* f) {
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
        for (auto& r : rungs_) r->start();
        rungs_started_ = true;
    }

    void emit(AVFrame* f) {
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
            av::FramePtr ref(av_frame_clone(f));  // a new reference, not a copy of the picture
            if (!ref) throw Error("out of memory referencing a frame");
            if (!r->push(std::move(ref), on_wait)) return;
        }
        ++frames_out_;
    }

    void wait_for_workers() {
        for (auto& r : rungs_) r->join();
        for (std::thread& t : sidecar_threads_)
            if (t.joinable()) t.join();
        for (auto& a : audios_) a->join();
    }

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

}  // namespace

Transcoder::Transcoder(TranscodeConfig config) : config_(std::move(config)) {}
Transcoder::~Transcoder() = default;

PipelineResult Transcoder::run(const ProgressFn& progress) {
    av::install_log_capture();
    if (cancelled_) throw CancelledError("transcode of " + config_.input + " cancelled");
    Pipeline pipeline(config_, cancelled_, progress);
    return pipeline.run();
}

void Transcoder::cancel() { cancelled_ = true; }

}  // namespace cdlc
