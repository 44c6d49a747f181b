#include "transcode/pictures.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"

namespace cdlc {

namespace {

int even(double v) { return std::max(2, static_cast<int>(std::lround(v / 2.0)) * 2); }

// (width, height) with the long side `long_side` and the display aspect ratio `dar`.
std::pair<int, int> fit(double dar, int long_side) {
    if (dar >= 1.0) return {even(long_side), even(long_side / dar)};
    return {even(long_side * dar), even(long_side)};
}

}  // namespace

double picture_score(const Picture& p) {
    const size_t n = static_cast<size_t>(p.width) * static_cast<size_t>(p.height);
    if (n == 0 || p.rgb.size() < n * 3) return 0.0;
    double sum = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const uint8_t* px = &p.rgb[3 * i];
        const double y = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
        sum += y;
        sq += y * y;
    }
    const double mean = sum / static_cast<double>(n);
    const double spread = std::sqrt(std::max(0.0, sq / static_cast<double>(n) - mean * mean));
    const double dark = std::clamp((mean - 16.0) / 48.0, 0.0, 1.0);
    const double bright = std::clamp((240.0 - mean) / 48.0, 0.0, 1.0);
    return spread * dark * bright;
}

Picture PictureTap::scale(const AVFrame* f, av::SwsPtr& sws, int w, int h) const {
    const auto fmt = static_cast<AVPixelFormat>(f->format);
    sws.reset(sws_getCachedContext(sws.release(), f->width, f->height, fmt, w, h, AV_PIX_FMT_RGB24,
                                   SWS_BICUBIC, nullptr, nullptr, nullptr));
    if (!sws) throw Error("swscale cannot make a thumbnail of this picture format");
    // The picture's own matrix and range (BT.709 HD, full-range JPEG sources), so
    // colours match what players show.
    const int matrix = f->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709
                       : f->colorspace == AVCOL_SPC_BT2020_NCL || f->colorspace == AVCOL_SPC_BT2020_CL
                           ? SWS_CS_BT2020
                           : SWS_CS_DEFAULT;
    const int full = f->color_range == AVCOL_RANGE_JPEG || fmt == AV_PIX_FMT_YUVJ420P ||
                     fmt == AV_PIX_FMT_YUVJ422P || fmt == AV_PIX_FMT_YUVJ444P;
    sws_setColorspaceDetails(sws.get(), sws_getCoefficients(matrix), full, sws_getCoefficients(SWS_CS_DEFAULT),
                             1, 0, 1 << 16, 1 << 16);
    // swscale's SIMD paths store whole vectors: a row of w * 3 bytes may be
    // written past its end. Scale into rows padded to 64 bytes (and a spare row),
    // then pack them.
    const size_t row = static_cast<size_t>(w) * 3;
    const size_t padded = (row + 63) / 64 * 64;
    std::vector<uint8_t> scratch(padded * (static_cast<size_t>(h) + 1));
    uint8_t* dst[4] = {scratch.data(), nullptr, nullptr, nullptr};
    int stride[4] = {static_cast<int>(padded), 0, 0, 0};
    if (sws_scale(sws.get(), f->data, f->linesize, 0, f->height, dst, stride) != h)
        throw Error("swscale made a short thumbnail");
    Picture p;
    p.width = w;
    p.height = h;
    p.rgb.resize(row * static_cast<size_t>(h));
    for (int y = 0; y < h; ++y)
        std::memcpy(p.rgb.data() + row * static_cast<size_t>(y), scratch.data() + padded * static_cast<size_t>(y), row);
    return p;
}

void PictureTap::offer(const AVFrame* f, AVRational sar, double t) {
    if (cfg_.interval <= 0.0 || f->hw_frames_ctx) return;
    if (!started_) {
        // A span starts mid-title: its first mark is the first at or after it, on
        // the same grid as the one-piece run's.
        next_ = std::ceil(t / cfg_.interval - 1e-6) * cfg_.interval;
        started_ = true;
    }
    if (t + 1e-6 < next_) return;
    next_ = (std::floor(t / cfg_.interval + 1e-6) + 1.0) * cfg_.interval;
    if (sar.num <= 0 || sar.den <= 0) sar = AVRational{1, 1};
    const double dar = static_cast<double>(f->width) * sar.num / sar.den / f->height;
    const auto [tw, th] = fit(dar, cfg_.thumbnail_long);
    Picture thumb = scale(f, thumb_sws_, tw, th);
    thumb.time = t;
    thumb.score = picture_score(thumb);
    if (cfg_.poster_long > 0 && (poster_.rgb.empty() || thumb.score > poster_.score)) {
        const int source_long = std::max(static_cast<int>(std::lround(f->height * dar)), f->height);
        const auto [pw, ph] = fit(dar, std::min(cfg_.poster_long, source_long));
        poster_ = scale(f, poster_sws_, pw, ph);
        poster_.time = t;
        poster_.score = thumb.score;
    }
    thumbs_.push_back(std::move(thumb));
}

}  // namespace cdlc
