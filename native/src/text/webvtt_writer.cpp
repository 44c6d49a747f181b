#include "text/webvtt_writer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "text/subtitle_parse.h"

namespace cdlc {

namespace {

void write_text(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw IOError("writing " + path + " failed");
}

}  // namespace

std::string webvtt_cue(const Cue& c) {
    std::string s = format_timestamp(c.start_ms) + " --> " + format_timestamp(c.end_ms);
    if (!c.settings.empty()) s += " " + c.settings;
    return s + "\n" + c.text + "\n\n";
}

RenditionResult write_webvtt_rendition(const std::string& id, const TrackInfo& track, const std::vector<Cue>& cues,
                                       const std::string& dir, double segment_seconds, double total_seconds) {
    if (!(segment_seconds > 0)) throw InvalidDataError("segment_seconds must be positive");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw IOError("create directory " + dir + " failed: " + ec.message());
    const int64_t seg = std::max<int64_t>(1, std::llround(segment_seconds * 1000));
    const int64_t total = std::max<int64_t>(1, std::llround(total_seconds * 1000));
    std::vector<Cue> kept;
    for (const Cue& c : cues) {
        if (c.start_ms >= total) continue;
        Cue k = c;
        k.end_ms = std::min(k.end_ms, total);
        kept.push_back(std::move(k));
    }
    RenditionResult r;
    r.id = id;
    r.track = track;
    std::string whole = "WEBVTT\n\n";
    for (const Cue& c : kept) whole += webvtt_cue(c);
    write_text(dir + "/subtitles.vtt", whole);
    const int64_t count = (total + seg - 1) / seg;
    for (int64_t k = 0; k < count; ++k) {
        const int64_t from = k * seg, to = std::min(total, from + seg);
        std::string text = "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n";
        for (const Cue& c : kept)
            if (c.start_ms < to && c.end_ms > from) text += webvtt_cue(c);
        SegmentRecord rec;
        rec.number = static_cast<int>(k + 1);
        rec.start = from;
        rec.duration = to - from;
        rec.size = text.size();
        write_text(dir + "/" + std::to_string(rec.number) + ".vtt", text);
        r.segments.push_back(rec);
    }
    return r;
}

}  // namespace cdlc
