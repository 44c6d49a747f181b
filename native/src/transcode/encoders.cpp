#include "transcode/encoders.h"
#include "transcode/video_encoder.h"

#include <map>
#include <mutex>

#include "common/error.h"
#include "transcode/av_log.h"

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

}  // namespace

av::CodecPtr open_video_encoder(const RungConfig& rung, const VideoEncoderParams& p) {
    const std::string name = rung.encoder.empty() ? "libx264" : rung.encoder;
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
    enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;  // SPS/PPS in extradata -> avcC (ISO/IEC 14496-15 §5.3.3)
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
    }
    std::unique_ptr<AVDictionary, DictFreer> opts(raw);
    AVDictionary* o = opts.release();
    int ret = avcodec_open2(enc.get(), codec, &o);
    opts.reset(o);
    if (ret < 0) {
        std::string why = av::recent_errors(name);
        throw Error("open encoder " + name + " for rung " + rung.id + " (" +
                        std::to_string(p.width) + "x" + std::to_string(p.height) +
                        ") failed: " + av_error_text(ret) + (why.empty() ? "" : " (" + why + ")"),
                    ret);
    }
    if (!enc->extradata || enc->extradata_size <= 0)
        throw Error("encoder " + name + " gave no global header (SPS/PPS) for rung " + rung.id);
    return enc;
}

bool encoder_usable(const std::string& name) {
    static std::mutex mutex;
    static std::map<std::string, bool> cache;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(name);
    if (it != cache.end()) return it->second;
    bool ok = false;
    if (avcodec_find_encoder_by_name(name.c_str())) {
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
