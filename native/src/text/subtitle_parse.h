// Readers of subtitle files: WebVTT (W3C WebVTT, "WebVTT file structure" §4) and
// SubRip (SRT). Both are strict enough to refuse files a player would misread and
// say where: InvalidDataError("subs.srt:12: bad timing line '...'"). Cues come back
// sorted by start time. Styling blocks and NOTE/comment blocks of WebVTT are
// dropped; SRT's <b>/<i>/<u> tags are kept (WebVTT has the same ones), <font> dropped.
#pragma once

#include <string>
#include <vector>

#include "common/cue.h"

namespace cdlc {

// `name` is used in error messages only.
std::vector<Cue> parse_webvtt(const std::string& data, const std::string& name);
std::vector<Cue> parse_srt(const std::string& data, const std::string& name);

// By content: a file starting with "WEBVTT" (after an optional BOM) is WebVTT,
// anything else is read as SRT. NotFoundError when the file cannot be opened.
std::vector<Cue> parse_subtitle_file(const std::string& path);

// "00:01:02.500" / "01:02.500" (WebVTT) -> milliseconds; -1 when malformed.
// comma: SRT's "00:01:02,500" form instead.
int64_t parse_timestamp(const std::string& text, bool comma);

// WebVTT timestamp text for milliseconds: "hh:mm:ss.ttt".
std::string format_timestamp(int64_t ms);

}  // namespace cdlc
