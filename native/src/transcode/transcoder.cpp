#include "transcode/transcoder.h"
#include "common/error.h"
namespace cdlc {
Transcoder::Transcoder(TranscodeConfig config) : config_(std::move(config)) {}
Transcoder::~Transcoder() = default;
PipelineResult Transcoder::run(const ProgressFn&) { throw Error("transcode not implemented"); }
void Transcoder::cancel() { cancelled_ = true; }
}
