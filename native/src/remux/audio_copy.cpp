// Audio frames of the copy path on their way to their segmenters: on the output
// clock (snapped to whole frames), ADTS headers stripped, held back until the
// video has passed them and cut at the video's cuts; and the sidecar audio files.
#include "remux/copy_job.h"

#include <algorithm>
#include <cstdlib>

#include "codec/adts.h"
#include "common/error.h"

namespace cdlc::remux {

namespace {
// Audio that starts before time zero (AAC priming) is kept up to this much,
// behind an edit list; audio before that has no picture to go with.
constexpr int64_t kMaxLeadUs = 1000000;
}  // namespace

void align_audio(AudioTrack& audio, int64_t zero_us) {
    const int64_t first = audio.first_us == INT64_MAX ? zero_us : audio.first_us;
    const int64_t lead_us = std::clamp<int64_t>(zero_us - first, 0, kMaxLeadUs);
    int64_t lead = av_rescale_q(lead_us, AV_TIME_BASE_Q, audio.out_tb);
    // Coarse container clocks (Matroska's 1 ms) round the priming: 1024 samples
    // read as 21 ms = 1008. Priming is whole frames, so snap to them.
    const int64_t frames = (lead + audio.frame_samples / 2) / audio.frame_samples;
    if (frames > 0 && std::llabs(lead - frames * audio.frame_samples) <= audio.snap)
        lead = frames * audio.frame_samples;
    audio.offset = av_rescale_q(zero_us, AV_TIME_BASE_Q, audio.out_tb) - lead;
    audio.lead = lead;
    if (lead > 0) audio.next_ts = 0;  // the first frame snaps onto media time 0
    TrackInfo t = audio.seg->track();
    t.presentation_offset = lead;
    audio.seg->set_track(t);
}

void CopyJob::write_audio(AudioTrack& audio, Pending&& q) {
    const EncodedPacket& p = q.p;
    bool cut = false;
    // Cut at the first audio frame presented at or after each video cut:
    // B/vts <= (t - lead)/ats.
    while (audio.next_boundary < boundaries_.size() &&
           static_cast<__int128>(boundaries_[audio.next_boundary]) * audio.out_tb.den <=
               static_cast<__int128>(p.pts - audio.lead) * video_.out_tb.den) {
        ++audio.next_boundary;
        cut = true;
    }
    if (cut) audio.seg->force_cut();
    write_to(*audio.seg, std::move(q));
}

void CopyJob::release_audio(AudioTrack& audio, bool all) {
    while (!audio.pending.empty()) {
        const EncodedPacket& p = audio.pending.front().p;
        if (!all && (video_.progress == INT64_MIN ||
                     static_cast<__int128>(p.pts) * video_.out_tb.den >
                         static_cast<__int128>(video_.progress) * audio.out_tb.den))
            break;
        Pending q = std::move(audio.pending.front());
        audio.pending.pop_front();
        write_audio(audio, std::move(q));
    }
}

// Borrows from pkt when given (one frame per packet), copies otherwise (ADTS).
void CopyJob::push_audio_frame(AudioTrack& audio, const uint8_t* d, size_t n, int64_t ts, int64_t duration,
                               AVPacket* pkt) {
    // Container clocks round (TS 90 kHz vs 44.1 kHz, Matroska 1 ms): snap to the
    // running sample count when within one container tick, so durations stay
    // exact; real gaps and overlaps are larger and kept.
    if (audio.next_ts != AV_NOPTS_VALUE && std::llabs(ts - audio.next_ts) <= audio.snap) ts = audio.next_ts;
    if (audio.next_ts != AV_NOPTS_VALUE && ts < audio.next_ts) ts = audio.next_ts;  // overlap: keep order
    if (ts + duration <= 0) return;  // before the lead the edit list keeps: no picture to go with
    Pending q;
    EncodedPacket& p = q.p;
    if (pkt && fast_ && audio.from_master) {
        if (pkt->pos < 0) throw InvalidDataError("audio sample without a file position in " + input_);
        q.range = {fast_->file, uint64_t(pkt->pos), uint64_t(pkt->size)};
    } else if (pkt) {
        q.data = d;
        q.size = n;
        q.owner = adopt(pkt);
    } else {
        p.data.assign(d, d + n);
    }
    p.pts = p.dts = ts;
    p.duration = duration;
    p.keyframe = true;
    audio.next_ts = ts + duration;
    if (video_.st && audio.from_master) audio.pending.push_back(std::move(q));
    else if (video_.st) write_audio(audio, std::move(q));
    else write_to(*audio.seg, std::move(q));
}

void CopyJob::on_audio(AudioTrack& audio, AVPacket* pkt) {
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
        push_audio_frame(audio, pkt->data, size_t(pkt->size), ts, dur, pkt);
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
        push_audio_frame(audio, pkt->data + pos + h.header_size, h.frame_size - h.header_size, ts,
                         audio.frame_samples, nullptr);
        ts += audio.frame_samples;
        pos += h.frame_size;
    }
}

// Sidecar audio: every video cut is known now, so its frames go straight out.
void CopyJob::copy_sidecar_audio() {
    for (const SidecarAudio& side : options_.sidecar_audio) {
        AVFormatContext* sraw = nullptr;
        check_av(avformat_open_input(&sraw, side.path.c_str(), nullptr, nullptr), "open sidecar", side.path);
        sidecar_fmts_.emplace_back(sraw);
        AVFormatContext* sf = sraw;
        check_av(avformat_find_stream_info(sf, nullptr), "read stream info", side.path);
        const int idx = av_find_best_stream(sf, AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
        if (idx < 0) throw InvalidDataError("no audio stream in sidecar " + side.path);
        AVStream* st = sf->streams[idx];
        if (st->codecpar->codec_id != AV_CODEC_ID_AAC && st->codecpar->codec_id != AV_CODEC_ID_OPUS)
            throw InvalidDataError("audio codec '" + codec_name(st->codecpar->codec_id) + "' in sidecar " + side.path +
                                   transcode_hint_ + " (copy supports aac, opus)");
        if (st->codecpar->sample_rate <= 0) throw InvalidDataError("audio stream without a sample rate in " + side.path);
        for (unsigned i = 0; i < sf->nb_streams; ++i)
            if (int(i) != idx) {
                sf->streams[i]->discard = AVDISCARD_ALL;
                result_.skipped.push_back(skipped(side.path, sf->streams[i], "a sidecar gives one audio stream (the best)"));
            }
        auto a = std::make_unique<AudioTrack>();
        a->st = st;
        a->source = side.path;
        a->from_master = false;
        setup_audio(*a, sidecar_label(side.language, side.name));
        a->seg->set_write_pool(pool_);
        // Its first sample is the master's time zero; priming it shows as negative
        // times stays before zero, behind the edit list.
        AudioTrack& audio = *a;
        audios_.push_back(std::move(a));
        std::deque<std::unique_ptr<AVPacket, PacketFree>> head;
        while (audio.first_us == INT64_MAX) {
            std::unique_ptr<AVPacket, PacketFree> sp(av_packet_alloc());
            if (!sp) throw Error("out of memory allocating a packet");
            const int ret = av_read_frame(sf, sp.get());
            if (ret == AVERROR_EOF) break;
            check_av(ret, "read packet", side.path);
            const int64_t ts = pick_ts(sp->pts, sp->dts);
            if (sp->stream_index == idx && ts != AV_NOPTS_VALUE && sp->size > 0)
                audio.first_us = av_rescale_q(ts, st->time_base, AV_TIME_BASE_Q);
            head.push_back(std::move(sp));
        }
        align_audio(audio, audio.first_us == INT64_MAX ? 0 : std::max<int64_t>(audio.first_us, 0));
        auto feed = [&](AVPacket* sp) {
            if (sp->stream_index != idx || sp->size <= 0) return;
            if (sp->flags & AV_PKT_FLAG_CORRUPT) throw InvalidDataError("corrupt packet in " + side.path);
            on_audio(audio, sp);
        };
        for (auto& sp : head) feed(sp.get());
        head.clear();
        for (;;) {
            const int ret = av_read_frame(sf, pkt_.get());
            if (ret == AVERROR_EOF) break;
            check_av(ret, "read packet", side.path);
            feed(pkt_.get());
            av_packet_unref(pkt_.get());
        }
        if (audio.seg->track().extradata.empty()) throw InvalidDataError("no audio frame found in " + side.path);
    }
}

}  // namespace cdlc::remux
