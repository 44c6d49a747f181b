// One audio rendition on its own thread: decode, resample to the output rate and
// layout (downmixing any layout), AAC encode, segment into CMAF. A span's audio
// starts one frame plus the encoder's priming early and keeps only the packets
// inside the span.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

extern "C" {
#include <libavutil/audio_fifo.h>
}

#include "av/av_util.h"
#include "av/streams.h"
#include "cmaf/segmenter.h"
#include "transcode/transcoder.h"
#include "transcode/worker.h"

namespace cdlc::transcode {

class AudioWorker : public QueueWorker<AudioWorker, av::PacketPtr> {
public:
    // st: the stream (of the master or of a sidecar file `input`); origin: its time
    // that becomes the output's time zero; id: the rendition id.
    AudioWorker(const AVStream* st, const TranscodeConfig& cfg, RunState& state, int64_t origin, std::string id,
                const StreamLabel& label, std::string input);
    ~AudioWorker();

    const AVStream* stream() const { return st_; }
    // Length of the rendition as written (its segments), seconds.
    double seconds() const;
    RenditionResult result() const;

private:
    friend class QueueWorker<AudioWorker, av::PacketPtr>;
    void consume(AVPacket* pkt) { decode(pkt); }
    void flush() {
        decode(nullptr);
        if (swr_) resample(nullptr);
        drain_fifo(true);
        encode(nullptr);
    }
    void finish() { segmenter_->finish(); }

    [[noreturn]] void corrupt(int ret);
    void decode(AVPacket* pkt);
    void open_resampler(const AVFrame* f);
    void resample(const AVFrame* f);
    void drain_fifo(bool final);
    void encode(const AVFrame* f);

    const AVStream* st_;
    const TranscodeConfig& cfg_;
    int64_t origin_;
    std::string id_;
    std::string input_;
    av::CodecPtr dec_, enc_;
    av::SwrPtr swr_;
    AVAudioFifo* fifo_ = nullptr;
    av::FramePtr frame_, conv_;
    av::PacketPtr pkt_;
    std::unique_ptr<CmafSegmenter> segmenter_;
    int64_t next_pts_ = 0;
    int64_t skip_ = 0;  // output samples before the video's first picture, to drop
    int64_t base_ = 0;       // time of the first encoded sample, output samples (span pre-roll)
    int64_t keep_from_ = 0;  // packets before this track time are not written
    int64_t keep_until_ = 0; // nor those at or after it (0: no end)
    int64_t samples_in_ = 0;
    int64_t decoded_ = 0;
};

// The worker loop is compiled once, with the audio code (audio_worker.cpp).
extern template class QueueWorker<AudioWorker, av::PacketPtr>;

}  // namespace cdlc::transcode
