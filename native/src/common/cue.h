// Timed text: the neutral model between subtitle readers (sidecar WebVTT/SRT files,
// text streams of masters) and the WebVTT writer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cdlc {

struct Cue {
    int64_t start_ms = 0;   // presentation times, milliseconds on the output timeline
    int64_t end_ms = 0;     // > start_ms
    std::string text;       // cue payload, lines separated by '\n', never a blank line
    std::string settings;   // WebVTT cue settings ("line:0 align:start"), may be empty
};

// A subtitle file that comes beside a master (cdlc ingest --subtitles en=subs.vtt).
struct SidecarText {
    std::string path;
    std::string language;   // any tag normalise_language() knows; "und" when empty
    std::string name;       // manifest NAME; empty = the language's English name
    bool forced = false;    // forced narrative only (HLS FORCED=YES)
    bool sdh = false;       // subtitles for the deaf and hard of hearing
};

// An audio file that comes beside a master (cdlc ingest --audio fr=dub.wav).
struct SidecarAudio {
    std::string path;
    std::string language;
    std::string name;
};

}  // namespace cdlc
