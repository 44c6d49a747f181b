// WebVTT output of a text rendition: segmented for HLS, whole for DASH.
#pragma once

#include <string>
#include <vector>

#include "common/cue.h"
#include "common/media_types.h"

namespace cdlc {

// Writes dir/<n>.vtt for n = 1.. (one per segment_seconds of the presentation,
// the last one ending at total_seconds; a segment holds every cue that overlaps
// it, so a cue across a boundary is in both, as RFC 8216 §3.5 expects), each
// starting with X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000 (our media timeline
// starts at 0, so cue times are presentation times), and dir/subtitles.vtt with
// every cue (the DASH sidecar file). Cues starting at or after total_seconds are
// not written; those ending after it are cut there. `track` must be a Text track
// (codec "webvtt", timescale 1000). Throws IOError when writing fails.
RenditionResult write_webvtt_rendition(const std::string& id, const TrackInfo& track, const std::vector<Cue>& cues,
                                       const std::string& dir, double segment_seconds, double total_seconds);

// The cue block text ("start --> end settings\ntext\n\n").
std::string webvtt_cue(const Cue& cue);

}  // namespace cdlc
