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
//
// Sample bytes take the cheapest route their container allows: MP4/MOV samples
// that need no rewriting are copied by position straight from the mapped source
// file when the segment is written (the MP4 fast path, fast_path.h); Matroska samples are
// borrowed from the demuxer's packets; MPEG-TS samples are rewritten (Annex B,
// ADTS) into owned buffers. Segment files are written by a WritePool, so
// several segments are copied at once on a multi-core machine.
//
// The run is a CopyJob (copy_job.h); the MP4 fast path is in fast_path.cpp, the
// rewriting of video samples in video_samples.h.
#include "remux/remux.h"

#include <algorithm>

#include "common/error.h"
#include "remux/copy_job.h"
#include "text/webvtt_writer.h"

namespace cdlc {

namespace remux {

CopyJob::CopyJob(const std::string& input, const std::string& output_dir, double segment_seconds,
                 const CopyOptions& options)
    : input_(input), output_dir_(output_dir), segment_seconds_(segment_seconds), options_(options) {}

PipelineResult CopyJob::run() {
    read_sidecar_text();
    open_input();
    choose_streams();
    open_video();
    for (auto& a : audios_) setup_audio(*a, stream_label(a->st));

    // Segment files are written on other cores while demuxing goes on.
    pool_ = std::make_shared<WritePool>();
    if (video_.seg) video_.seg->set_write_pool(pool_);
    for (auto& a : audios_) a->seg->set_write_pool(pool_);

    choose_fast_path();
    find_time_zero();
    for (auto& a : audios_) align_audio(*a, origin_us_);
    open_text_readers();

    copy_packets();
    read_text_second_pass();

    if (video_.st) {
        if (!video_.started) throw InvalidDataError("no video keyframe found in " + input_);
        video_.seg->finish();
    }
    for (auto& a : audios_) {
        release_audio(*a, true);
        if (a->seg->track().extradata.empty()) throw InvalidDataError("no audio frame found in " + a->source);
    }

    copy_sidecar_audio();
    for (auto& a : audios_) a->seg->finish();

    return collect();
}

void CopyJob::dispatch(AVPacket* p) {
    if (p->size <= 0) return;
    // A copy cannot conceal damage the way a decoder does: a truncated or
    // corrupt master fails with a reason instead of yielding broken segments.
    if (p->flags & AV_PKT_FLAG_CORRUPT)
        throw InvalidDataError("corrupt packet in stream " + std::to_string(p->stream_index) + " of " + input_ +
                               " (truncated or damaged master)");
    if (video_.st && p->stream_index == video_.st->index) {
        on_video(p);
    } else if (auto a = audio_of_stream_.find(p->stream_index); a != audio_of_stream_.end()) {
        on_audio(*a->second, p);
    } else if (auto t = text_of_stream_.find(p->stream_index); t != text_of_stream_.end()) {
        if (fast_) return;  // the fast demuxer does not read payloads: text comes from the second pass
        texts_[t->second].reader->packet(p);
    }
}

void CopyJob::copy_packets() {
    for (auto& p : prefetched_) dispatch(p.get());
    prefetched_.clear();
    while (!eof_) {
        const int ret = av_read_frame(packets_, pkt_.get());
        if (ret == AVERROR_EOF) break;
        check_av(ret, "read packet", input_);
        dispatch(pkt_.get());
        av_packet_unref(pkt_.get());
    }
    if (held_hevc_) submit_video(std::move(*held_hevc_));
    held_hevc_.reset();
    while (!video_.reorder.empty()) pop_reordered();
}

// On the fast path text payloads were not read: one more pass over the (small)
// text packets with the normal demuxer, every other stream discarded.
void CopyJob::read_text_second_pass() {
    if (fast_ && !texts_.empty()) {
        for (unsigned i = 0; i < fmt_->nb_streams; ++i)
            fmt_->streams[i]->discard = text_of_stream_.count(int(i)) ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
        check_av(av_seek_frame(fmt_.get(), -1, INT64_MIN, AVSEEK_FLAG_BACKWARD | AVSEEK_FLAG_ANY), "rewind", input_);
        while (av_read_frame(fmt_.get(), pkt_.get()) >= 0) {
            if (auto t = text_of_stream_.find(pkt_->stream_index); t != text_of_stream_.end() && pkt_->size > 0)
                texts_[t->second].reader->packet(pkt_.get());
            av_packet_unref(pkt_.get());
        }
    }
}

PipelineResult CopyJob::collect() {
    double end_seconds = 0;
    auto add = [&](const std::string& id, CmafSegmenter& seg) {
        RenditionResult r;
        r.id = id;
        r.track = seg.track();
        r.segments = seg.segments();
        if (!r.segments.empty()) {
            const SegmentRecord& last = r.segments.back();
            end_seconds = std::max(end_seconds, double(last.start + last.duration) / r.track.timescale);
        }
        result_.renditions.push_back(std::move(r));
    };
    if (video_.seg) add("v" + std::to_string(video_.seg->track().height), *video_.seg);
    for (auto& a : audios_) add(a->id, *a->seg);
    // The presentation ends with the video when there is one.
    if (video_.seg && !result_.renditions.front().segments.empty()) {
        const RenditionResult& v = result_.renditions.front();
        end_seconds = double(v.segments.back().start + v.segments.back().duration) / v.track.timescale;
    }
    for (TextOut& t : sidecar_texts_) texts_.push_back(std::move(t));
    for (TextOut& t : texts_) {
        std::vector<Cue> cues = t.reader ? std::move(t.reader->cues()) : std::move(t.cues);
        std::stable_sort(cues.begin(), cues.end(), [](const Cue& x, const Cue& y) { return x.start_ms < y.start_ms; });
        t.id = text_id(StreamLabel{t.track.language, t.track.name}, t.track.forced, ids_);
        result_.renditions.push_back(
            write_webvtt_rendition(t.id, t.track, cues, output_dir_ + "/" + t.id, segment_seconds_, end_seconds));
    }
    result_.duration_seconds = end_seconds;
    return std::move(result_);
}

}  // namespace remux

PipelineResult package_copy(const std::string& input, const std::string& output_dir, double segment_seconds) {
    return package_copy(input, output_dir, segment_seconds, CopyOptions{});
}

PipelineResult package_copy(const std::string& input, const std::string& output_dir, double segment_seconds,
                            const CopyOptions& options) {
    if (!(segment_seconds > 0)) throw InvalidDataError("segment_seconds must be positive");
    validate_encryption(options.encryption);
    remux::CopyJob job(input, output_dir, segment_seconds, options);
    return job.run();
}

}  // namespace cdlc
