#include "av/streams.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "common/error.h"
#include "common/languages.h"
#include "common/utf8.h"

namespace cdlc {

StreamLabel stream_label(const AVStream* st) {
    StreamLabel l;
    if (const AVDictionaryEntry* e = av_dict_get(st->metadata, "language", nullptr, 0))
        l.language = normalise_language(e->value);
    // A title that is not UTF-8 (old muxers) cannot be a manifest NAME.
    if (const AVDictionaryEntry* e = av_dict_get(st->metadata, "title", nullptr, 0))
        if (valid_utf8(e->value)) l.name = e->value;
    // Handler names of MP4 muxers are not titles ("SoundHandler").
    if (l.name.empty() || l.name == "SoundHandler" || l.name == "SubtitleHandler") l.name = language_name(l.language);
    return l;
}

StreamLabel sidecar_label(const std::string& language, const std::string& name) {
    StreamLabel l;
    l.language = normalise_language(language);
    l.name = name.empty() || !valid_utf8(name) ? language_name(l.language) : name;
    return l;
}

std::string media_kind(AVMediaType type) {
    switch (type) {
        case AVMEDIA_TYPE_VIDEO: return "video";
        case AVMEDIA_TYPE_AUDIO: return "audio";
        case AVMEDIA_TYPE_SUBTITLE: return "subtitle";
        case AVMEDIA_TYPE_ATTACHMENT: return "attachment";
        default: return "data";
    }
}

SkippedStream skipped(const std::string& source, const AVStream* st, const std::string& reason) {
    SkippedStream s;
    s.source = source;
    s.index = st->index;
    s.kind = media_kind(st->codecpar->codec_type);
    if (st->disposition & AV_DISPOSITION_ATTACHED_PIC) s.kind = "attachment";
    const char* n = avcodec_get_name(st->codecpar->codec_id);
    s.codec = n ? n : "unknown";
    s.reason = reason;
    return s;
}

std::string unique_id(const std::string& base, std::set<std::string>& taken) {
    std::string id = base;
    for (int n = 2; taken.count(id); ++n) id = base + "_" + std::to_string(n);
    taken.insert(id);
    return id;
}

std::string audio_id(const StreamLabel& label, int n, std::set<std::string>& taken) {
    return unique_id(label.language == "und" ? "audio_" + std::to_string(n) : "audio_" + label.language, taken);
}

std::string text_id(const StreamLabel& label, bool forced, std::set<std::string>& taken) {
    return unique_id("sub_" + label.language + (forced ? "_forced" : ""), taken);
}

bool is_text_subtitle(AVCodecID id) {
    return id == AV_CODEC_ID_MOV_TEXT || id == AV_CODEC_ID_SUBRIP || id == AV_CODEC_ID_SRT ||
           id == AV_CODEC_ID_WEBVTT || id == AV_CODEC_ID_ASS || id == AV_CODEC_ID_SSA || id == AV_CODEC_ID_TEXT;
}

TrackInfo text_track(const StreamLabel& label, bool forced, bool sdh) {
    TrackInfo t;
    t.kind = TrackKind::Text;
    t.codec = "webvtt";
    t.timescale = 1000;
    t.language = label.language;
    t.name = label.name;
    t.forced = forced;
    t.sdh = sdh;
    return t;
}

namespace {

// The WebVTT spans open at a point of an ASS event, innermost last. Closing one
// closes those inside it and opens them again, so the tags always nest.
class Spans {
public:
    void set(char tag, bool on, std::string& out) {
        const auto at = std::find(open_.begin(), open_.end(), tag);
        if (on == (at != open_.end())) return;
        if (on) {
            open_.push_back(tag);
            out += std::string("<") + tag + ">";
            return;
        }
        const std::vector<char> inner(at + 1, open_.end());
        close_from(static_cast<size_t>(at - open_.begin()), out);
        for (char t : inner) set(t, true, out);
    }
    void close_all(std::string& out) { close_from(0, out); }

private:
    void close_from(size_t first, std::string& out) {
        while (open_.size() > first) {
            out += std::string("</") + open_.back() + ">";
            open_.pop_back();
        }
    }
    std::vector<char> open_;
};

// One override block's tags ("\i1\pos(10,10)\b0"): italic, bold and underline
// switched on or off, \r resets them; the rest (positions, colours, fonts,
// \iclip, \bord, \blur...) has no WebVTT cue-text form and is dropped.
void apply_overrides(const std::string& block, Spans& spans, std::string& out) {
    size_t i = block.find('\\');
    while (i != std::string::npos) {
        const size_t next = block.find('\\', i + 1);
        const std::string tag = block.substr(i + 1, next == std::string::npos ? std::string::npos : next - i - 1);
        i = next;
        if (tag.empty()) continue;
        if (tag[0] == 'r') {
            spans.close_all(out);
            continue;
        }
        const char kind = tag[0];
        const std::string value = tag.substr(1);
        if ((kind != 'i' && kind != 'b' && kind != 'u') ||
            value.find_first_not_of("0123456789") != std::string::npos)
            continue;
        // \b takes a weight too (\b700); \i alone returns to the style's (upright).
        const long v = value.empty() ? 0 : std::strtol(value.c_str(), nullptr, 10);
        spans.set(kind, kind == 'b' ? (v == 1 || v >= 600) : v != 0, out);
    }
}

// Whether a line of cue text shows anything: a character outside its tags that
// is not a space.
bool visible_text(const std::string& line) {
    bool in_tag = false;
    for (char c : line) {
        if (c == '<') in_tag = true;
        else if (c == '>') in_tag = false;
        else if (!in_tag && c != ' ' && c != '\t') return true;
    }
    return false;
}

std::string tags_of(const std::string& line) {
    std::string tags;
    bool in_tag = false;
    for (char c : line) {
        if (c == '<') in_tag = true;
        if (in_tag) tags += c;
        if (c == '>') in_tag = false;
    }
    return tags;
}

}  // namespace

std::string ass_to_text(const std::string& event) {
    size_t pos = 0;
    for (int commas = 0; commas < 8; ++commas) {
        pos = event.find(',', pos);
        if (pos == std::string::npos) return "";
        ++pos;
    }
    std::string out;
    Spans spans;
    for (size_t i = pos; i < event.size(); ++i) {
        const char c = event[i];
        if (c == '{') {
            const size_t close = event.find('}', i);
            if (close == std::string::npos) break;
            apply_overrides(event.substr(i + 1, close - i - 1), spans, out);
            i = close;
        } else if (c == '\\' && i + 1 < event.size() && (event[i + 1] == 'N' || event[i + 1] == 'n')) {
            out += '\n';
            ++i;
        } else if (c == '\\' && i + 1 < event.size() && event[i + 1] == 'h') {
            out += ' ';
            ++i;
        } else if (c == '&') {
            out += "&amp;";
        } else if (c == '<') {
            out += "&lt;";
        } else if (c == '>') {
            out += "&gt;";
        } else if (c != '\r') {
            out += c;
        }
    }
    spans.close_all(out);
    // No blank lines inside a cue (they would end it), none at its ends. A line
    // blank but for tags gives them to the next line with text (the last one's
    // go to the line before): their order, and so their nesting, is kept.
    std::string clean, carried;
    size_t start = 0;
    while (start <= out.size()) {
        size_t nl = out.find('\n', start);
        if (nl == std::string::npos) nl = out.size();
        const std::string line = out.substr(start, nl - start);
        if (visible_text(line)) {
            clean += (clean.empty() ? "" : "\n") + carried + line;
            carried.clear();
        } else {
            carried += tags_of(line);
        }
        start = nl + 1;
    }
    return clean.empty() ? "" : clean + carried;
}

TextStreamReader::TextStreamReader(AVStream* st, int64_t origin, const std::string& input)
    : st_(st), origin_(origin), input_(input) {
    const AVCodec* codec = avcodec_find_decoder(st->codecpar->codec_id);
    if (!codec) throw NotFoundError("no decoder for subtitle codec " + std::string(avcodec_get_name(st->codecpar->codec_id)));
    dec_ = avcodec_alloc_context3(codec);
    if (!dec_) throw Error("out of memory allocating a subtitle decoder");
    check_av(avcodec_parameters_to_context(dec_, st->codecpar), "open subtitle decoder", input);
    dec_->pkt_timebase = st->time_base;
    check_av(avcodec_open2(dec_, codec, nullptr), "open subtitle decoder", input);
}

TextStreamReader::~TextStreamReader() { avcodec_free_context(&dec_); }

void TextStreamReader::packet(const AVPacket* pkt) {
    const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    if (ts == AV_NOPTS_VALUE || pkt->size <= 0) return;
    AVSubtitle sub{};
    int got = 0;
    const int ret = avcodec_decode_subtitle2(dec_, &sub, &got, const_cast<AVPacket*>(pkt));
    if (ret < 0 || !got) return;  // a damaged cue is lost, the stream goes on
    const AVRational ms{1, 1000};
    const int64_t start = av_rescale_q(ts - origin_, st_->time_base, ms) + sub.start_display_time;
    int64_t end = 0;
    if (pkt->duration > 0) end = av_rescale_q(ts - origin_ + pkt->duration, st_->time_base, ms);
    else if (sub.end_display_time > 0 && sub.end_display_time != UINT32_MAX)
        end = av_rescale_q(ts - origin_, st_->time_base, ms) + sub.end_display_time;
    else end = start + 3000;  // no duration anywhere: a reading time
    std::string text;
    for (unsigned i = 0; i < sub.num_rects; ++i) {
        const AVSubtitleRect* r = sub.rects[i];
        std::string part;
        if (r->type == SUBTITLE_ASS && r->ass) part = ass_to_text(r->ass);
        else if (r->type == SUBTITLE_TEXT && r->text) part = ass_to_text(std::string(",,,,,,,,") + r->text);
        if (!part.empty()) text += (text.empty() ? "" : "\n") + part;
    }
    avsubtitle_free(&sub);
    if (text.empty() || end <= start || end <= 0) return;
    Cue c;
    c.start_ms = std::max<int64_t>(0, start);
    c.end_ms = end;
    c.text = std::move(text);
    cues_.push_back(std::move(c));
}

}  // namespace cdlc
