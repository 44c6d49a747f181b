#include "transcode/encoders.h"
#include "transcode/video_encoder.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "av/av_log.h"
#include "common/error.h"

extern "C" {
#include <libavutil/opt.h>
}

namespace cdlc {

namespace {

struct DictFreer {
    void operator()(AVDictionary* d) const { av_dict_free(&d); }
};

// x264 preset names -> NVENC's P1 (fastest) .. P7 (best) presets (NVENC SDK 10+).
std::string nvenc_preset(const std::string& x264_preset) {
    static const std::map<std::string, std::string> table = {
        {"ultrafast", "p1"}, {"superfast", "p2"}, {"veryfast", "p2"}, {"faster", "p3"},
        {"fast", "p3"},      {"medium", "p4"},    {"slow", "p5"},     {"slower", "p6"},
        {"veryslow", "p7"},  {"placebo", "p7"},
    };
    auto it = table.find(x264_preset);
    return it == table.end() ? x264_preset : it->second;
}

// x264 preset names -> SVT-AV1 presets (0 slowest .. 13 fastest). SVT-AV1's own
// guidance puts presets 4-6 at VOD quality and 10-12 at real-time speed, so the
// x264 scale is laid onto that span: veryfast (the project's default) -> 10, medium
// -> 7, veryslow -> 4. A name outside the table is passed on as a number (or fails
// to open with SVT-AV1's own message).
std::string svtav1_preset(const std::string& x264_preset) {
    static const std::map<std::string, std::string> table = {
        {"ultrafast", "12"}, {"superfast", "11"}, {"veryfast", "10"}, {"faster", "9"},
        {"fast", "8"},       {"medium", "7"},     {"slow", "6"},      {"slower", "5"},
        {"veryslow", "4"},   {"placebo", "2"},
    };
    auto it = table.find(x264_preset);
    return it == table.end() ? x264_preset : it->second;
}

// SVT-AV1 prints its configuration to stderr at "info" unless SVT_LOG says
// otherwise; one line per rung per run is noise in a service. 1 = errors only.
// An operator's own SVT_LOG wins.
void quiet_svtav1_log() {
    static std::once_flag once;
    std::call_once(once, [] { setenv("SVT_LOG", "1", 0); });
}

}  // namespace

std::string encoder_codec(const std::string& name) {
    if (name.empty() || name == "libx264" || name == "h264_nvenc") return "h264";
    if (name == "libx265") return "hevc";
    if (name == "libsvtav1") return "av1";
    throw std::invalid_argument("unsupported video encoder '" + name +
                                "' (supported: libx264, h264_nvenc, libx265, libsvtav1)");
}

av::CodecPtr open_video_encoder(const RungConfig& rung, const VideoEncoderParams& p) {
    const std::string name = rung.encoder.empty() ? "libx264" : rung.encoder;
    const std::string family = encoder_codec(name);
    const AVCodec* codec = avcodec_find_encoder_by_name(name.c_str());
    if (!codec) throw NotFoundError("encoder not found: " + name, AVERROR_ENCODER_NOT_FOUND);
    av::CodecPtr enc(avcodec_alloc_context3(codec));
    if (!enc) throw Error("out of memory allocating encoder " + name);
    enc->width = p.width;
    enc->height = p.height;
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->sample_aspect_ratio = AVRational{1, 1};
    enc->framerate = p.frame_rate;
    enc->time_base = av_inv_q(p.frame_rate);  // pts count output frames
    enc->gop_size = p.gop_frames;
    enc->keyint_min = p.gop_frames;
    // Parameter sets (SPS/PPS, VPS/SPS/PPS, the AV1 sequence header) in extradata ->
    // avcC / hvcC / av1C, none in band.
    enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (family != "h264") enc->flags |= AV_CODEC_FLAG_CLOSED_GOP;  // x264/NVENC: set by their options
    enc->color_range = p.color_range;
    enc->color_primaries = p.color_primaries;
    enc->color_trc = p.color_trc;
    enc->colorspace = p.colorspace;
    enc->thread_count = p.threads;

    const int64_t maxrate = rung.maxrate > 0 ? rung.maxrate : rung.bitrate * 3 / 2;
    const int64_t bufsize = rung.bufsize > 0 ? rung.bufsize : rung.bitrate * 2;
    if (rung.crf < 0 && rung.bitrate <= 0)
        throw std::invalid_argument("rung " + rung.id + ": bitrate must be > 0 (or set crf)");
    if (rung.crf < 0) enc->bit_rate = rung.bitrate;
    if (maxrate > 0) enc->rc_max_rate = maxrate;
    if (bufsize > 0) enc->rc_buffer_size = static_cast<int>(std::min<int64_t>(bufsize, INT32_MAX));

    AVDictionary* raw = nullptr;
    if (name == "libx264") {
        av_dict_set(&raw, "preset", p.preset.c_str(), 0);
        // Fixed GOPs: keyint = min-keyint, no scene-cut I-frames, closed GOPs, so every
        // rung has IDRs at the same instants and any segment boundary is a switch point.
        const std::string params = "keyint=" + std::to_string(p.gop_frames) +
                                   ":min-keyint=" + std::to_string(p.gop_frames) +
                                   ":scenecut=0:open-gop=0";
        av_dict_set(&raw, "x264-params", params.c_str(), 0);
        av_dict_set(&raw, "forced-idr", "1", 0);
        if (rung.crf >= 0) av_dict_set_int(&raw, "crf", rung.crf, 0);
    } else if (name == "h264_nvenc") {
        av_dict_set(&raw, "preset", nvenc_preset(p.preset).c_str(), 0);
        av_dict_set(&raw, "rc", "vbr", 0);
        av_dict_set(&raw, "forced-idr", "1", 0);
        av_dict_set(&raw, "no-scenecut", "1", 0);
        av_dict_set(&raw, "strict_gop", "1", 0);
        av_dict_set(&raw, "profile", "high", 0);
        if (rung.crf >= 0) av_dict_set_int(&raw, "cq", rung.crf, 0);
    } else if (name == "libx265") {
        // x265 takes x264's preset names. Same GOP contract as libx264: fixed
        // keyint, no scene cuts, closed GOPs so every keyframe is an IDR (never a
        // CRA with leading pictures), and headers only in extradata (hvcC).
        av_dict_set(&raw, "preset", p.preset.c_str(), 0);
        std::string params = "keyint=" + std::to_string(p.gop_frames) +
                             ":min-keyint=" + std::to_string(p.gop_frames) +
                             ":scenecut=0:open-gop=0:repeat-headers=0:log-level=error";
        if (rung.crf >= 0) params += ":crf=" + std::to_string(rung.crf);
        av_dict_set(&raw, "x265-params", params.c_str(), 0);
        av_dict_set(&raw, "forced-idr", "1", 0);
    } else if (name == "libsvtav1") {
        quiet_svtav1_log();
        av_dict_set(&raw, "preset", svtav1_preset(p.preset).c_str(), 0);
        // intra period = gop_size - 1 (set by libavcodec from gop_size), key frames
        // (irefresh-type 2: closed GOP, shown key frames, never forward key frames),
        // no scene-change key frames. The transcoder's forced I pictures land on the
        // same frames, so each GOP starts with exactly one key frame.
        std::string params = "irefresh-type=2:scd=0";
        av_dict_set(&raw, "svtav1-params", params.c_str(), 0);
        if (rung.crf >= 0) av_dict_set_int(&raw, "crf", rung.crf, 0);
    }
    std::unique_ptr<AVDictionary, DictFreer> opts(raw);
    AVDictionary* o = opts.release();
    int ret = avcodec_open2(enc.get(), codec, &o);
    opts.reset(o);
    if (ret < 0) {
        std::string why = av::recent_errors(name);
        std::string text = "open encoder " + name + " for rung " + rung.id + " (" +
                           std::to_string(p.width) + "x" + std::to_string(p.height) +
                           ") failed: " + av_error_text(ret) + (why.empty() ? "" : " (" + why + ")");
        // An encoder that refuses this rung's size or settings refuses it on every
        // attempt: the job's input (ValueError, no retry). A shortage of memory, or
        // of NVENC sessions on a busy GPU, may pass: those are retried.
        if (ret == AVERROR(ENOMEM) || name.find("nvenc") != std::string::npos) throw Error(text, ret);
        throw InvalidDataError(text, ret);
    }
    if (!enc->extradata || enc->extradata_size <= 0)
        throw Error("encoder " + name + " gave no global header (" +
                    (family == "av1" ? "sequence header" : "parameter sets") + ") for rung " + rung.id);
    return enc;
}

namespace {

// avcodec_send_frame, taking (and dropping) packets while the encoder's input is full.
void send_dropping_output(AVCodecContext* enc, const AVFrame* frame, AVPacket* pkt) {
    for (int tries = 0; tries < 100000; ++tries) {
        if (avcodec_send_frame(enc, frame) != AVERROR(EAGAIN)) return;
        if (avcodec_receive_packet(enc, pkt) >= 0) av_packet_unref(pkt);
    }
}

}  // namespace

void release_video_encoder(av::CodecPtr& enc) noexcept {
    if (!enc) return;
    if (enc->codec && std::string(enc->codec->name) == "libsvtav1") {
        // SVT-AV1 (1.4) blocks for ever in its deinit unless it saw end of stream,
        // and blocks on end of stream if it never got a picture. So a run that stops
        // early (an error elsewhere, a cancel, the usability probe) hands it one
        // black picture and end of stream, and drops what comes out. After a normal
        // flush both sends are no-ops (the encoder is already draining).
        av::FramePtr frame(av_frame_alloc());
        av::PacketPtr pkt(av_packet_alloc());
        if (frame && pkt) {
            frame->width = enc->width;
            frame->height = enc->height;
            frame->format = enc->pix_fmt;
            if (av_frame_get_buffer(frame.get(), 0) >= 0) {
                for (int plane = 0; plane < 3 && frame->data[plane]; ++plane) {
                    const int rows = plane == 0 ? frame->height : (frame->height + 1) / 2;
                    std::memset(frame->data[plane], plane == 0 ? 16 : 128,
                                static_cast<size_t>(frame->linesize[plane]) * static_cast<size_t>(rows));
                }
                frame->pts = 0;
                send_dropping_output(enc.get(), frame.get(), pkt.get());
                send_dropping_output(enc.get(), nullptr, pkt.get());
                while (avcodec_receive_packet(enc.get(), pkt.get()) >= 0) av_packet_unref(pkt.get());
            }
        }
    }
    enc.reset();
}

bool encoder_usable(const std::string& name) {
    static std::mutex mutex;
    static std::map<std::string, bool> cache;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(name);
    if (it != cache.end()) return it->second;
    bool ok = false;
    if (avcodec_find_encoder_by_name(name.c_str()) && (name == "libx264" || name == "h264_nvenc" ||
                                                       name == "libx265" || name == "libsvtav1")) {
        av::install_log_capture();
        av::QuietLogScope quiet;  // "Cannot load libcuda.so.1" is the expected answer on CPU hosts
        RungConfig rung;
        rung.id = "probe";
        rung.encoder = name;
        rung.bitrate = 500000;
        VideoEncoderParams params;
        params.width = 256;
        params.height = 144;
        params.gop_frames = 30;
        try {
            av::CodecPtr enc = open_video_encoder(rung, params);
            release_video_encoder(enc);
            ok = true;
        } catch (const std::exception&) {
            ok = false;
        }
    }
    cache[name] = ok;
    return ok;
}

std::vector<std::string> h264_encoders_available() {
    std::vector<std::string> out;
    for (const char* name : {"libx264", "h264_nvenc"})
        if (encoder_usable(name)) out.emplace_back(name);
    return out;
}

}  // namespace cdlc
