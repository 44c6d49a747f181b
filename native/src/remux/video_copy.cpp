// Video samples of the copy path on their way to the segmenter: from the
// demuxer's packet (borrowed, a file range, or rewritten), with times on the
// output clock in decode order, HEVC keyframes narrowed to sync samples; each
// segment the video closes gives the cut time the audio tracks follow.
#include "remux/copy_job.h"

#include <cstring>

#include "codec/nal.h"
#include "common/error.h"

namespace cdlc::remux {

void CopyJob::emit_video(Pending&& q) {
    EncodedPacket& p = q.p;
    // Rounded container clocks can repeat a decode time; decode order is what
    // matters, so keep it strictly increasing.
    if (video_.last_dts != AV_NOPTS_VALUE && p.dts <= video_.last_dts) p.dts = video_.last_dts + 1;
    video_.last_dts = p.dts;
    const int64_t dts = p.dts;
    write_to(*video_.seg, std::move(q));
    const std::vector<SegmentRecord>& segs = video_.seg->segments();
    for (; video_.known_segments < segs.size(); ++video_.known_segments)
        boundaries_.push_back(segs[video_.known_segments].start + segs[video_.known_segments].duration);
    video_.progress = dts + video_.seg->decode_time_shift();
    for (auto& a : audios_) release_audio(*a, false);
}

void CopyJob::pop_reordered() {
    Pending q = std::move(video_.reorder.front());
    video_.reorder.pop_front();
    q.p.dts = *video_.reorder_pts.begin();
    video_.reorder_pts.erase(video_.reorder_pts.begin());
    emit_video(std::move(q));
}

void CopyJob::submit_video(Pending&& q) {
    if (!video_.rebuild_dts) {
        emit_video(std::move(q));
        return;
    }
    video_.reorder_pts.insert(q.p.pts);
    video_.reorder.push_back(std::move(q));
    while (video_.reorder.size() > VideoTrack::kReorder) pop_reordered();
}

int CopyJob::vcl_type(const Pending& q) {
    if (q.range.file) {
        const int fd = q.range.file->fd();
        const uint64_t base = q.range.offset;
        return first_hevc_vcl_type(q.range.size, [&](uint64_t off, uint64_t n, uint8_t* buf) {
            return pread_all(fd, buf, n, base + off);
        });
    }
    const uint8_t* d = q.owner ? q.data : q.p.data.data();
    const uint64_t n = q.owner ? q.size : q.p.data.size();
    return first_hevc_vcl_type(n, [&](uint64_t off, uint64_t len, uint8_t* buf) {
        if (off + len > n) return false;
        std::memcpy(buf, d + off, len);
        return true;
    });
}

// HEVC sync samples (ISO/IEC 14496-15 §8.4.3, H.265 §8.1): an IDR always; a CRA
// or BLA only when no RASL picture follows it in decode order (RASL pictures
// reference pictures before it, so playback cannot start there). Demuxers mark
// every CRA as a keyframe; the verdict needs the next picture, so one packet is
// held back.
void CopyJob::submit_hevc(Pending&& q) {
    const int type = vcl_type(q);
    if (held_hevc_) {
        if (held_type_ >= kHevcBlaWLp && held_type_ <= kHevcCra && held_type_ != kHevcIdrWRadl &&
            held_type_ != kHevcIdrNLp && (type == kHevcRaslN || type == kHevcRaslR))
            held_hevc_->p.keyframe = false;
        submit_video(std::move(*held_hevc_));
    }
    if (q.p.keyframe && (type < kHevcBlaWLp || type > kHevcCra)) q.p.keyframe = false;  // not an IRAP
    held_hevc_ = std::move(q);
    held_type_ = type;
}

void CopyJob::on_video(AVPacket* pkt) {
    const bool key = pkt->flags & AV_PKT_FLAG_KEY;
    if (!video_.started && !key) return;  // leading frames of a GOP cut off by the source
    if (video_.need_config) {
        const std::vector<uint8_t> sets = inband_parameter_sets(pkt->data, size_t(pkt->size), video_.norm.hevc);
        TrackInfo t = video_.seg->track();
        t.extradata = video_.norm.hevc ? hevc_decoder_config(sets.data(), sets.size())
                                      : avc_decoder_config(sets.data(), sets.size());
        video_.norm.config_sets = decoder_config_parameter_sets(t.extradata, video_.norm.hevc);
        video_.seg->set_track(t);
        video_.need_config = false;
    }
    const int64_t pts_in = pick_ts(pkt->pts, pkt->dts);
    if (!video_.started && video_.reorder.empty()) video_.rebuild_dts = pkt->dts == AV_NOPTS_VALUE;
    Pending q;
    EncodedPacket& p = q.p;
    if (pts_in == AV_NOPTS_VALUE) {
        // Raw elementary streams carry no times, and a copy cannot recover
        // presentation order without decoding; say so rather than guess.
        if (video_.last_dts == AV_NOPTS_VALUE)
            throw InvalidDataError("video packets in " + input_ +
                                   " carry no timestamps (raw elementary stream?); put the stream in "
                                   "MP4, Matroska or MPEG-TS first, or transcode it");
        p.pts = p.dts = video_.last_dts + 1;
    } else {
        p.pts = av_rescale_q(pts_in, video_.st->time_base, video_.out_tb) - video_.offset;
        p.dts = video_.rebuild_dts ? p.pts
                                  : av_rescale_q(pick_ts(pkt->dts, pkt->pts), video_.st->time_base, video_.out_tb) -
                                        video_.offset;
    }
    p.duration = av_rescale_q(pkt->duration, video_.st->time_base, video_.out_tb);
    p.keyframe = key;
    if (fast_) {
        if (pkt->pos < 0) throw InvalidDataError("video sample without a file position in " + input_);
        q.range = {fast_->file, uint64_t(pkt->pos), uint64_t(pkt->size)};
    } else if (video_.norm.passthrough()) {
        q.data = pkt->data;
        q.size = size_t(pkt->size);
        q.owner = adopt(pkt);
    } else {
        p.data = video_.norm(pkt->data, size_t(pkt->size));
    }
    video_.started = true;
    if (video_.norm.hevc) submit_hevc(std::move(q));
    else submit_video(std::move(q));
}

}  // namespace cdlc::remux
