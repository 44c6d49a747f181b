// One-pass ABR transcoder (see transcoder.h). Stages and threads:
//
//   main thread:  demux ─► video decode ─► normalise (libavfilter: deinterlace,
//                 CFR via fps, rotation) ─► one reference-counted AVFrame ─┬─► rung queue ×N
//                 audio packets ─► audio queue                             │
//   rung thread ×N: swscale to the rung's size/8-bit 4:2:0 ─► H.264 encode ─► CmafSegmenter
//                 (a rung of the same size as another, or half its size, takes that
//                 rung's scaled pictures through its queue instead: rung_worker.h)
//   audio thread: decode ─► swresample (48 kHz stereo) ─► AAC encode ─► CmafSegmenter
//
// Queues are bounded, so memory stays flat and the demuxer runs at the pace of the
// slowest rung. Every loop and every queue wait checks the stop flag, which both
// cancel() and the first failure of any stage set; the first failure is rethrown.
//
// A span (span_start/span_end, a chunk of a longer encode) changes only the ends:
// the demuxer seeks to the keyframe at or before its start, the normalised frames
// before it and from its end on are dropped in emit(), and the segmenters number
// from the span's first segment; the frame grid, keyframes and timestamps are
// the one-piece run's because time zero stays the master's first picture.
//
// Where each stage lives: pipeline.h (the main thread's Pipeline; its jobs in
// pipeline.cpp, inputs.cpp, span.cpp, decode.cpp and normalise.cpp), rung_worker
// (scale + encode), audio_worker (decode + resample + encode), worker.h (the thread
// and bounded queue both workers are built on), timeline (output rate, timescale,
// segment numbering).
#include "transcode/transcoder.h"

#include "av/av_log.h"
#include "common/error.h"
#include "transcode/pipeline.h"

namespace cdlc {

using transcode::Pipeline;

Transcoder::Transcoder(TranscodeConfig config) : config_(std::move(config)) {}
Transcoder::~Transcoder() = default;

PipelineResult Transcoder::run(const ProgressFn& progress) {
    av::install_log_capture();
    if (cancelled_) throw CancelledError("transcode of " + config_.input + " cancelled");
    Pipeline pipeline(config_, cancelled_, progress);
    return pipeline.run();
}

void Transcoder::cancel() { cancelled_ = true; }

}  // namespace cdlc
