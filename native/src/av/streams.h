// FFmpeg glue shared by the transcode and copy paths for the streams beside the
// main video: labels (language, name) of audio and text streams, the text-stream
// reader that turns a master's subtitle packets into cues, and the record of what
// is skipped (nothing is dropped silently).
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
}

#include "common/cue.h"
#include "common/media_types.h"

namespace cdlc {

struct StreamLabel {
    std::string language = "und";  // ISO 639-2/T
    std::string name;              // title tag, else the language's English name
};

// From the stream's "language" and "title" tags.
StreamLabel stream_label(const AVStream* st);
// From a sidecar's given language and name (name empty: the language's name).
StreamLabel sidecar_label(const std::string& language, const std::string& name);

// "video", "audio", "subtitle", "data", "attachment".
std::string media_kind(AVMediaType type);

SkippedStream skipped(const std::string& source, const AVStream* st, const std::string& reason);

// `base` itself when free, else base_2, base_3, ...; the id is added to `taken`.
std::string unique_id(const std::string& base, std::set<std::string>& taken);

// Rendition id of an extra audio stream: "audio_<lang>" ("audio_<n>" for und).
std::string audio_id(const StreamLabel& label, int n, std::set<std::string>& taken);
// Rendition id of a text stream: "sub_<lang>" (+ "_forced").
std::string text_id(const StreamLabel& label, bool forced, std::set<std::string>& taken);

// Text subtitle codecs we turn into WebVTT (mov_text, subrip, webvtt, ass/ssa, text).
bool is_text_subtitle(AVCodecID id);

// TrackInfo of a WebVTT rendition.
TrackInfo text_track(const StreamLabel& label, bool forced, bool sdh);

// Decodes a master's text subtitle stream into cues on the output timeline
// (origin: the stream time that becomes 0). ASS styling is dropped: plain text.
class TextStreamReader {
public:
    TextStreamReader(AVStream* st, int64_t origin, const std::string& input);
    ~TextStreamReader();
    TextStreamReader(const TextStreamReader&) = delete;
    TextStreamReader& operator=(const TextStreamReader&) = delete;

    void packet(const AVPacket* pkt);
    AVStream* stream() const { return st_; }
    std::vector<Cue>& cues() { return cues_; }

private:
    AVStream* st_;
    int64_t origin_;
    std::string input_;
    AVCodecContext* dec_ = nullptr;
    std::vector<Cue> cues_;
};

// The Text part of an ASS dialogue event ("ReadOrder,Layer,Style,Name,MarginL,
// MarginR,MarginV,Effect,Text") as WebVTT cue text: italic, bold and underline
// overrides (\i1 \i0, \b1 \b0, \u1 \u0, \r) as <i>, <b>, <u> spans, every other
// override dropped, \N as a line break, the rest escaped.
std::string ass_to_text(const std::string& event);

}  // namespace cdlc
