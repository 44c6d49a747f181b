#include "transcode/audio_worker.h"

#include <algorithm>

extern "C" {
#include <libavutil/channel_layout.h>
}

#include "av/av_log.h"
#include "common/error.h"
#include "transcode/rendition_output.h"
#include "transcode/timeline.h"

namespace cdlc::transcode {

namespace {
constexpr size_t kPacketQueue = 256;  // audio packets waiting (they are small)
}  // namespace

template class QueueWorker<AudioWorker, av::PacketPtr>;

AudioWorker::AudioWorker(const AVStream* st, const TranscodeConfig& cfg, RunState& state, int64_t origin,
                         std::string id, const StreamLabel& label, std::string input)
    : QueueWorker(state, kPacketQueue),
      st_(st),
      cfg_(cfg),
      origin_(origin),
      id_(std::move(id)),
      input_(std::move(input)) {
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
    segmenter_ = open_rendition_output(track, cfg, id_);
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

AudioWorker::~AudioWorker() {
    join();
    if (fifo_) av_audio_fifo_free(fifo_);
}

double AudioWorker::seconds() const {
    int64_t total = 0;
    for (const SegmentRecord& s : segmenter_->segments()) total += s.duration;
    return static_cast<double>(total) / cfg_.audio_sample_rate;
}

RenditionResult AudioWorker::result() const {
    RenditionResult r;
    r.id = id_;
    r.track = segmenter_->track();
    r.segments = segmenter_->segments();
    return r;
}

[[noreturn]] void AudioWorker::corrupt(int ret) {
    std::string why = av::recent_errors(dec_->codec->name);
    throw InvalidDataError("decode audio failed for " + input_ + ": " + av_error_text(ret) +
                               " after " + seconds_text(static_cast<double>(samples_in_) /
                                                        cfg_.audio_sample_rate) +
                               (why.empty() ? "" : " (" + std::string(dec_->codec->name) +
                                                       ": " + why + ")"),
                           AVERROR_INVALIDDATA);
}

void AudioWorker::decode(AVPacket* pkt) {
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

void AudioWorker::open_resampler(const AVFrame* f) {
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

void AudioWorker::resample(const AVFrame* f) {
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

void AudioWorker::drain_fifo(bool final) {
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

void AudioWorker::encode(const AVFrame* f) {
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

}  // namespace cdlc::transcode
