// CmafSegmenter: the cutting policy and the files. Box bytes come from writer.cpp.
//
// Why signed composition offsets (trun version 1) and no edit list for video: with B-frames
// the first decode time precedes the first presentation time. We shift decode
// times by that delay and let trun v1 carry negative offsets (ISO/IEC 14496-12
// §8.8.8.3), which is what CMAF prefers for fragmented tracks (23000-19 §7.5.16,
// 'cmf2' forbids edit lists). Then tfdt is the presentation time of each
// segment's first sync sample, one timeline serves HLS EXTINF, DASH
// SegmentTimeline and sidx alike, and MSE players (which apply edit lists
// inconsistently across fragments) need nothing special. Audio priming is the one
// edit list we write (TrackInfo::presentation_offset, writer.cpp): decoders need
// the primed samples, players must not present them.
#include "cmaf/segmenter.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include <unistd.h>

#include "cmaf/segment_buffers.h"
#include "cmaf/writer.h"
#include "common/error.h"
#include "io/file_writer.h"
#include "io/write_pool.h"

namespace cdlc {

namespace {

struct Sample {
    std::vector<uint8_t> data;           // owned bytes, or
    std::shared_ptr<const void> owner;   // borrowed ones kept alive by owner, or
    const uint8_t* borrowed = nullptr;   // (also: the range's address in a mapped file)
    std::shared_ptr<const MappedFile> file;  // a range of a mapped source file
    size_t borrowed_size = 0;            // size of a borrowed or file-range sample
    int64_t pts = 0;         // input timeline
    int64_t dts = 0;         // input timeline
    int64_t duration = -1;   // -1 until the next packet (or finish) fixes it
    int64_t packet_duration = 0;
    bool sync = false;

    const uint8_t* bytes() const { return owner || file ? borrowed : data.data(); }
    size_t size() const { return owner || file ? borrowed_size : data.size(); }
};

void write_file(const std::string& path, const std::vector<uint8_t>& head, const std::vector<Sample>& samples) {
    FileWriter w(path);
    w.memory(head.data(), head.size());
    for (const Sample& s : samples) w.memory(s.bytes(), s.size());
    w.close();
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) { write_file(path, bytes, {}); }

// A segment handed to the write pool: its header, its samples and, encrypted, what
// the cipher still has to do to them.
struct SegmentJob {
    std::vector<uint8_t> head;
    std::vector<Sample> samples;
    std::unique_ptr<SampleCipher> cipher;  // null: clear
    std::vector<uint8_t*> plain;           // the samples' owned bytes
    std::vector<SampleCryptoInfo> crypto;

    void encrypt() {
        if (!cipher) return;
        for (size_t i = 0; i < samples.size(); ++i) cipher->encrypt(plain[i], samples[i].size(), crypto[i]);
    }
};

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
    int first_number = 1;
    int64_t dts_shift = 0;         // output decode time = dts + dts_shift
    int64_t pts_shift = 0;         // output presentation time = pts + pts_shift
    int64_t last_dts = 0;
    int64_t last_duration = 0;     // of the latest sample whose duration is known
    std::shared_ptr<WritePool> pool;  // null: segments are written in the caller's thread
    int64_t tail_merge_ticks = 0;  // a final segment shorter than this joins the one before
    std::unique_ptr<SampleEncryptor> encryptor;  // null: clear
    std::shared_ptr<SegmentBuffers> buffers = std::make_shared<SegmentBuffers>();
    TrackProtection protection;
    std::vector<Sample> held;      // the last closed segment, while a tail merge may need it

    void ensure_init() {
        if (init_written) return;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw IOError("create directory " + dir + " failed: " + ec.message());
        write_file(dir + "/init.mp4", build_init_segment(track, encryptor ? &protection : nullptr));
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

    void add(EncodedPacket&& p, std::shared_ptr<const void> owner = nullptr, const uint8_t* data = nullptr,
             size_t size = 0, const FileRange* range = nullptr) {
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
            if (!current.empty()) {
                current.back().duration = p.dts - last_dts;
                if (current.back().duration > 0) last_duration = current.back().duration;
            }
        }
        if (should_cut(p)) flush();
        cut_requested = false;
        last_dts = p.dts;
        Sample s;
        if (range) {
            s.file = range->file;
            s.borrowed = range->file->data() + range->offset;
            s.borrowed_size = static_cast<size_t>(range->size);
        } else if (owner) {
            s.owner = std::move(owner);
            s.borrowed = data;
            s.borrowed_size = size;
        } else {
            s.data = std::move(p.data);
        }
        s.pts = p.pts;
        s.dts = p.dts;
        s.packet_duration = p.duration;
        s.sync = p.keyframe || track.kind == TrackKind::Audio;
        current.push_back(std::move(s));
    }

    static int64_t ticks(const std::vector<Sample>& samples) {
        int64_t total = 0;
        for (const Sample& s : samples) total += std::max<int64_t>(0, s.duration);
        return total;
    }

    // Closes the open segment. With a tail merge the closed segment is held back
    // until the next one closes, so that a short final one can join it.
    void flush(bool final = false) {
        if (!current.empty()) {
            Sample& last = current.back();
            if (last.duration < 0) {
                // End of stream: the packet's own duration, else the previous sample's.
                last.duration = last.packet_duration > 0 ? last.packet_duration : last_duration;
            }
        }
        if (tail_merge_ticks <= 0) {
            emit(current);
            return;
        }
        if (!final) {
            if (current.empty()) return;
            emit(held);
            held = std::move(current);
            current.clear();
            return;
        }
        if (!held.empty() && !current.empty() && ticks(current) < tail_merge_ticks) {
            for (Sample& s : current) held.push_back(std::move(s));
            current.clear();
        }
        emit(held);
        emit(current);
    }

    // Makes every sample's bytes owned, so that they can be encrypted in place, and
    // returns where they are. Borrowed samples (a mapped source's ranges, packets)
    // are copied into one buffer for the segment, reused and never zeroed: for
    // samples that follow each other in the source that is one read, and writev
    // sends them out as one piece.
    std::vector<uint8_t*> own(std::vector<Sample>& samples) {
        size_t borrowed = 0;
        for (const Sample& s : samples)
            if (s.file || s.owner) borrowed += s.borrowed_size;
        std::shared_ptr<uint8_t> copy = borrowed ? buffers->take(borrowed) : nullptr;
        std::vector<uint8_t*> bytes(samples.size());
        size_t at = 0;
        for (size_t i = 0; i < samples.size();) {
            Sample& s = samples[i];
            if (!s.file && !s.owner) {
                bytes[i++] = s.data.data();
                continue;
            }
            if (s.owner) {
                std::memcpy(copy.get() + at, s.borrowed, s.borrowed_size);
                bytes[i++] = copy.get() + at;
                at += s.borrowed_size;
                continue;
            }
            // Never through the mapping (see MappedFile): read the run of samples
            // that lie back to back in the file.
            size_t j = i, run = 0;
            for (; j < samples.size() && samples[j].file == s.file && samples[j].borrowed == s.borrowed + run; ++j) {
                bytes[j] = copy.get() + at + run;
                run += samples[j].borrowed_size;
            }
            read_at(*s.file, static_cast<off_t>(s.borrowed - s.file->data()), copy.get() + at, run);
            at += run;
            i = j;
        }
        for (size_t i = 0; i < samples.size(); ++i) {
            Sample& s = samples[i];
            if (!s.file && !s.owner) continue;
            s.file.reset();
            s.owner = copy;
            s.borrowed = bytes[i];
        }
        return bytes;
    }

    static void read_at(const MappedFile& file, off_t offset, uint8_t* to, size_t size) {
        size_t done = 0;
        while (done < size) {
            const ssize_t r = ::pread(file.fd(), to + done, size - done, offset + static_cast<off_t>(done));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) throw IOError("reading a sample of the source failed (file changed?)");
            done += static_cast<size_t>(r);
        }
    }

    void emit(std::vector<Sample>& samples) {
        if (samples.empty()) return;
        ensure_init();
        // Encrypted: the senc entries (subsamples, IVs) are worked out here, where
        // the header is built; the cipher runs beside the write, on the pool's
        // threads when there is a pool.
        std::vector<SampleCryptoInfo> crypto;
        std::vector<uint8_t*> plain;
        if (encryptor) {
            plain = own(samples);
            crypto.reserve(samples.size());
            for (size_t i = 0; i < samples.size(); ++i) crypto.push_back(encryptor->describe(plain[i], samples[i].size()));
        }
        std::vector<FragmentSample> frag;
        frag.reserve(samples.size());
        int64_t total = 0;
        for (const Sample& s : samples) {
            if (s.duration > 0xFFFFFFFFll) throw InvalidDataError("sample duration does not fit 32 bits");
            const int64_t offset = (s.pts + pts_shift) - out_dts(s);
            if (offset < std::numeric_limits<int32_t>::min() || offset > std::numeric_limits<int32_t>::max())
                throw InvalidDataError("composition offset does not fit 32 bits");
            frag.push_back({s.bytes(), s.size(), static_cast<uint32_t>(s.duration),
                            static_cast<int32_t>(offset), s.sync});
            total += s.duration;
        }
        SegmentRecord rec;
        rec.number = first_number + static_cast<int>(segments.size());
        rec.start = out_dts(samples.front());
        rec.duration = total;
        MediaSegmentLayout layout;
        std::vector<uint8_t> head = build_media_segment_header(
            static_cast<uint32_t>(rec.number), track.timescale, static_cast<uint64_t>(rec.start),
            track.kind == TrackKind::Audio, frag, &layout, encryptor ? &crypto : nullptr,
            encryptor ? encryptor->per_sample_iv_size() : 0, encryptor && encryptor->subsamples());
        uint64_t size = head.size();
        for (const Sample& s : samples) size += s.size();
        rec.size = size;
        rec.iframe_size = track.kind == TrackKind::Audio ? 0 : layout.iframe_size;
        std::string path = dir + "/" + std::to_string(rec.number) + ".m4s";
        if (pool) {
            // std::function must be copyable: the job shares its (moved) buffers.
            auto job = std::make_shared<SegmentJob>();
            job->head = std::move(head);
            job->samples = std::move(samples);
            if (encryptor) {
                job->cipher = encryptor->cipher();
                job->plain = std::move(plain);
                job->crypto = std::move(crypto);
            }
            pool->submit([job, path = std::move(path)] {
                job->encrypt();
                write_file(path, job->head, job->samples);
            });
        } else {
            if (encryptor)
                for (size_t i = 0; i < samples.size(); ++i) encryptor->encrypt(plain[i], samples[i].size(), crypto[i]);
            write_file(path, head, samples);
        }
        segments.push_back(rec);
        samples.clear();
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

void CmafSegmenter::write_borrowed(const EncodedPacket& packet, std::shared_ptr<const void> owner,
                                   const uint8_t* data, size_t size) {
    if (!owner) throw Error("CmafSegmenter::write_borrowed needs an owner");
    EncodedPacket timing;
    timing.pts = packet.pts;
    timing.dts = packet.dts;
    timing.duration = packet.duration;
    timing.keyframe = packet.keyframe;
    impl_->add(std::move(timing), std::move(owner), data, size);
}

void CmafSegmenter::write_range(const EncodedPacket& packet, const FileRange& range) {
    if (!range.file) throw Error("CmafSegmenter::write_range needs a mapped file");
    if (range.offset > range.file->size() || range.size > range.file->size() - range.offset)
        throw InvalidDataError("a sample lies past the end of the source file (truncated master?)");
    EncodedPacket timing;
    timing.pts = packet.pts;
    timing.dts = packet.dts;
    timing.duration = packet.duration;
    timing.keyframe = packet.keyframe;
    impl_->add(std::move(timing), nullptr, nullptr, 0, &range);
}

void CmafSegmenter::force_cut() { impl_->cut_requested = true; }

void CmafSegmenter::set_first_number(int number) { impl_->first_number = number; }

void CmafSegmenter::set_encryption(const EncryptionConfig& config) {
    if (impl_->started) throw Error("CmafSegmenter::set_encryption after the first packet");
    validate_encryption(config);
    if (!config.enabled()) {
        impl_->encryptor.reset();
        return;
    }
    // Subsample maps for AV1 follow OBU and tile boundaries (AV1-ISOBMFF §4), which
    // the NAL-unit layout of the encryptor does not know.
    if (impl_->track.codec == "av1")
        throw InvalidDataError("encryption of AV1 tracks is not supported (H.264 and HEVC are)");
    impl_->encryptor = std::make_unique<SampleEncryptor>(config, impl_->track.kind, impl_->track.codec);
    TrackProtection& p = impl_->protection;
    p.scheme = config.scheme;
    p.kid = config.kid;
    p.per_sample_iv_size = impl_->encryptor->per_sample_iv_size();
    p.crypt_byte_block = impl_->encryptor->crypt_byte_block();
    p.skip_byte_block = impl_->encryptor->skip_byte_block();
    if (config.scheme == "cbcs") p.constant_iv = cbcs_constant_iv(config);
}

void CmafSegmenter::set_tail_merge(double seconds) {
    if (impl_->started) throw Error("CmafSegmenter::set_tail_merge after the first packet");
    impl_->tail_merge_ticks =
        seconds > 0 && std::isfinite(seconds) ? std::llround(seconds * impl_->track.timescale) : 0;
}

void CmafSegmenter::finish() {
    if (impl_->finished) return;
    impl_->flush(true);
    impl_->ensure_init();
    if (impl_->pool) impl_->pool->wait();
    impl_->finished = true;
}

void CmafSegmenter::set_write_pool(std::shared_ptr<WritePool> pool) {
    if (impl_->started) throw Error("CmafSegmenter::set_write_pool after the first packet");
    impl_->pool = std::move(pool);
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
