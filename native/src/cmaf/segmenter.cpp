// CmafSegmenter: the cutting policy and the files. Box bytes come from writer.cpp.
//
// Why signed composition offsets (trun version 1) and no edit list: with B-frames
// the first decode time precedes the first presentation time. We shift decode
// times by that delay and let trun v1 carry negative offsets (ISO/IEC 14496-12
// §8.8.8.3), which is what CMAF prefers for fragmented tracks (23000-19 §7.5.16,
// 'cmf2' forbids edit lists). Then tfdt is the presentation time of each
// segment's first sync sample, one timeline serves HLS EXTINF, DASH
// SegmentTimeline and sidx alike, and MSE players (which apply edit lists
// inconsistently across fragments) need nothing special.
#include "cmaf/segmenter.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "cmaf/writer.h"
#include "common/error.h"

namespace cdlc {

namespace {

struct Sample {
    std::vector<uint8_t> data;
    int64_t pts = 0;         // input timeline
    int64_t dts = 0;         // input timeline
    int64_t duration = -1;   // -1 until the next packet (or finish) fixes it
    int64_t packet_duration = 0;
    bool sync = false;
};

void write_file(const std::string& path, const std::vector<uint8_t>& head,
                const std::vector<Sample>& samples) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) throw IOError("open " + path + " for writing failed: " + std::strerror(errno));
    bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
    for (const Sample& s : samples) {
        if (!ok) break;
        ok = s.data.empty() || std::fwrite(s.data.data(), 1, s.data.size(), f) == s.data.size();
    }
    const int err = errno;
    if (std::fclose(f) != 0) ok = false;
    if (!ok) throw IOError("writing " + path + " failed: " + std::strerror(err));
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
    write_file(path, bytes, {});
}

}  // namespace

struct CmafSegmenter::Impl {
    TrackInfo track;
    std::string dir;
    int64_t segment_ticks = 0;     // 0: no automatic cuts
    std::vector<SegmentRecord> segments;
    std::vector<Sample> current;   // samples of the open segment
    bool started = false;
    bool init_written = false;
    bool finished = false;
    bool cut_requested = false;
    int64_t dts_shift = 0;         // output decode time = dts + dts_shift
    int64_t pts_shift = 0;         // output presentation time = pts + pts_shift
    int64_t last_dts = 0;

    void ensure_init() {
        if (init_written) return;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw IOError("create directory " + dir + " failed: " + ec.message());
        write_file(dir + "/init.mp4", build_init_segment(track));
        init_written = true;
    }

    int64_t out_dts(const Sample& s) const { return s.dts + dts_shift; }

    bool should_cut(const EncodedPacket& p) {
        if (current.empty()) return false;
        if (cut_requested) return true;
        if (segment_ticks <= 0) return false;
        const bool audio = track.kind == TrackKind::Audio;
        if (!audio && !p.keyframe) return false;
        const int64_t start = out_dts(current.front());
        const int64_t next = (start / segment_ticks + 1) * segment_ticks;
        return p.dts + dts_shift >= next;
    }

    void add(EncodedPacket&& p) {
        if (finished) throw Error("CmafSegmenter::write after finish()");
        if (!started) {
            // First packet fixes the timeline (see the header comment).
            const int64_t delay = p.pts - p.dts;
            dts_shift = delay > 0 ? delay : 0;
            const int64_t first = p.pts;
            pts_shift = first < 0 ? -first : 0;
            dts_shift += pts_shift;
            if (p.dts + dts_shift < 0) {
                pts_shift -= p.dts + dts_shift;
                dts_shift -= p.dts + dts_shift;
            }
            started = true;
        } else {
            if (p.dts < last_dts)
                throw InvalidDataError("decode times go backwards in track " + track.codec + " (" +
                                       std::to_string(p.dts) + " after " + std::to_string(last_dts) + ")");
            if (!current.empty()) current.back().duration = p.dts - last_dts;
        }
        if (should_cut(p)) flush();
        cut_requested = false;
        last_dts = p.dts;
        Sample s;
        s.data = std::move(p.data);
        s.pts = p.pts;
        s.dts = p.dts;
        s.packet_duration = p.duration;
        s.sync = p.keyframe || track.kind == TrackKind::Audio;
        current.push_back(std::move(s));
    }

    void flush() {
        if (current.empty()) return;
        ensure_init();
        Sample& last = current.back();
        if (last.duration < 0) {
            // End of stream: the packet's own duration, else repeat the previous one.
            if (last.packet_duration > 0) last.duration = last.packet_duration;
            else if (current.size() >= 2) last.duration = current[current.size() - 2].duration;
            else if (!segments.empty() && segments.back().duration > 0 && track.kind == TrackKind::Audio)
                last.duration = segments.back().duration;
            else last.duration = 0;
        }
        std::vector<FragmentSample> frag;
        frag.reserve(current.size());
        int64_t total = 0;
        for (const Sample& s : current) {
            if (s.duration > 0xFFFFFFFFll) throw InvalidDataError("sample duration does not fit 32 bits");
            const int64_t offset = (s.pts + pts_shift) - out_dts(s);
            if (offset < std::numeric_limits<int32_t>::min() || offset > std::numeric_limits<int32_t>::max())
                throw InvalidDataError("composition offset does not fit 32 bits");
            frag.push_back({s.data.data(), s.data.size(), static_cast<uint32_t>(s.duration),
                            static_cast<int32_t>(offset), s.sync});
            total += s.duration;
        }
        SegmentRecord rec;
        rec.number = static_cast<int>(segments.size()) + 1;
        rec.start = out_dts(current.front());
        rec.duration = total;
        MediaSegmentLayout layout;
        const std::vector<uint8_t> head = build_media_segment_header(
            static_cast<uint32_t>(rec.number), track.timescale, static_cast<uint64_t>(rec.start),
            track.kind == TrackKind::Audio, frag, &layout);
        uint64_t size = head.size();
        for (const Sample& s : current) size += s.data.size();
        rec.size = size;
        rec.iframe_size = track.kind == TrackKind::Audio ? 0 : layout.iframe_size;
        write_file(dir + "/" + std::to_string(rec.number) + ".m4s", head, current);
        segments.push_back(rec);
        current.clear();
    }
};

CmafSegmenter::CmafSegmenter(TrackInfo track, std::string output_dir, double segment_seconds) : impl_(nullptr) {
    // Validate now so a bad configuration fails before any media work.
    sample_entry_type(track.codec);
    if (track.timescale == 0) throw InvalidDataError("track timescale must be positive");
    impl_ = new Impl();
    impl_->track = std::move(track);
    impl_->dir = std::move(output_dir);
    if (segment_seconds > 0 && std::isfinite(segment_seconds))
        impl_->segment_ticks = std::max<int64_t>(1, std::llround(segment_seconds * impl_->track.timescale));
}

CmafSegmenter::~CmafSegmenter() { delete impl_; }

CmafSegmenter::CmafSegmenter(CmafSegmenter&& other) noexcept : impl_(other.impl_) { other.impl_ = nullptr; }

CmafSegmenter& CmafSegmenter::operator=(CmafSegmenter&& other) noexcept {
    if (this != &other) {
        delete impl_;
        impl_ = other.impl_;
        other.impl_ = nullptr;
    }
    return *this;
}

void CmafSegmenter::write(const EncodedPacket& packet) { impl_->add(EncodedPacket(packet)); }

void CmafSegmenter::write(EncodedPacket&& packet) { impl_->add(std::move(packet)); }

void CmafSegmenter::force_cut() { impl_->cut_requested = true; }

void CmafSegmenter::finish() {
    if (impl_->finished) return;
    impl_->flush();
    impl_->ensure_init();
    impl_->finished = true;
}

int64_t CmafSegmenter::decode_time_shift() const { return impl_->dts_shift; }

const TrackInfo& CmafSegmenter::track() const { return impl_->track; }

const std::vector<SegmentRecord>& CmafSegmenter::segments() const { return impl_->segments; }

void CmafSegmenter::set_track(const TrackInfo& track) {
    if (impl_->init_written) throw Error("CmafSegmenter::set_track after init.mp4 was written");
    sample_entry_type(track.codec);
    impl_->track = track;
}

}  // namespace cdlc
