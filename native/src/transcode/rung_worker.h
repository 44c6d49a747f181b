// One rung of the ladder on its own thread: swscale to the rung's size and 8-bit
// 4:2:0, encode (H.264, HEVC or AV1), and segment into CMAF.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

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

    int64_t frames_encoded() const { return frames_.load(); }
    const RungConfig& config() const { return rung_; }
    int width() const { return width_; }
    int height() const { return height_; }
    RenditionResult result() const;

private:
    friend class QueueWorker<RungWorker, av::FramePtr>;
    void consume(AVFrame* frame) { encode(frame); }
    void flush() { encode(nullptr); }
    void finish() { segmenter_->finish(); }

    void encode(AVFrame* in);
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
    av::FramePtr scaled_;
    av::PacketPtr pkt_;
    std::unique_ptr<CmafSegmenter> segmenter_;
};

// The worker loop is compiled once, with the rung's code (rung_worker.cpp).
extern template class QueueWorker<RungWorker, av::FramePtr>;

}  // namespace cdlc::transcode
