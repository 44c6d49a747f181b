// One rung of the ladder on its own thread: swscale to the rung's size and 8-bit
// 4:2:0, encode (H.264, HEVC or AV1), and segment into CMAF. A rung may feed
// others its scaled pictures (scale_from): a rung of the same size encodes them
// as they are, one of half the size scales them down 2:1 instead of from the
// master (a quarter of the pixels to read; 2:1 bicubic of a bicubic 1080->720
// stays within ~60 dB PSNR of 1080->360 directly, where 3:2 steps lose ~0.5 dB
// of encode PSNR, so only those two are chained).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "av/av_util.h"
#include "cmaf/segmenter.h"
#include "transcode/transcoder.h"
#include "transcode/worker.h"

namespace cdlc::transcode {

class RungWorker : public QueueWorker<RungWorker, av::FramePtr> {
public:
    RungWorker(RungConfig rung, RunState& state, const std::string& input);
    ~RungWorker();

    // Opens encoder and segmenter; called by the main thread once the first
    // normalised frame fixes the source size.
    void open(int width, int height, AVRational fps, uint32_t timescale, int gop_frames,
              const TranscodeConfig& cfg, const AVFrame* first, int threads);

    // Takes its pictures from `parent` (its scaled ones) instead of from the
    // pipeline: the parent pushes them and closes this rung's queue. Before start().
    void scale_from(RungWorker& parent);
    bool fed_by_pipeline() const { return parent_ == nullptr; }
    // Whether this rung's pictures are the decoded ones as they are (the 1:1 rung).
    bool passes_through(const AVFrame* f) const;

    int64_t frames_encoded() const { return frames_.load(); }
    const RungConfig& config() const { return rung_; }
    int width() const { return width_; }
    int height() const { return height_; }
    RenditionResult result() const;

private:
    friend class QueueWorker<RungWorker, av::FramePtr>;
    void consume(AVFrame* frame) { encode(frame); }
    void flush() {
        // The rungs fed from this one have had every picture: they flush alongside.
        for (RungWorker* c : children_) c->close();
        encode(nullptr);
    }
    void finish() { segmenter_->finish(); }

    void encode(AVFrame* in);
    AVFrame* free_frame();
    void write_packet(const AVPacket* pkt);

    RungConfig rung_;
    std::string input_;
    std::atomic<int64_t> frames_{0};
    int width_ = 0, height_ = 0;
    AVRational fps_{30, 1};
    uint32_t timescale_ = 90000;
    av::CodecPtr enc_;
    std::string codec_ = "h264";      // the encoder's codec family (encoder_codec)
    bool av1_reduced_still_ = false;  // from the AV1 sequence header
    av::SwsPtr sws_;
    AVColorRange range_ = AVCOL_RANGE_UNSPECIFIED;  // of the pictures swscale makes (open)
    // Scaled pictures, reused once the encoder and the rungs fed from this one
    // have let go of them (at most a queue's worth each).
    std::vector<av::FramePtr> pool_;
    RungWorker* parent_ = nullptr;
    std::vector<RungWorker*> children_;
    av::PacketPtr pkt_;
    std::unique_ptr<CmafSegmenter> segmenter_;
};

// The worker loop is compiled once, with the rung's code (rung_worker.cpp).
extern template class QueueWorker<RungWorker, av::FramePtr>;

}  // namespace cdlc::transcode
