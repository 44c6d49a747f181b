// Track reading of the copy path: which streams of the master become renditions
// (and which are skipped, with the reason), the segmenters of the video and audio
// tracks, the fast path, and time zero.
#include "remux/copy_job.h"

#include <algorithm>
#include <cstring>

#include "av/av_util.h"
#include "codec/nal.h"
#include "common/error.h"
#include "text/subtitle_parse.h"

namespace cdlc::remux {

namespace {

uint32_t video_timescale(AVRational tb) {
    // Keep the source's clock when it is fine-grained (MP4: 1/12800, TS: 1/90000);
    // coarse ones (Matroska's 1/1000, QuickTime's 1/600) move to 90 kHz exactly.
    if (tb.num == 1 && tb.den >= 10000) return static_cast<uint32_t>(tb.den);
    return 90000;
}

}  // namespace

// Sidecar subtitles first: a bad file fails before any media work.
void CopyJob::read_sidecar_text() {
    for (const SidecarText& side : options_.sidecar_text) {
        TextOut t;
        t.cues = parse_subtitle_file(side.path);
        t.track = text_track(sidecar_label(side.language, side.name), side.forced, side.sdh);
        sidecar_texts_.push_back(std::move(t));
    }
}

void CopyJob::open_input() {
    AVFormatContext* raw = nullptr;
    // 1 MiB reads instead of the 32 KiB default: a remux is I/O bound and the
    // packets are memcpy'd out of the read buffer anyway.
    AVDictionary* opts = nullptr;
    av_dict_set(&opts, "blocksize", "1048576", 0);
    const int opened = avformat_open_input(&raw, input_.c_str(), nullptr, &opts);
    av_dict_free(&opts);
    check_av(opened, "open input", input_);
    fmt_.reset(raw);
    check_av(avformat_find_stream_info(fmt_.get(), nullptr), "read stream info", input_);
}

void CopyJob::choose_streams() {
    for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
        AVStream* st = fmt_->streams[i];
        const AVMediaType type = st->codecpar->codec_type;
        if (type == AVMEDIA_TYPE_VIDEO && !video_.st && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            video_.st = st;
    }
    bool first_audio = true;
    for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
        AVStream* st = fmt_->streams[i];
        const AVCodecParameters* par = st->codecpar;
        const AVMediaType type = par->codec_type;
        if (st == video_.st) continue;
        if (type == AVMEDIA_TYPE_AUDIO) {
            const bool copyable = par->codec_id == AV_CODEC_ID_AAC || par->codec_id == AV_CODEC_ID_OPUS;
            if (first_audio && !copyable)
                throw InvalidDataError("audio codec '" + codec_name(par->codec_id) + "' in " + input_ + transcode_hint_ +
                                       " (copy supports aac, opus)");
            if (first_audio && par->sample_rate <= 0)
                throw InvalidDataError("audio stream without a sample rate in " + input_);
            if (!copyable || par->sample_rate <= 0) {
                result_.skipped.push_back(skipped(input_, st, "audio codec '" + codec_name(par->codec_id) + "'" +
                                                                transcode_hint_ + " (copy supports aac, opus)"));
                continue;
            }
            first_audio = false;
            auto a = std::make_unique<AudioTrack>();
            a->st = st;
            a->source = input_;
            audio_of_stream_[st->index] = a.get();
            audios_.push_back(std::move(a));
        } else if (type == AVMEDIA_TYPE_VIDEO) {
            result_.skipped.push_back(skipped(input_, st, (st->disposition & AV_DISPOSITION_ATTACHED_PIC)
                                                            ? "cover art (an attached picture)"
                                                            : "only the first video stream is packaged"));
        } else if (type == AVMEDIA_TYPE_SUBTITLE) {
            if (!is_text_subtitle(par->codec_id)) {
                result_.skipped.push_back(skipped(input_, st, "bitmap subtitles cannot become WebVTT (they need OCR)"));
            } else if (!options_.subtitles) {
                result_.skipped.push_back(skipped(input_, st, "subtitles are off for this run"));
            } else {
                text_of_stream_[st->index] = texts_.size();
                TextOut t;
                t.track = text_track(stream_label(st), st->disposition & AV_DISPOSITION_FORCED,
                                     st->disposition & AV_DISPOSITION_HEARING_IMPAIRED);
                texts_.push_back(std::move(t));
            }
        } else if (type == AVMEDIA_TYPE_ATTACHMENT) {
            result_.skipped.push_back(skipped(input_, st, "attachment (fonts or files), not media"));
        } else {
            result_.skipped.push_back(skipped(input_, st, "data stream, no audio/video/text to package"));
        }
    }
    if (!video_.st && audios_.empty()) throw InvalidDataError("no video or audio stream to package in " + input_);
}

void CopyJob::open_video() {
    if (video_.st) video_.out_tb = AVRational{1, static_cast<int>(video_timescale(video_.st->time_base))};
    if (video_.st) {
        const AVCodecParameters* par = video_.st->codecpar;
        if (par->codec_id != AV_CODEC_ID_H264 && par->codec_id != AV_CODEC_ID_HEVC)
            throw InvalidDataError("video codec '" + codec_name(par->codec_id) + "' in " + input_ + transcode_hint_ +
                                   " (copy supports h264, hevc)");
    }

    if (video_.st) {
        const AVCodecParameters* par = video_.st->codecpar;
        TrackInfo t;
        t.kind = TrackKind::Video;
        const bool hevc = par->codec_id == AV_CODEC_ID_HEVC;
        t.codec = hevc ? "hevc" : "h264";
        t.timescale = static_cast<uint32_t>(video_.out_tb.den);
        t.width = par->width;
        t.height = par->height;
        // Pictures stay as coded; the output's matrix turns them as the master's
        // does (a phone's portrait capture, stored sideways).
        t.rotation = av::stream_rotation(video_.st);
        const AVRational sar = av_guess_sample_aspect_ratio(fmt_.get(), video_.st, nullptr);
        if (sar.num > 0 && sar.den > 0) {
            t.sar_num = sar.num;
            t.sar_den = sar.den;
        }
        const AVRational fr = video_.st->avg_frame_rate.num > 0 ? video_.st->avg_frame_rate : video_.st->r_frame_rate;
        t.frame_rate_num = fr.num;
        t.frame_rate_den = fr.den > 0 ? fr.den : 1;
        t.bitrate = par->bit_rate;
        t.language = stream_label(video_.st).language;
        video_.norm.hevc = hevc;
        const uint8_t* ex = par->extradata;
        const size_t exn = par->extradata ? size_t(par->extradata_size) : 0;
        if (exn == 0) {
            video_.norm.annexb = true;  // no record: the stream carries Annex B in band
            video_.need_config = true;
        } else {
            video_.norm.annexb = is_annexb(ex, exn);
            t.extradata = hevc ? hevc_decoder_config(ex, exn) : avc_decoder_config(ex, exn);
            video_.norm.nal_length_size = video_.norm.annexb ? 4 : decoder_config_nal_length_size(t.extradata, hevc);
            video_.norm.config_sets = decoder_config_parameter_sets(t.extradata, hevc);
            if (video_.norm.nal_length_size != 4) t.extradata[hevc ? 21 : 4] |= 3;  // we rewrite to 4 bytes
        }
        const std::string id = "v" + std::to_string(par->height);
        ids_.insert(id);
        video_.seg = std::make_unique<CmafSegmenter>(t, output_dir_ + "/" + id, segment_seconds_);
        video_.seg->set_encryption(options_.encryption);
    }
}

void CopyJob::setup_audio(AudioTrack& audio, const StreamLabel& label) {
    const AVCodecParameters* par = audio.st->codecpar;
    audio.out_tb = AVRational{1, par->codec_id == AV_CODEC_ID_OPUS ? 48000 : par->sample_rate};
    TrackInfo t;
    t.kind = TrackKind::Audio;
    t.codec = par->codec_id == AV_CODEC_ID_AAC ? "aac" : "opus";
    t.sample_rate = par->sample_rate;
    t.channels = par->ch_layout.nb_channels;
    t.timescale = static_cast<uint32_t>(audio.out_tb.den);
    t.bitrate = par->bit_rate;
    t.language = label.language;
    t.name = label.name;
    if (par->extradata && par->extradata_size > 0) {
        t.extradata.assign(par->extradata, par->extradata + par->extradata_size);
    } else if (t.codec == "aac") {
        audio.adts = true;  // MPEG-TS / raw .aac: the config comes from the first header
    } else {
        throw InvalidDataError("Opus stream without an OpusHead in " + audio.source);
    }
    if (t.codec == "opus") audio.frame_samples = 960;
    else if (par->frame_size > 0) audio.frame_samples = par->frame_size;
    audio.snap = std::max<int64_t>(2, av_rescale_q_rnd(1, audio.st->time_base, audio.out_tb, AV_ROUND_UP) + 1);
    ++audio_n_;
    audio.id = audio_n_ == 1 ? unique_id("audio", ids_) : audio_id(label, audio_n_, ids_);
    audio.seg = std::make_unique<CmafSegmenter>(t, output_dir_ + "/" + audio.id, video_.st ? 0.0 : segment_seconds_);
    // No runt at the end: audio outlasting the last video cut joins the last segment.
    audio.seg->set_tail_merge(segment_seconds_ / 2);
    audio.seg->set_encryption(options_.encryption);
}

// MP4/MOV whose samples go out unchanged: copy them file to file.
void CopyJob::choose_fast_path() {
    const bool any_adts = std::any_of(audios_.begin(), audios_.end(), [](const auto& a) { return a->adts; });
    if ((!video_.st || video_.norm.passthrough()) && !any_adts) fast_ = open_fast_source(input_, fmt_.get());
    packets_ = fast_ ? fast_->fmt : fmt_.get();
    if (fast_)  // the fast demuxer reads only what we keep
        for (unsigned i = 0; i < fast_->fmt->nb_streams; ++i)
            if (!(video_.st && int(i) == video_.st->index) && !audio_of_stream_.count(int(i)) && !text_of_stream_.count(int(i)))
                fast_->fmt->streams[i]->discard = AVDISCARD_ALL;
}

// Time zero is the first video keyframe (without video: the first audio
// sample, or 0 when the demuxer shows priming as negative times). Audio that
// starts before it (AAC priming: the encoder delay a source MP4 signals with
// its own edit list, demuxed as negative times) is kept for the decoder and
// signalled with an edit list instead (TrackInfo::presentation_offset), up to
// kMaxLeadUs (align_audio); audio before that is dropped (it has no picture to go with).
void CopyJob::find_time_zero() {
    pkt_.reset(av_packet_alloc());
    if (!pkt_) throw Error("out of memory allocating a packet");
    bool video_seen = !video_.st;
    size_t audio_seen = 0;
    int64_t video_us = INT64_MAX;
    while (!(video_seen && audio_seen == audios_.size()) && prefetched_.size() < 4096) {
        const int ret = av_read_frame(packets_, pkt_.get());
        if (ret == AVERROR_EOF) {
            eof_ = true;
            break;
        }
        check_av(ret, "read packet", input_);
        AVStream* st = fmt_->streams[pkt_->stream_index];
        const int64_t ts = pick_ts(pkt_->pts, pkt_->dts);
        if (ts != AV_NOPTS_VALUE && pkt_->size > 0) {
            const int64_t us = av_rescale_q(ts, st->time_base, AV_TIME_BASE_Q);
            if (st == video_.st && !video_seen && (pkt_->flags & AV_PKT_FLAG_KEY)) {
                video_us = us;
                video_seen = true;
            }
            auto a = audio_of_stream_.find(pkt_->stream_index);
            if (a != audio_of_stream_.end() && a->second->first_us == INT64_MAX) {
                a->second->first_us = us;
                ++audio_seen;
            }
        }
        prefetched_.emplace_back(av_packet_alloc());
        if (!prefetched_.back()) throw Error("out of memory allocating a packet");
        av_packet_move_ref(prefetched_.back().get(), pkt_.get());
    }
    int64_t earliest = video_us;
    for (auto& a : audios_) earliest = std::min(earliest, a->first_us);
    if (earliest == INT64_MAX) earliest = 0;
    origin_us_ = video_us != INT64_MAX ? video_us : std::max<int64_t>(earliest, 0);
    if (video_.st) video_.offset = av_rescale_q(origin_us_, AV_TIME_BASE_Q, video_.out_tb);
}

void CopyJob::open_text_readers() {
    for (TextOut& t : texts_) {
        for (auto& [index, n] : text_of_stream_)
            if (&texts_[n] == &t) {
                AVStream* st = fmt_->streams[index];
                t.reader = std::make_unique<TextStreamReader>(
                    st, av_rescale_q(origin_us_, AV_TIME_BASE_Q, st->time_base), input_);
            }
    }
}

}  // namespace cdlc::remux
