// Package-only path (remux.h): libavformat demuxes, the packets are normalised to
// what CMAF wants (4-byte length-prefixed video without in-band copies of the
// parameter sets, raw AAC) and go straight to the CMAF segmenters.
//
// Segment alignment: the video segmenter cuts at the source's own keyframes at or
// after each target duration; every video cut time is handed to the audio
// segmenter, which cuts at the first audio frame at or after it (force_cut), so
// audio and video segments cover the same time ranges. Audio packets are held
// back until the video has been demuxed past them, because the container's
// interleaving may deliver audio before the keyframe that decides its segment.
#include "remux/remux.h"

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <set>
#include <memory>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/mathematics.h>
}

#include "cmaf/nal.h"
#include "cmaf/segmenter.h"
#include "common/error.h"
#include "remux/adts.h"

namespace cdlc {

namespace {

struct FormatCloser {
    void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};
struct PacketFree {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};

bool is_parameter_set_or_aud(int type, bool hevc) {
    if (hevc) return type == 32 || type == 33 || type == 34 || type == 35;  // VPS SPS PPS AUD
    return type == 7 || type == 8 || type == 9;                            // SPS PPS AUD
}

int nal_type(const NalSpan& n, bool hevc) {
    return hevc ? (n.data[0] >> 1) & 0x3F : n.data[0] & 0x1F;
}

bool is_aud(int type, bool hevc) { return hevc ? type == 35 : type == 9; }

// Brings one video packet into CMAF form (ISO/IEC 14496-15 §5.3.2 / §8.3.2):
// 4-byte NAL lengths; AUDs and parameter sets identical to the sample entry's
// dropped (MPEG-TS repeats them before every IDR). Parameter sets that differ are
// kept so a mid-stream change still decodes.
class VideoNormaliser {
public:
    bool hevc = false;
    bool annexb = false;
    int nal_length_size = 4;
    std::vector<std::vector<uint8_t>> config_sets;

    std::vector<uint8_t> operator()(const uint8_t* d, size_t n) const {
        if (!annexb && nal_length_size == 4) return std::vector<uint8_t>(d, d + n);  // MP4/MKV: as is
        const std::vector<NalSpan> nals = annexb ? split_annexb(d, n) : split_sized(d, n);
        std::vector<uint8_t> out;
        out.reserve(n + 4 * nals.size());
        for (const NalSpan& s : nals) {
            const int type = nal_type(s, hevc);
            if (annexb && is_parameter_set_or_aud(type, hevc) && (is_aud(type, hevc) || in_config(s)))
                continue;
            const uint32_t len = static_cast<uint32_t>(s.size);
            const uint8_t hdr[4] = {uint8_t(len >> 24), uint8_t(len >> 16), uint8_t(len >> 8), uint8_t(len)};
            out.insert(out.end(), hdr, hdr + 4);
            out.insert(out.end(), s.data, s.data + s.size);
        }
        return out;
    }

private:
    bool in_config(const NalSpan& s) const {
        return std::any_of(config_sets.begin(), config_sets.end(), [&](const std::vector<uint8_t>& c) {
            return c.size() == s.size && std::equal(c.begin(), c.end(), s.data);
        });
    }
    std::vector<NalSpan> split_sized(const uint8_t* d, size_t n) const {
        std::vector<NalSpan> nals;
        size_t i = 0;
        while (i < n) {
            if (n - i < size_t(nal_length_size)) throw InvalidDataError("video packet truncated in a NAL length");
            size_t len = 0;
            for (int k = 0; k < nal_length_size; ++k) len = (len << 8) | d[i + k];
            i += nal_length_size;
            if (len > n - i) throw InvalidDataError("NAL unit length runs past the end of the packet");
            if (len) nals.push_back({d + i, len});
            i += len;
        }
        return nals;
    }
};

// Parameter sets found in an Annex B access unit, as an Annex B buffer (for
// sources that carry them only in band).
std::vector<uint8_t> inband_parameter_sets(const uint8_t* d, size_t n, bool hevc) {
    std::vector<uint8_t> out;
    for (const NalSpan& s : split_annexb(d, n)) {
        const int type = nal_type(s, hevc);
        if (is_parameter_set_or_aud(type, hevc) && !is_aud(type, hevc)) {
            const uint8_t sc[4] = {0, 0, 0, 1};
            out.insert(out.end(), sc, sc + 4);
            out.insert(out.end(), s.data, s.data + s.size);
        }
    }
    return out;
}

uint32_t video_timescale(AVRational tb) {
    // Keep the source's clock when it is fine-grained (MP4: 1/12800, TS: 1/90000);
    // coarse ones (Matroska's 1/1000, QuickTime's 1/600) move to 90 kHz exactly.
    if (tb.num == 1 && tb.den >= 10000) return static_cast<uint32_t>(tb.den);
    return 90000;
}

std::string codec_name(AVCodecID id) {
    const char* n = avcodec_get_name(id);
    return n ? n : "unknown";
}

int64_t pick_ts(int64_t preferred, int64_t fallback) {
    return preferred != AV_NOPTS_VALUE ? preferred : fallback;
}

struct VideoTrack {
    AVStream* st = nullptr;
    std::unique_ptr<CmafSegmenter> seg;
    VideoNormaliser norm;
    AVRational out_tb{1, 90000};
    int64_t offset = 0;           // output ticks subtracted (global start)
    bool started = false;         // a keyframe has been written
    bool need_config = false;     // extradata only in band
    int64_t last_dts = AV_NOPTS_VALUE;
    size_t known_segments = 0;
    int64_t progress = INT64_MIN; // output decode time of the last written packet
    // Matroska stores no decode times (libavformat guesses them late or not at
    // all). Then dts is rebuilt as the n-th smallest pts, decided once kReorder
    // later packets are known: monotonic, and an IDR's dts equals its pts.
    bool rebuild_dts = false;
    std::deque<EncodedPacket> reorder;
    std::multiset<int64_t> reorder_pts;
    static constexpr size_t kReorder = 16;
};

struct AudioTrack {
    AVStream* st = nullptr;
    std::unique_ptr<CmafSegmenter> seg;
    AVRational out_tb{1, 48000};
    int64_t offset = 0;
    bool adts = false;
    int64_t frame_samples = 1024;
    int64_t next_ts = AV_NOPTS_VALUE;  // expected time of the next frame
    int64_t snap = 2;                   // output ticks a container timestamp may be off by
    std::deque<EncodedPacket> pending;  // held until the video has passed them
};

}  // namespace

PipelineResult package_copy(const std::string& input, const std::string& output_dir, double segment_seconds) {
    if (!(segment_seconds > 0)) throw InvalidDataError("segment_seconds must be positive");

    AVFormatContext* raw = nullptr;
    check_av(avformat_open_input(&raw, input.c_str(), nullptr, nullptr), "open input", input);
    std::unique_ptr<AVFormatContext, FormatCloser> fmt(raw);
    check_av(avformat_find_stream_info(fmt.get(), nullptr), "read stream info", input);

    VideoTrack video;
    AudioTrack audio;
    for (unsigned i = 0; i < fmt->nb_streams; ++i) {
        AVStream* st = fmt->streams[i];
        const AVMediaType type = st->codecpar->codec_type;
        if (type == AVMEDIA_TYPE_VIDEO && !video.st && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            video.st = st;
        else if (type == AVMEDIA_TYPE_AUDIO && !audio.st)
            audio.st = st;
    }
    if (!video.st && !audio.st) throw InvalidDataError("no video or audio stream to package in " + input);

    if (video.st) video.out_tb = AVRational{1, static_cast<int>(video_timescale(video.st->time_base))};
    if (audio.st)
        audio.out_tb = AVRational{1, audio.st->codecpar->codec_id == AV_CODEC_ID_OPUS ? 48000
                                                                                  : audio.st->codecpar->sample_rate};
    const std::string transcode_hint = " cannot be packaged without re-encoding; transcode it instead";
    if (video.st) {
        const AVCodecParameters* par = video.st->codecpar;
        if (par->codec_id != AV_CODEC_ID_H264 && par->codec_id != AV_CODEC_ID_HEVC)
            throw InvalidDataError("video codec '" + codec_name(par->codec_id) + "' in " + input + transcode_hint +
                                   " (copy supports h264, hevc)");
    }
    if (audio.st) {
        const AVCodecParameters* par = audio.st->codecpar;
        if (par->codec_id != AV_CODEC_ID_AAC && par->codec_id != AV_CODEC_ID_OPUS)
            throw InvalidDataError("audio codec '" + codec_name(par->codec_id) + "' in " + input + transcode_hint +
                                   " (copy supports aac, opus)");
        if (par->sample_rate <= 0) throw InvalidDataError("audio stream without a sample rate in " + input);
    }

    // Global start: the earliest first timestamp of the streams we keep becomes
    // time 0, so A/V sync (AAC priming before the first video frame included) is
    // kept. AVStream.start_time hides priming that the demuxer marks as discard,
    // so the first packets are read ahead and looked at instead.
    std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
    if (!pkt) throw Error("out of memory allocating a packet");
    std::deque<std::unique_ptr<AVPacket, PacketFree>> prefetched;
    bool eof = false;
    {
        bool video_seen = !video.st, audio_seen = !audio.st;
        int64_t start_us = INT64_MAX;
        while (!(video_seen && audio_seen) && prefetched.size() < 4096) {
            const int ret = av_read_frame(fmt.get(), pkt.get());
            if (ret == AVERROR_EOF) {
                eof = true;
                break;
            }
            check_av(ret, "read packet", input);
            AVStream* st = fmt->streams[pkt->stream_index];
            const int64_t ts = pick_ts(pkt->pts, pkt->dts);
            const bool is_video = st == video.st, is_audio = st == audio.st;
            if (ts != AV_NOPTS_VALUE && pkt->size > 0 &&
                ((is_video && !video_seen && (pkt->flags & AV_PKT_FLAG_KEY)) || (is_audio && !audio_seen))) {
                start_us = std::min(start_us, av_rescale_q(ts, st->time_base, AV_TIME_BASE_Q));
                (is_video ? video_seen : audio_seen) = true;
            }
            prefetched.emplace_back(av_packet_alloc());
            if (!prefetched.back()) throw Error("out of memory allocating a packet");
            av_packet_move_ref(prefetched.back().get(), pkt.get());
        }
        if (start_us == INT64_MAX) start_us = 0;
        if (video.st) video.offset = av_rescale_q(start_us, AV_TIME_BASE_Q, video.out_tb);
        if (audio.st) audio.offset = av_rescale_q(start_us, AV_TIME_BASE_Q, audio.out_tb);
    }

    if (video.st) {
        const AVCodecParameters* par = video.st->codecpar;
        TrackInfo t;
        t.kind = TrackKind::Video;
        const bool hevc = par->codec_id == AV_CODEC_ID_HEVC;
        t.codec = hevc ? "hevc" : "h264";
        t.timescale = static_cast<uint32_t>(video.out_tb.den);
        t.width = par->width;
        t.height = par->height;
        const AVRational sar = av_guess_sample_aspect_ratio(fmt.get(), video.st, nullptr);
        if (sar.num > 0 && sar.den > 0) {
            t.sar_num = sar.num;
            t.sar_den = sar.den;
        }
        const AVRational fr = video.st->avg_frame_rate.num > 0 ? video.st->avg_frame_rate : video.st->r_frame_rate;
        t.frame_rate_num = fr.num;
        t.frame_rate_den = fr.den > 0 ? fr.den : 1;
        t.bitrate = par->bit_rate;
        if (const AVDictionaryEntry* lang = av_dict_get(video.st->metadata, "language", nullptr, 0))
            t.language = lang->value;
        video.norm.hevc = hevc;
        const uint8_t* ex = par->extradata;
        const size_t exn = par->extradata ? size_t(par->extradata_size) : 0;
        if (exn == 0) {
            video.norm.annexb = true;  // no record: the stream carries Annex B in band
            video.need_config = true;
        } else {
            video.norm.annexb = is_annexb(ex, exn);
            t.extradata = hevc ? hevc_decoder_config(ex, exn) : avc_decoder_config(ex, exn);
            video.norm.nal_length_size = video.norm.annexb ? 4 : decoder_config_nal_length_size(t.extradata, hevc);
            video.norm.config_sets = decoder_config_parameter_sets(t.extradata, hevc);
            if (video.norm.nal_length_size != 4) t.extradata[hevc ? 21 : 4] |= 3;  // we rewrite to 4 bytes
        }
        const std::string id = "v" + std::to_string(par->height);
        video.seg = std::make_unique<CmafSegmenter>(t, output_dir + "/" + id, segment_seconds);
    }
    if (audio.st) {
        const AVCodecParameters* par = audio.st->codecpar;
        TrackInfo t;
        t.kind = TrackKind::Audio;
        t.codec = par->codec_id == AV_CODEC_ID_AAC ? "aac" : "opus";
        t.sample_rate = par->sample_rate;
        t.channels = par->ch_layout.nb_channels;
        t.timescale = static_cast<uint32_t>(audio.out_tb.den);
        t.bitrate = par->bit_rate;
        if (const AVDictionaryEntry* lang = av_dict_get(audio.st->metadata, "language", nullptr, 0))
            t.language = lang->value;
        if (par->extradata && par->extradata_size > 0) {
            t.extradata.assign(par->extradata, par->extradata + par->extradata_size);
        } else if (t.codec == "aac") {
            audio.adts = true;  // MPEG-TS / raw .aac: the config comes from the first header
        } else {
            throw InvalidDataError("Opus stream without an OpusHead in " + input);
        }
        if (t.codec == "opus") audio.frame_samples = 960;
        else if (par->frame_size > 0) audio.frame_samples = par->frame_size;
        audio.snap = std::max<int64_t>(2, av_rescale_q_rnd(1, audio.st->time_base, audio.out_tb, AV_ROUND_UP) + 1);
        // With video, audio cuts follow the video's cuts; alone, its own clock.
        audio.seg = std::make_unique<CmafSegmenter>(t, output_dir + "/audio", video.st ? 0.0 : segment_seconds);
    }

    std::deque<int64_t> boundaries;  // video cut times, video output ticks

    auto write_audio = [&](EncodedPacket&& p) {
        bool cut = false;
        // Cut at the first audio frame at or after each video cut: B/vts <= t/ats.
        while (!boundaries.empty() &&
               static_cast<__int128>(boundaries.front()) * audio.out_tb.den <=
                   static_cast<__int128>(p.pts) * video.out_tb.den) {
            boundaries.pop_front();
            cut = true;
        }
        if (cut) audio.seg->force_cut();
        audio.seg->write(std::move(p));
    };
    auto release_audio = [&](bool all) {
        while (!audio.pending.empty()) {
            const EncodedPacket& p = audio.pending.front();
            if (!all && (video.progress == INT64_MIN ||
                         static_cast<__int128>(p.pts) * video.out_tb.den >
                             static_cast<__int128>(video.progress) * audio.out_tb.den))
                break;
            EncodedPacket q = std::move(audio.pending.front());
            audio.pending.pop_front();
            write_audio(std::move(q));
        }
    };

    auto emit_video = [&](EncodedPacket&& p) {
        // Rounded container clocks can repeat a decode time; decode order is what
        // matters, so keep it strictly increasing.
        if (video.last_dts != AV_NOPTS_VALUE && p.dts <= video.last_dts) p.dts = video.last_dts + 1;
        video.last_dts = p.dts;
        const int64_t dts = p.dts;
        video.seg->write(std::move(p));
        const std::vector<SegmentRecord>& segs = video.seg->segments();
        for (; video.known_segments < segs.size(); ++video.known_segments)
            boundaries.push_back(segs[video.known_segments].start + segs[video.known_segments].duration);
        video.progress = dts + video.seg->decode_time_shift();
        release_audio(false);
    };
    auto pop_reordered = [&]() {
        EncodedPacket p = std::move(video.reorder.front());
        video.reorder.pop_front();
        p.dts = *video.reorder_pts.begin();
        video.reorder_pts.erase(video.reorder_pts.begin());
        emit_video(std::move(p));
    };

    auto on_video = [&](const AVPacket* pkt) {
        const bool key = pkt->flags & AV_PKT_FLAG_KEY;
        if (!video.started && !key) return;  // leading frames of a GOP cut off by the source
        if (video.need_config) {
            const std::vector<uint8_t> sets = inband_parameter_sets(pkt->data, size_t(pkt->size), video.norm.hevc);
            TrackInfo t = video.seg->track();
            t.extradata = video.norm.hevc ? hevc_decoder_config(sets.data(), sets.size())
                                          : avc_decoder_config(sets.data(), sets.size());
            video.norm.config_sets = decoder_config_parameter_sets(t.extradata, video.norm.hevc);
            video.seg->set_track(t);
            video.need_config = false;
        }
        const int64_t pts_in = pick_ts(pkt->pts, pkt->dts);
        if (!video.started && video.reorder.empty()) video.rebuild_dts = pkt->dts == AV_NOPTS_VALUE;
        EncodedPacket p;
        if (pts_in == AV_NOPTS_VALUE) {
            if (video.last_dts == AV_NOPTS_VALUE) return;  // nothing to anchor an untimed frame to
            p.pts = p.dts = video.last_dts + 1;
        } else {
            p.pts = av_rescale_q(pts_in, video.st->time_base, video.out_tb) - video.offset;
            p.dts = video.rebuild_dts ? p.pts
                                      : av_rescale_q(pick_ts(pkt->dts, pkt->pts), video.st->time_base, video.out_tb) -
                                            video.offset;
        }
        p.data = video.norm(pkt->data, size_t(pkt->size));
        p.duration = av_rescale_q(pkt->duration, video.st->time_base, video.out_tb);
        p.keyframe = key;
        video.started = true;
        if (!video.rebuild_dts) {
            emit_video(std::move(p));
            return;
        }
        video.reorder_pts.insert(p.pts);
        video.reorder.push_back(std::move(p));
        while (video.reorder.size() > VideoTrack::kReorder) pop_reordered();
    };

    auto push_audio_frame = [&](const uint8_t* d, size_t n, int64_t ts, int64_t duration) {
        // Container clocks round (TS 90 kHz vs 44.1 kHz, Matroska 1 ms): snap to the
        // running sample count when within one container tick, so durations stay
        // exact; real gaps and overlaps are larger and kept.
        if (audio.next_ts != AV_NOPTS_VALUE && std::llabs(ts - audio.next_ts) <= audio.snap) ts = audio.next_ts;
        if (audio.next_ts != AV_NOPTS_VALUE && ts < audio.next_ts) ts = audio.next_ts;  // overlap: keep order
        EncodedPacket p;
        p.data.assign(d, d + n);
        p.pts = p.dts = ts;
        p.duration = duration;
        p.keyframe = true;
        audio.next_ts = ts + duration;
        if (video.st) audio.pending.push_back(std::move(p));
        else audio.seg->write(std::move(p));
    };

    auto on_audio = [&](const AVPacket* pkt) {
        int64_t ts = pick_ts(pkt->pts, pkt->dts);
        ts = ts == AV_NOPTS_VALUE ? audio.next_ts
                                  : av_rescale_q(ts, audio.st->time_base, audio.out_tb) - audio.offset;
        if (ts == AV_NOPTS_VALUE) return;
        if (!audio.adts) {
            // An AAC frame is always frame_samples long; container durations may be
            // rounded (Matroska: 21 ms for 1024/48000 s). Opus frames vary.
            const bool aac = audio.st->codecpar->codec_id == AV_CODEC_ID_AAC;
            const int64_t dur = !aac && pkt->duration > 0
                                    ? av_rescale_q(pkt->duration, audio.st->time_base, audio.out_tb)
                                    : audio.frame_samples;
            push_audio_frame(pkt->data, size_t(pkt->size), ts, dur);
            return;
        }
        // ADTS: one or more frames, each header stripped.
        size_t pos = 0;
        const size_t n = size_t(pkt->size);
        while (pos < n) {
            const AdtsHeader h = parse_adts(pkt->data + pos, n - pos);
            if (h.raw_blocks != 1) throw InvalidDataError("ADTS frames with several raw data blocks are not supported");
            if (audio.seg->segments().empty() && audio.seg->track().extradata.empty()) {
                TrackInfo t = audio.seg->track();
                t.extradata = adts_audio_specific_config(h);
                audio.seg->set_track(t);
            }
            push_audio_frame(pkt->data + pos + h.header_size, h.frame_size - h.header_size, ts, audio.frame_samples);
            ts += audio.frame_samples;
            pos += h.frame_size;
        }
    };

    auto dispatch = [&](const AVPacket* p) {
        if (p->size <= 0) return;
        if (video.st && p->stream_index == video.st->index) on_video(p);
        else if (audio.st && p->stream_index == audio.st->index) on_audio(p);
    };
    for (auto& p : prefetched) dispatch(p.get());
    prefetched.clear();
    while (!eof) {
        const int ret = av_read_frame(fmt.get(), pkt.get());
        if (ret == AVERROR_EOF) break;
        check_av(ret, "read packet", input);
        dispatch(pkt.get());
        av_packet_unref(pkt.get());
    }
    while (!video.reorder.empty()) pop_reordered();

    PipelineResult result;
    double end_seconds = 0;
    if (video.st) {
        if (!video.started) throw InvalidDataError("no video keyframe found in " + input);
        video.seg->finish();
    }
    if (audio.st) {
        release_audio(true);
        if (audio.seg->track().extradata.empty()) throw InvalidDataError("no audio frame found in " + input);
        audio.seg->finish();
    }
    for (auto* seg : {video.seg.get(), audio.seg.get()}) {
        if (!seg) continue;
        RenditionResult r;
        r.id = seg == video.seg.get() ? "v" + std::to_string(seg->track().height) : "audio";
        r.track = seg->track();
        r.segments = seg->segments();
        if (!r.segments.empty()) {
            const SegmentRecord& last = r.segments.back();
            end_seconds = std::max(end_seconds, double(last.start + last.duration) / r.track.timescale);
        }
        result.renditions.push_back(std::move(r));
    }
    result.duration_seconds = end_seconds;
    return result;
}

}  // namespace cdlc
