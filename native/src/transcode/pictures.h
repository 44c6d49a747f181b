// Stills from the decode the transcode already does: storyboard thumbnails at a
// fixed interval and a poster, so previews cost a small scale per interval instead
// of a second decode of the master.
#pragma once

#include <vector>

#include "av/av_util.h"
#include "common/media_types.h"

namespace cdlc {

struct PictureConfig {
    double interval = 0.0;   // seconds between thumbnails; 0 = none
    int thumbnail_long = 160;  // long side of a thumbnail, pixels
    int poster_long = 1280;    // long side of the poster (never above the source's)
};

class PictureTap {
public:
    explicit PictureTap(PictureConfig config) : cfg_(config) {}

    // One normalised frame (upright, constant rate) at output time `t` seconds,
    // whose pixels have aspect ratio `sar`. Takes a thumbnail when `t` reaches the
    // next interval mark; keeps the best-scored one so far as the poster.
    void offer(const AVFrame* f, AVRational sar, double t);

    std::vector<Picture> take_thumbnails() { return std::move(thumbs_); }
    Picture take_poster() { return std::move(poster_); }

private:
    Picture scale(const AVFrame* f, av::SwsPtr& sws, int w, int h) const;

    PictureConfig cfg_;
    double next_ = 0.0;
    bool started_ = false;
    av::SwsPtr thumb_sws_, poster_sws_;
    std::vector<Picture> thumbs_;
    Picture poster_;
};

// The picture's luma spread (standard deviation of BT.601 luma, 0..~128), damped
// for frames that are nearly black or nearly white: a fade or a title card on black
// scores low, a lit scene high.
double picture_score(const Picture& p);

}  // namespace cdlc
