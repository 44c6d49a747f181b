// Which streams a transcode reads, and the workers they feed: the first video
// stream (the ladder, and time zero), every audio stream and audio sidecar, the
// text streams and subtitle sidecars; everything else is listed as skipped.
#include "transcode/pipeline.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "av/av_log.h"
#include "common/error.h"
#include "text/subtitle_parse.h"
#include "transcode/timeline.h"

namespace cdlc::transcode {

void Pipeline::open_video() {
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

void Pipeline::open_audio() {
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

// Text streams of the master; everything else that is not the video or an
// audio stream is listed as skipped, with the reason.
void Pipeline::open_text() {
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

void Pipeline::read_sidecar_text() {
    for (const SidecarText& s : cfg_.sidecar_text) {
        TextOut t;
        t.cues = parse_subtitle_file(s.path);
        t.track = text_track(sidecar_label(s.language, s.name), s.forced, s.sdh);
        if (cfg_.subtitles && whole_run()) sidecar_texts_.push_back(std::move(t));
    }
}

// Each sidecar audio file is read by a thread of its own into its worker.
void Pipeline::open_sidecar_audio() {
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

}  // namespace cdlc::transcode
