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
// file when the segment is written (see "MP4 fast path" below); Matroska samples are
// borrowed from the demuxer's packets; MPEG-TS samples are rewritten (Annex B,
// ADTS) into owned buffers. Segment files are written by a WritePool, so
// several segments are copied at once on a multi-core machine.
#include "remux/remux.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <set>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/mathematics.h>
}

#include "cmaf/nal.h"
#include "cmaf/segmenter.h"
#include "cmaf/write_pool.h"
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

// A packet on its way to a segmenter: owned bytes in p.data, or bytes borrowed
// from the demuxer's AVPacket (kept alive by owner) so the copy path moves each
// sample from the read buffer to the output file without another copy.
struct Pending {
    EncodedPacket p;
    std::shared_ptr<const void> owner;
    const uint8_t* data = nullptr;
    size_t size = 0;
    CmafSegmenter::FileRange range;  // set (range.file) on the MP4 fast path
};

void write_to(CmafSegmenter& seg, Pending&& q) {
    if (q.range.file) seg.write_range(q.p, q.range);
    else if (q.owner) seg.write_borrowed(q.p, std::move(q.owner), q.data, q.size);
    else seg.write(std::move(q.p));
}

// ---- MP4 fast path ------------------------------------------------------------
// For MP4/MOV masters whose samples need no rewriting, the sample bytes go from
// the source file, mapped, to the segment files with writev: the kernel copies
// each byte once (page cache to page cache) and no read buffer is touched.
// libavformat still does all the demuxing (timestamps, sample flags, edit lists),
// but over an I/O layer that serves the real bytes of everything except mdat payloads: reads of
// those return without copying, so the demuxer only hands over positions and
// sizes (AVPacket.pos/size) and never pays for the media bytes.

struct SkipMdatIO {
    int fd = -1;
    uint64_t size = 0;
    uint64_t pos = 0;
    std::vector<std::pair<uint64_t, uint64_t>> mdat;  // [begin, end) of mdat payloads
};

bool pread_all(int fd, uint8_t* buf, uint64_t n, uint64_t off) {
    while (n > 0) {
        const ssize_t r = ::pread(fd, buf, n, static_cast<off_t>(off));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        buf += r;
        off += uint64_t(r);
        n -= uint64_t(r);
    }
    return true;
}

// Top-level boxes (ISO/IEC 14496-12 §4.2); empty when the file is not ISO-BMFF.
std::vector<std::pair<uint64_t, uint64_t>> mdat_payloads(int fd, uint64_t file_size) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    uint64_t pos = 0;
    while (pos + 8 <= file_size) {
        uint8_t h[16];
        if (!pread_all(fd, h, 8, pos)) return {};
        uint64_t size = (uint64_t(h[0]) << 24) | (uint64_t(h[1]) << 16) | (uint64_t(h[2]) << 8) | h[3];
        uint64_t header = 8;
        if (size == 1) {
            if (pos + 16 > file_size || !pread_all(fd, h + 8, 8, pos + 8)) return {};
            size = 0;
            for (int i = 8; i < 16; ++i) size = (size << 8) | h[i];
            header = 16;
        } else if (size == 0) {
            size = file_size - pos;
        }
        if (size < header || size > file_size - pos) return out;  // trailing junk: stop here
        if (std::memcmp(h + 4, "mdat", 4) == 0) out.emplace_back(pos + header, pos + size);
        pos += size;
    }
    return out;
}

int skip_mdat_read(void* opaque, uint8_t* buf, int n) {
    auto* io = static_cast<SkipMdatIO*>(opaque);
    if (io->pos >= io->size) return AVERROR_EOF;
    const uint64_t begin = io->pos, end = std::min<uint64_t>(io->pos + uint64_t(n), io->size);
    uint64_t p = begin;
    for (const auto& [mb, me] : io->mdat) {
        if (p >= end) break;
        if (me <= p) continue;
        if (mb > p) {  // real bytes up to this mdat payload
            const uint64_t upto = std::min(mb, end);
            if (!pread_all(io->fd, buf + (p - begin), upto - p, p)) return AVERROR(EIO);
            p = upto;
        }
        if (p < end && p >= mb) p = std::min(me, end);  // payload: left as is
    }
    if (p < end && !pread_all(io->fd, buf + (p - begin), end - p, p)) return AVERROR(EIO);
    io->pos = end;
    return static_cast<int>(end - begin);
}

int64_t skip_mdat_seek(void* opaque, int64_t offset, int whence) {
    auto* io = static_cast<SkipMdatIO*>(opaque);
    whence &= ~AVSEEK_FORCE;
    if (whence == AVSEEK_SIZE) return static_cast<int64_t>(io->size);
    int64_t target = offset;
    if (whence == SEEK_CUR) target += static_cast<int64_t>(io->pos);
    else if (whence == SEEK_END) target += static_cast<int64_t>(io->size);
    else if (whence != SEEK_SET) return AVERROR(EINVAL);
    if (target < 0) return AVERROR(EINVAL);
    io->pos = static_cast<uint64_t>(target);
    return target;
}

// The demuxer for the fast path, or null when the input does not qualify.
struct FastSource {
    std::shared_ptr<const MappedFile> file;
    SkipMdatIO io;
    AVIOContext* avio = nullptr;
    AVFormatContext* fmt = nullptr;
    ~FastSource() {
        if (fmt) avformat_close_input(&fmt);
        if (avio) {
            av_freep(&avio->buffer);
            avio_context_free(&avio);
        }
    }
};

std::unique_ptr<FastSource> open_fast_source(const std::string& input, const AVFormatContext* probed) {
    if (!std::strstr(probed->iformat->name, "mp4")) return nullptr;
    auto src = std::make_unique<FastSource>();
    src->file = MappedFile::open(input);
    if (!src->file) return nullptr;
    const int raw_fd = src->file->fd();
    src->io.fd = raw_fd;
    src->io.size = src->file->size();
    src->io.mdat = mdat_payloads(raw_fd, src->io.size);
    if (src->io.mdat.empty()) return nullptr;
    // Small on purpose: avio_read() hands reads larger than its buffer straight
    // to skip_mdat_read(), so video samples are neither read nor copied at all.
    constexpr int kBuffer = 4096;
    auto* buffer = static_cast<uint8_t*>(av_malloc(kBuffer));
    if (!buffer) return nullptr;
    src->avio = avio_alloc_context(buffer, kBuffer, 0, &src->io, skip_mdat_read, nullptr, skip_mdat_seek);
    if (!src->avio) {
        av_free(buffer);
        return nullptr;
    }
    src->fmt = avformat_alloc_context();
    if (!src->fmt) return nullptr;
    src->fmt->pb = src->avio;
    // No parsers (they would read the skipped payload); the mov demuxer sets pts,
    // dts, duration and key flags itself from the sample tables.
    src->fmt->flags |= AVFMT_FLAG_CUSTOM_IO | AVFMT_FLAG_NOPARSE | AVFMT_FLAG_NOFILLIN;
    if (avformat_open_input(&src->fmt, input.c_str(), probed->iformat, nullptr) < 0) {
        src->fmt = nullptr;  // freed by avformat_open_input on failure
        return nullptr;
    }
    if (src->fmt->nb_streams != probed->nb_streams) return nullptr;
    return src;
}

// Takes over the packet's reference; the returned owner frees it.
std::shared_ptr<const void> adopt(AVPacket* pkt) {
    AVPacket* held = av_packet_alloc();
    if (!held) throw Error("out of memory allocating a packet");
    av_packet_move_ref(held, pkt);
    return std::shared_ptr<const void>(held, [](const void* q) {
        AVPacket* h = static_cast<AVPacket*>(const_cast<void*>(q));
        av_packet_free(&h);
    });
}

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

    // MP4/MKV with 4-byte lengths: samples are already in CMAF form.
    bool passthrough() const { return !annexb && nal_length_size == 4; }

    std::vector<uint8_t> operator()(const uint8_t* d, size_t n) const {
        if (passthrough()) return std::vector<uint8_t>(d, d + n);
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
    std::deque<Pending> reorder;
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
    std::deque<Pending> pending;  // held until the video has passed them
};

}  // namespace

PipelineResult package_copy(const std::string& input, const std::string& output_dir, double segment_seconds) {
    if (!(segment_seconds > 0)) throw InvalidDataError("segment_seconds must be positive");

    AVFormatContext* raw = nullptr;
    // 1 MiB reads instead of the 32 KiB default: a remux is I/O bound and the
    // packets are memcpy'd out of the read buffer anyway.
    AVDictionary* opts = nullptr;
    av_dict_set(&opts, "blocksize", "1048576", 0);
    const int opened = avformat_open_input(&raw, input.c_str(), nullptr, &opts);
    av_dict_free(&opts);
    check_av(opened, "open input", input);
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

    // Segment files are written on other cores while demuxing goes on.
    auto pool = std::make_shared<WritePool>();
    for (CmafSegmenter* seg : {video.seg.get(), audio.seg.get()})
        if (seg) seg->set_write_pool(pool);

    // MP4/MOV whose samples go out unchanged: copy them file to file.
    std::unique_ptr<FastSource> fast;
    if ((!video.st || video.norm.passthrough()) && (!audio.st || !audio.adts))
        fast = open_fast_source(input, fmt.get());
    AVFormatContext* packets = fast ? fast->fmt : fmt.get();

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
            const int ret = av_read_frame(packets, pkt.get());
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

    std::deque<int64_t> boundaries;  // video cut times, video output ticks

    auto write_audio = [&](Pending&& q) {
        const EncodedPacket& p = q.p;
        bool cut = false;
        // Cut at the first audio frame at or after each video cut: B/vts <= t/ats.
        while (!boundaries.empty() &&
               static_cast<__int128>(boundaries.front()) * audio.out_tb.den <=
                   static_cast<__int128>(p.pts) * video.out_tb.den) {
            boundaries.pop_front();
            cut = true;
        }
        if (cut) audio.seg->force_cut();
        write_to(*audio.seg, std::move(q));
    };
    auto release_audio = [&](bool all) {
        while (!audio.pending.empty()) {
            const EncodedPacket& p = audio.pending.front().p;
            if (!all && (video.progress == INT64_MIN ||
                         static_cast<__int128>(p.pts) * video.out_tb.den >
                             static_cast<__int128>(video.progress) * audio.out_tb.den))
                break;
            Pending q = std::move(audio.pending.front());
            audio.pending.pop_front();
            write_audio(std::move(q));
        }
    };

    auto emit_video = [&](Pending&& q) {
        EncodedPacket& p = q.p;
        // Rounded container clocks can repeat a decode time; decode order is what
        // matters, so keep it strictly increasing.
        if (video.last_dts != AV_NOPTS_VALUE && p.dts <= video.last_dts) p.dts = video.last_dts + 1;
        video.last_dts = p.dts;
        const int64_t dts = p.dts;
        write_to(*video.seg, std::move(q));
        const std::vector<SegmentRecord>& segs = video.seg->segments();
        for (; video.known_segments < segs.size(); ++video.known_segments)
            boundaries.push_back(segs[video.known_segments].start + segs[video.known_segments].duration);
        video.progress = dts + video.seg->decode_time_shift();
        release_audio(false);
    };
    auto pop_reordered = [&]() {
        Pending q = std::move(video.reorder.front());
        video.reorder.pop_front();
        q.p.dts = *video.reorder_pts.begin();
        video.reorder_pts.erase(video.reorder_pts.begin());
        emit_video(std::move(q));
    };

    auto on_video = [&](AVPacket* pkt) {
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
        Pending q;
        EncodedPacket& p = q.p;
        if (pts_in == AV_NOPTS_VALUE) {
            // Raw elementary streams carry no times, and a copy cannot recover
            // presentation order without decoding; say so rather than guess.
            if (video.last_dts == AV_NOPTS_VALUE)
                throw InvalidDataError("video packets in " + input +
                                       " carry no timestamps (raw elementary stream?); put the stream in "
                                       "MP4, Matroska or MPEG-TS first, or transcode it");
            p.pts = p.dts = video.last_dts + 1;
        } else {
            p.pts = av_rescale_q(pts_in, video.st->time_base, video.out_tb) - video.offset;
            p.dts = video.rebuild_dts ? p.pts
                                      : av_rescale_q(pick_ts(pkt->dts, pkt->pts), video.st->time_base, video.out_tb) -
                                            video.offset;
        }
        p.duration = av_rescale_q(pkt->duration, video.st->time_base, video.out_tb);
        p.keyframe = key;
        if (fast) {
            if (pkt->pos < 0) throw InvalidDataError("video sample without a file position in " + input);
            q.range = {fast->file, uint64_t(pkt->pos), uint64_t(pkt->size)};
        } else if (video.norm.passthrough()) {
            q.data = pkt->data;
            q.size = size_t(pkt->size);
            q.owner = adopt(pkt);
        } else {
            p.data = video.norm(pkt->data, size_t(pkt->size));
        }
        video.started = true;
        if (!video.rebuild_dts) {
            emit_video(std::move(q));
            return;
        }
        video.reorder_pts.insert(p.pts);
        video.reorder.push_back(std::move(q));
        while (video.reorder.size() > VideoTrack::kReorder) pop_reordered();
    };

    // Borrows from pkt when given (one frame per packet), copies otherwise (ADTS).
    auto push_audio_frame = [&](const uint8_t* d, size_t n, int64_t ts, int64_t duration, AVPacket* pkt) {
        // Container clocks round (TS 90 kHz vs 44.1 kHz, Matroska 1 ms): snap to the
        // running sample count when within one container tick, so durations stay
        // exact; real gaps and overlaps are larger and kept.
        if (audio.next_ts != AV_NOPTS_VALUE && std::llabs(ts - audio.next_ts) <= audio.snap) ts = audio.next_ts;
        if (audio.next_ts != AV_NOPTS_VALUE && ts < audio.next_ts) ts = audio.next_ts;  // overlap: keep order
        Pending q;
        EncodedPacket& p = q.p;
        if (pkt && fast) {
            if (pkt->pos < 0) throw InvalidDataError("audio sample without a file position in " + input);
            q.range = {fast->file, uint64_t(pkt->pos), uint64_t(pkt->size)};
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
        if (video.st) audio.pending.push_back(std::move(q));
        else write_to(*audio.seg, std::move(q));
    };

    auto on_audio = [&](AVPacket* pkt) {
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
            push_audio_frame(pkt->data, size_t(pkt->size), ts, dur, pkt);
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
            push_audio_frame(pkt->data + pos + h.header_size, h.frame_size - h.header_size, ts,
                             audio.frame_samples, nullptr);
            ts += audio.frame_samples;
            pos += h.frame_size;
        }
    };

    auto dispatch = [&](AVPacket* p) {
        if (p->size <= 0) return;
        // A copy cannot conceal damage the way a decoder does: a truncated or
        // corrupt master fails with a reason instead of yielding broken segments.
        if (p->flags & AV_PKT_FLAG_CORRUPT)
            throw InvalidDataError("corrupt packet in stream " + std::to_string(p->stream_index) + " of " + input +
                                   " (truncated or damaged master)");
        if (video.st && p->stream_index == video.st->index) on_video(p);
        else if (audio.st && p->stream_index == audio.st->index) on_audio(p);
    };
    for (auto& p : prefetched) dispatch(p.get());
    prefetched.clear();
    while (!eof) {
        const int ret = av_read_frame(packets, pkt.get());
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
