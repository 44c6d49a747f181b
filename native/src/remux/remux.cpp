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
#include <map>
#include <memory>
#include <optional>
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

#include "av/streams.h"
#include "codec/nal.h"
#include "cmaf/segmenter.h"
#include "io/mapped_file.h"
#include "io/write_pool.h"
#include "common/error.h"
#include "codec/adts.h"
#include "text/subtitle_parse.h"
#include "text/webvtt_writer.h"

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
    std::string source;           // the file it comes from (the master or a sidecar)
    std::string id;
    std::unique_ptr<CmafSegmenter> seg;
    AVRational out_tb{1, 48000};
    int64_t offset = 0;
    bool adts = false;
    bool from_master = true;      // sidecars: no fast path, all video cuts already known
    int64_t frame_samples = 1024;
    int64_t next_ts = AV_NOPTS_VALUE;  // expected time of the next frame
    int64_t snap = 2;                   // output ticks a container timestamp may be off by
    int64_t first_us = INT64_MAX;       // first packet's time (prefetch), microseconds
    int64_t lead = 0;                   // output ticks before time zero (the edit list's media_time)
    size_t next_boundary = 0;           // index of the next video cut it has not reached
    std::deque<Pending> pending;  // held until the video has passed them
};

// HEVC NAL unit types (ITU-T H.265 Table 7-1).
constexpr int kHevcRaslN = 8, kHevcRaslR = 9, kHevcBlaWLp = 16, kHevcCra = 21, kHevcIdrWRadl = 19,
              kHevcIdrNLp = 20;

// Type of the first VCL NAL unit (< 32) of a 4-byte length-prefixed HEVC sample; -1
// when there is none. `read(offset, n, buf)` fetches sample bytes (a mapped file is
// read with pread, never through the mapping: see MappedFile).
template <typename Read>
int first_hevc_vcl_type(uint64_t size, Read read) {
    uint64_t pos = 0;
    for (int guard = 0; pos + 5 <= size && guard < 64; ++guard) {
        uint8_t h[5];
        if (!read(pos, 5, h)) return -1;
        const uint64_t len = (uint64_t(h[0]) << 24) | (uint64_t(h[1]) << 16) | (uint64_t(h[2]) << 8) | h[3];
        const int type = (h[4] >> 1) & 0x3F;
        if (type < 32) return type;
        pos += 4 + len;
    }
    return -1;
}

}  // namespace

PipelineResult package_copy(const std::string& input, const std::string& output_dir, double segment_seconds) {
    return package_copy(input, output_dir, segment_seconds, CopyOptions{});
}

PipelineResult package_copy(const std::string& input, const std::string& output_dir, double segment_seconds,
                            const CopyOptions& options) {
    if (!(segment_seconds > 0)) throw InvalidDataError("segment_seconds must be positive");
    validate_encryption(options.encryption);
    // Sidecar subtitles first: a bad file fails before any media work.
    struct TextOut {
        std::string id;
        TrackInfo track;
        std::unique_ptr<TextStreamReader> reader;
        std::vector<Cue> cues;
    };
    std::vector<TextOut> sidecar_texts;
    for (const SidecarText& side : options.sidecar_text) {
        TextOut t;
        t.cues = parse_subtitle_file(side.path);
        t.track = text_track(sidecar_label(side.language, side.name), side.forced, side.sdh);
        sidecar_texts.push_back(std::move(t));
    }

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

    const std::string transcode_hint = " cannot be packaged without re-encoding; transcode it instead";
    PipelineResult result;
    std::set<std::string> ids;
    VideoTrack video;
    std::vector<std::unique_ptr<AudioTrack>> audios;
    std::vector<TextOut> texts;
    std::map<int, AudioTrack*> audio_of_stream;
    std::map<int, size_t> text_of_stream;
    for (unsigned i = 0; i < fmt->nb_streams; ++i) {
        AVStream* st = fmt->streams[i];
        const AVMediaType type = st->codecpar->codec_type;
        if (type == AVMEDIA_TYPE_VIDEO && !video.st && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            video.st = st;
    }
    bool first_audio = true;
    for (unsigned i = 0; i < fmt->nb_streams; ++i) {
        AVStream* st = fmt->streams[i];
        const AVCodecParameters* par = st->codecpar;
        const AVMediaType type = par->codec_type;
        if (st == video.st) continue;
        if (type == AVMEDIA_TYPE_AUDIO) {
            const bool copyable = par->codec_id == AV_CODEC_ID_AAC || par->codec_id == AV_CODEC_ID_OPUS;
            if (first_audio && !copyable)
                throw InvalidDataError("audio codec '" + codec_name(par->codec_id) + "' in " + input + transcode_hint +
                                       " (copy supports aac, opus)");
            if (first_audio && par->sample_rate <= 0)
                throw InvalidDataError("audio stream without a sample rate in " + input);
            if (!copyable || par->sample_rate <= 0) {
                result.skipped.push_back(skipped(input, st, "audio codec '" + codec_name(par->codec_id) + "'" +
                                                                transcode_hint + " (copy supports aac, opus)"));
                continue;
            }
            first_audio = false;
            auto a = std::make_unique<AudioTrack>();
            a->st = st;
            a->source = input;
            audio_of_stream[st->index] = a.get();
            audios.push_back(std::move(a));
        } else if (type == AVMEDIA_TYPE_VIDEO) {
            result.skipped.push_back(skipped(input, st, (st->disposition & AV_DISPOSITION_ATTACHED_PIC)
                                                            ? "cover art (an attached picture)"
                                                            : "only the first video stream is packaged"));
        } else if (type == AVMEDIA_TYPE_SUBTITLE) {
            if (!is_text_subtitle(par->codec_id)) {
                result.skipped.push_back(skipped(input, st, "bitmap subtitles cannot become WebVTT (they need OCR)"));
            } else if (!options.subtitles) {
                result.skipped.push_back(skipped(input, st, "subtitles are off for this run"));
            } else {
                text_of_stream[st->index] = texts.size();
                TextOut t;
                t.track = text_track(stream_label(st), st->disposition & AV_DISPOSITION_FORCED,
                                     st->disposition & AV_DISPOSITION_HEARING_IMPAIRED);
                texts.push_back(std::move(t));
            }
        } else if (type == AVMEDIA_TYPE_ATTACHMENT) {
            result.skipped.push_back(skipped(input, st, "attachment (fonts or files), not media"));
        } else {
            result.skipped.push_back(skipped(input, st, "data stream, no audio/video/text to package"));
        }
    }
    if (!video.st && audios.empty()) throw InvalidDataError("no video or audio stream to package in " + input);

    if (video.st) video.out_tb = AVRational{1, static_cast<int>(video_timescale(video.st->time_base))};
    if (video.st) {
        const AVCodecParameters* par = video.st->codecpar;
        if (par->codec_id != AV_CODEC_ID_H264 && par->codec_id != AV_CODEC_ID_HEVC)
            throw InvalidDataError("video codec '" + codec_name(par->codec_id) + "' in " + input + transcode_hint +
                                   " (copy supports h264, hevc)");
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
        t.language = stream_label(video.st).language;
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
        ids.insert(id);
        video.seg = std::make_unique<CmafSegmenter>(t, output_dir + "/" + id, segment_seconds);
        video.seg->set_encryption(options.encryption);
    }

    // One audio track: its segmenter under output_dir/<id>. With video, audio cuts
    // follow the video's cuts; alone, its own clock.
    int audio_n = 0;
    auto setup_audio = [&](AudioTrack& audio, const StreamLabel& label) {
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
        ++audio_n;
        audio.id = audio_n == 1 ? unique_id("audio", ids) : audio_id(label, audio_n, ids);
        audio.seg = std::make_unique<CmafSegmenter>(t, output_dir + "/" + audio.id, video.st ? 0.0 : segment_seconds);
        // No runt at the end: audio outlasting the last video cut joins the last segment.
        audio.seg->set_tail_merge(segment_seconds / 2);
        audio.seg->set_encryption(options.encryption);
    };
    for (auto& a : audios) setup_audio(*a, stream_label(a->st));

    // Segment files are written on other cores while demuxing goes on.
    auto pool = std::make_shared<WritePool>();
    if (video.seg) video.seg->set_write_pool(pool);
    for (auto& a : audios) a->seg->set_write_pool(pool);

    // MP4/MOV whose samples go out unchanged: copy them file to file.
    std::unique_ptr<FastSource> fast;
    const bool any_adts = std::any_of(audios.begin(), audios.end(), [](const auto& a) { return a->adts; });
    if ((!video.st || video.norm.passthrough()) && !any_adts) fast = open_fast_source(input, fmt.get());
    AVFormatContext* packets = fast ? fast->fmt : fmt.get();
    if (fast)  // the fast demuxer reads only what we keep
        for (unsigned i = 0; i < fast->fmt->nb_streams; ++i)
            if (!(video.st && int(i) == video.st->index) && !audio_of_stream.count(int(i)) && !text_of_stream.count(int(i)))
                fast->fmt->streams[i]->discard = AVDISCARD_ALL;

    // Time zero is the first video keyframe (without video: the first audio
    // sample, or 0 when the demuxer shows priming as negative times). Audio that
    // starts before it (AAC priming: the encoder delay a source MP4 signals with
    // its own edit list, demuxed as negative times) is kept for the decoder and
    // signalled with an edit list instead (TrackInfo::presentation_offset), up to
    // kMaxLead; audio before that is dropped (it has no picture to go with).
    static constexpr int64_t kMaxLeadUs = 1000000;
    std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
    if (!pkt) throw Error("out of memory allocating a packet");
    std::deque<std::unique_ptr<AVPacket, PacketFree>> prefetched;
    bool eof = false;
    int64_t origin_us = 0;
    {
        bool video_seen = !video.st;
        size_t audio_seen = 0;
        int64_t video_us = INT64_MAX;
        while (!(video_seen && audio_seen == audios.size()) && prefetched.size() < 4096) {
            const int ret = av_read_frame(packets, pkt.get());
            if (ret == AVERROR_EOF) {
                eof = true;
                break;
            }
            check_av(ret, "read packet", input);
            AVStream* st = fmt->streams[pkt->stream_index];
            const int64_t ts = pick_ts(pkt->pts, pkt->dts);
            if (ts != AV_NOPTS_VALUE && pkt->size > 0) {
                const int64_t us = av_rescale_q(ts, st->time_base, AV_TIME_BASE_Q);
                if (st == video.st && !video_seen && (pkt->flags & AV_PKT_FLAG_KEY)) {
                    video_us = us;
                    video_seen = true;
                }
                auto a = audio_of_stream.find(pkt->stream_index);
                if (a != audio_of_stream.end() && a->second->first_us == INT64_MAX) {
                    a->second->first_us = us;
                    ++audio_seen;
                }
            }
            prefetched.emplace_back(av_packet_alloc());
            if (!prefetched.back()) throw Error("out of memory allocating a packet");
            av_packet_move_ref(prefetched.back().get(), pkt.get());
        }
        int64_t earliest = video_us;
        for (auto& a : audios) earliest = std::min(earliest, a->first_us);
        if (earliest == INT64_MAX) earliest = 0;
        origin_us = video_us != INT64_MAX ? video_us : std::max<int64_t>(earliest, 0);
        if (video.st) video.offset = av_rescale_q(origin_us, AV_TIME_BASE_Q, video.out_tb);
    }
    // An audio track's output time 0 is `lead` before time zero; the edit list skips it.
    auto align_audio = [](AudioTrack& audio, int64_t zero_us) {
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
    };
    for (auto& a : audios) align_audio(*a, origin_us);
    for (TextOut& t : texts) {
        for (auto& [index, n] : text_of_stream)
            if (&texts[n] == &t) {
                AVStream* st = fmt->streams[index];
                t.reader = std::make_unique<TextStreamReader>(
                    st, av_rescale_q(origin_us, AV_TIME_BASE_Q, st->time_base), input);
            }
    }

    std::vector<int64_t> boundaries;  // video cut times, video output ticks (append only)

    auto write_audio = [&](AudioTrack& audio, Pending&& q) {
        const EncodedPacket& p = q.p;
        bool cut = false;
        // Cut at the first audio frame presented at or after each video cut:
        // B/vts <= (t - lead)/ats.
        while (audio.next_boundary < boundaries.size() &&
               static_cast<__int128>(boundaries[audio.next_boundary]) * audio.out_tb.den <=
                   static_cast<__int128>(p.pts - audio.lead) * video.out_tb.den) {
            ++audio.next_boundary;
            cut = true;
        }
        if (cut) audio.seg->force_cut();
        write_to(*audio.seg, std::move(q));
    };
    auto release_audio = [&](AudioTrack& audio, bool all) {
        while (!audio.pending.empty()) {
            const EncodedPacket& p = audio.pending.front().p;
            if (!all && (video.progress == INT64_MIN ||
                         static_cast<__int128>(p.pts) * video.out_tb.den >
                             static_cast<__int128>(video.progress) * audio.out_tb.den))
                break;
            Pending q = std::move(audio.pending.front());
            audio.pending.pop_front();
            write_audio(audio, std::move(q));
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
        for (auto& a : audios) release_audio(*a, false);
    };
    auto pop_reordered = [&]() {
        Pending q = std::move(video.reorder.front());
        video.reorder.pop_front();
        q.p.dts = *video.reorder_pts.begin();
        video.reorder_pts.erase(video.reorder_pts.begin());
        emit_video(std::move(q));
    };
    auto submit_video = [&](Pending&& q) {
        if (!video.rebuild_dts) {
            emit_video(std::move(q));
            return;
        }
        video.reorder_pts.insert(q.p.pts);
        video.reorder.push_back(std::move(q));
        while (video.reorder.size() > VideoTrack::kReorder) pop_reordered();
    };

    // HEVC sync samples (ISO/IEC 14496-15 §8.4.3, H.265 §8.1): an IDR always; a CRA
    // or BLA only when no RASL picture follows it in decode order (RASL pictures
    // reference pictures before it, so playback cannot start there). Demuxers mark
    // every CRA as a keyframe; the verdict needs the next picture, so one packet is
    // held back.
    std::optional<Pending> held_hevc;
    int held_type = -1;
    auto vcl_type = [&](const Pending& q) {
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
    };
    auto submit_hevc = [&](Pending&& q) {
        const int type = vcl_type(q);
        if (held_hevc) {
            if (held_type >= kHevcBlaWLp && held_type <= kHevcCra && held_type != kHevcIdrWRadl &&
                held_type != kHevcIdrNLp && (type == kHevcRaslN || type == kHevcRaslR))
                held_hevc->p.keyframe = false;
            submit_video(std::move(*held_hevc));
        }
        if (q.p.keyframe && (type < kHevcBlaWLp || type > kHevcCra)) q.p.keyframe = false;  // not an IRAP
        held_hevc = std::move(q);
        held_type = type;
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
        if (video.norm.hevc) submit_hevc(std::move(q));
        else submit_video(std::move(q));
    };

    // Borrows from pkt when given (one frame per packet), copies otherwise (ADTS).
    auto push_audio_frame = [&](AudioTrack& audio, const uint8_t* d, size_t n, int64_t ts, int64_t duration,
                                AVPacket* pkt) {
        // Container clocks round (TS 90 kHz vs 44.1 kHz, Matroska 1 ms): snap to the
        // running sample count when within one container tick, so durations stay
        // exact; real gaps and overlaps are larger and kept.
        if (audio.next_ts != AV_NOPTS_VALUE && std::llabs(ts - audio.next_ts) <= audio.snap) ts = audio.next_ts;
        if (audio.next_ts != AV_NOPTS_VALUE && ts < audio.next_ts) ts = audio.next_ts;  // overlap: keep order
        if (ts + duration <= 0) return;  // before the lead the edit list keeps: no picture to go with
        Pending q;
        EncodedPacket& p = q.p;
        if (pkt && fast && audio.from_master) {
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
        if (video.st && audio.from_master) audio.pending.push_back(std::move(q));
        else if (video.st) write_audio(audio, std::move(q));
        else write_to(*audio.seg, std::move(q));
    };

    auto on_audio = [&](AudioTrack& audio, AVPacket* pkt) {
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
    };

    auto dispatch = [&](AVPacket* p) {
        if (p->size <= 0) return;
        // A copy cannot conceal damage the way a decoder does: a truncated or
        // corrupt master fails with a reason instead of yielding broken segments.
        if (p->flags & AV_PKT_FLAG_CORRUPT)
            throw InvalidDataError("corrupt packet in stream " + std::to_string(p->stream_index) + " of " + input +
                                   " (truncated or damaged master)");
        if (video.st && p->stream_index == video.st->index) {
            on_video(p);
        } else if (auto a = audio_of_stream.find(p->stream_index); a != audio_of_stream.end()) {
            on_audio(*a->second, p);
        } else if (auto t = text_of_stream.find(p->stream_index); t != text_of_stream.end()) {
            if (fast) return;  // the fast demuxer does not read payloads: text comes from the second pass
            texts[t->second].reader->packet(p);
        }
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
    if (held_hevc) submit_video(std::move(*held_hevc));
    held_hevc.reset();
    while (!video.reorder.empty()) pop_reordered();

    // On the fast path text payloads were not read: one more pass over the (small)
    // text packets with the normal demuxer, every other stream discarded.
    if (fast && !texts.empty()) {
        for (unsigned i = 0; i < fmt->nb_streams; ++i)
            fmt->streams[i]->discard = text_of_stream.count(int(i)) ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
        check_av(av_seek_frame(fmt.get(), -1, INT64_MIN, AVSEEK_FLAG_BACKWARD | AVSEEK_FLAG_ANY), "rewind", input);
        while (av_read_frame(fmt.get(), pkt.get()) >= 0) {
            if (auto t = text_of_stream.find(pkt->stream_index); t != text_of_stream.end() && pkt->size > 0)
                texts[t->second].reader->packet(pkt.get());
            av_packet_unref(pkt.get());
        }
    }

    if (video.st) {
        if (!video.started) throw InvalidDataError("no video keyframe found in " + input);
        video.seg->finish();
    }
    for (auto& a : audios) {
        release_audio(*a, true);
        if (a->seg->track().extradata.empty()) throw InvalidDataError("no audio frame found in " + a->source);
    }

    // Sidecar audio: every video cut is known now, so its frames go straight out.
    std::vector<std::unique_ptr<AVFormatContext, FormatCloser>> sidecar_fmts;
    for (const SidecarAudio& side : options.sidecar_audio) {
        AVFormatContext* sraw = nullptr;
        check_av(avformat_open_input(&sraw, side.path.c_str(), nullptr, nullptr), "open sidecar", side.path);
        sidecar_fmts.emplace_back(sraw);
        AVFormatContext* sf = sraw;
        check_av(avformat_find_stream_info(sf, nullptr), "read stream info", side.path);
        const int idx = av_find_best_stream(sf, AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
        if (idx < 0) throw InvalidDataError("no audio stream in sidecar " + side.path);
        AVStream* st = sf->streams[idx];
        if (st->codecpar->codec_id != AV_CODEC_ID_AAC && st->codecpar->codec_id != AV_CODEC_ID_OPUS)
            throw InvalidDataError("audio codec '" + codec_name(st->codecpar->codec_id) + "' in sidecar " + side.path +
                                   transcode_hint + " (copy supports aac, opus)");
        if (st->codecpar->sample_rate <= 0) throw InvalidDataError("audio stream without a sample rate in " + side.path);
        for (unsigned i = 0; i < sf->nb_streams; ++i)
            if (int(i) != idx) {
                sf->streams[i]->discard = AVDISCARD_ALL;
                result.skipped.push_back(skipped(side.path, sf->streams[i], "a sidecar gives one audio stream (the best)"));
            }
        auto a = std::make_unique<AudioTrack>();
        a->st = st;
        a->source = side.path;
        a->from_master = false;
        setup_audio(*a, sidecar_label(side.language, side.name));
        a->seg->set_write_pool(pool);
        // Its first sample is the master's time zero; priming it shows as negative
        // times stays before zero, behind the edit list.
        AudioTrack& audio = *a;
        audios.push_back(std::move(a));
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
            const int ret = av_read_frame(sf, pkt.get());
            if (ret == AVERROR_EOF) break;
            check_av(ret, "read packet", side.path);
            feed(pkt.get());
            av_packet_unref(pkt.get());
        }
        if (audio.seg->track().extradata.empty()) throw InvalidDataError("no audio frame found in " + side.path);
    }
    for (auto& a : audios) a->seg->finish();

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
        result.renditions.push_back(std::move(r));
    };
    if (video.seg) add("v" + std::to_string(video.seg->track().height), *video.seg);
    for (auto& a : audios) add(a->id, *a->seg);
    // The presentation ends with the video when there is one.
    if (video.seg && !result.renditions.front().segments.empty()) {
        const RenditionResult& v = result.renditions.front();
        end_seconds = double(v.segments.back().start + v.segments.back().duration) / v.track.timescale;
    }
    for (TextOut& t : sidecar_texts) texts.push_back(std::move(t));
    for (TextOut& t : texts) {
        std::vector<Cue> cues = t.reader ? std::move(t.reader->cues()) : std::move(t.cues);
        std::stable_sort(cues.begin(), cues.end(), [](const Cue& x, const Cue& y) { return x.start_ms < y.start_ms; });
        t.id = text_id(StreamLabel{t.track.language, t.track.name}, t.track.forced, ids);
        result.renditions.push_back(
            write_webvtt_rendition(t.id, t.track, cues, output_dir + "/" + t.id, segment_seconds, end_seconds));
    }
    result.duration_seconds = end_seconds;
    return result;
}

}  // namespace cdlc
