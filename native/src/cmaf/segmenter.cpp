#include "cmaf/segmenter.h"
#include "common/error.h"
namespace cdlc {
struct CmafSegmenter::Impl { TrackInfo track; std::vector<SegmentRecord> segments; };
CmafSegmenter::CmafSegmenter(TrackInfo track, std::string, double) : impl_(new Impl{std::move(track), {}}) {}
CmafSegmenter::~CmafSegmenter() { delete impl_; }
void CmafSegmenter::write(const EncodedPacket&) { throw Error("segmenter not implemented"); }
void CmafSegmenter::finish() {}
const TrackInfo& CmafSegmenter::track() const { return impl_->track; }
const std::vector<SegmentRecord>& CmafSegmenter::segments() const { return impl_->segments; }
void CmafSegmenter::set_track(const TrackInfo& track) { impl_->track = track; }
}
