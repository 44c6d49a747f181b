// WebVTT and SRT readers (subtitle_parse.h). Lines end in CRLF, LF or CR (WebVTT
// §4.1 allows all three; SRT files in the wild use all of them).
#include "text/subtitle_parse.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/utf8.h"

namespace cdlc {

namespace {

constexpr size_t kMaxCues = 1000000;

std::vector<std::string> split_lines(const std::string& data) {
    std::vector<std::string> lines;
    std::string cur;
    for (size_t i = 0; i < data.size(); ++i) {
        const char c = data[i];
        if (c == '\r' || c == '\n') {
            lines.push_back(std::move(cur));
            cur.clear();
            if (c == '\r' && i + 1 < data.size() && data[i + 1] == '\n') ++i;
        } else {
            cur += c;
        }
    }
    if (!cur.empty()) lines.push_back(std::move(cur));
    return lines;
}

bool blank(const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t'; });
}

std::string trim(const std::string& s) {
    size_t a = 0, b = s.size();
    while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
    return s.substr(a, b - a);
}

[[noreturn]] void fail(const std::string& name, size_t line, const std::string& why) {
    throw InvalidDataError(name + ":" + std::to_string(line) + ": " + why);
}

std::string quoted(const std::string& s) {
    std::string q = s.size() > 60 ? s.substr(0, 60) + "..." : s;
    // Messages stay plain ASCII whatever the file holds.
    for (char& c : q)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
    return "'" + q + "'";
}

size_t line_of(const std::string& s, size_t offset) {
    size_t line = 1;
    for (size_t i = 0; i < offset && i < s.size(); ++i)
        if (s[i] == '\n' || (s[i] == '\r' && (i + 1 >= s.size() || s[i + 1] != '\n'))) ++line;
    return line;
}

// Windows-1252's printable range is mostly Latin-1: SRT files from old tools are
// often in it. Each byte >= 0x80 becomes its Latin-1 code point in UTF-8.
std::string latin1_to_utf8(const std::string& s) {
    std::string out;
    for (char ch : s) {
        const unsigned char c = static_cast<unsigned char>(ch);
        if (c < 0x80) {
            out += ch;
        } else {
            out += static_cast<char>(0xC0 | (c >> 6));
            out += static_cast<char>(0x80 | (c & 0x3F));
        }
    }
    return out;
}

// Digits of s[pos..] (at least min, at most max); -1 when there are fewer than min.
int64_t digits(const std::string& s, size_t& pos, size_t min, size_t max) {
    int64_t v = 0;
    size_t n = 0;
    while (pos < s.size() && n < max && s[pos] >= '0' && s[pos] <= '9') {
        v = v * 10 + (s[pos] - '0');
        ++pos;
        ++n;
    }
    return n >= min ? v : -1;
}

// "start --> end[ settings]": false when the line has no "-->".
struct Timing {
    int64_t start = -1, end = -1;
    std::string settings;
};

bool parse_timing(const std::string& line, bool comma, Timing& t) {
    const size_t arrow = line.find("-->");
    if (arrow == std::string::npos) return false;
    t.start = parse_timestamp(trim(line.substr(0, arrow)), comma);
    std::string rest = trim(line.substr(arrow + 3));
    const size_t space = rest.find_first_of(" \t");
    t.end = parse_timestamp(rest.substr(0, space), comma);
    t.settings = space == std::string::npos ? "" : trim(rest.substr(space));
    return true;
}

void check_timing(const Timing& t, const std::string& line, const std::string& name, size_t n) {
    if (t.start < 0 || t.end < 0) fail(name, n, "bad timing line " + quoted(line));
    if (t.end <= t.start) fail(name, n, "cue ends before it starts " + quoted(line));
}

void sort_cues(std::vector<Cue>& cues) {
    std::stable_sort(cues.begin(), cues.end(), [](const Cue& a, const Cue& b) { return a.start_ms < b.start_ms; });
}

// SRT's HTML-ish markup to WebVTT cue text: <b>, <i>, <u> stay, <font> goes, any
// other '<' and a bare '&' are escaped (WebVTT §4.2.2 cue text).
std::string srt_text_to_vtt(const std::string& in) {
    std::string out;
    for (size_t i = 0; i < in.size(); ++i) {
        const char c = in[i];
        if (c == '<') {
            const size_t close = in.find('>', i);
            if (close != std::string::npos) {
                std::string tag = in.substr(i + 1, close - i - 1);
                for (char& k : tag) k = static_cast<char>(std::tolower(static_cast<unsigned char>(k)));
                if (tag == "b" || tag == "i" || tag == "u" || tag == "/b" || tag == "/i" || tag == "/u") {
                    out += "<" + tag + ">";
                    i = close;
                    continue;
                }
                if (tag.rfind("font", 0) == 0 || tag == "/font") {
                    i = close;
                    continue;
                }
            }
            out += "&lt;";
        } else if (c == '>') {
            out += "&gt;";
        } else if (c == '&') {
            const size_t semi = in.find(';', i);
            const bool entity = semi != std::string::npos && semi - i <= 8 && semi > i + 1;
            out += entity ? "&" : "&amp;";
        } else {
            out += c;
        }
    }
    return out;
}

// WebVTT §4.1: a NOTE / STYLE / REGION block starts with the word alone or
// followed by a space or tab.
bool keyword_line(const std::string& line, const std::string& word) {
    return line.rfind(word, 0) == 0 &&
           (line.size() == word.size() || line[word.size()] == ' ' || line[word.size()] == '\t');
}

}  // namespace

int64_t parse_timestamp(const std::string& s, bool comma) {
    // WebVTT §4.5 timestamp: (hours ":")? minutes ":" seconds "." thousandths,
    // hours >= 2 digits when present. SRT: hours ":" minutes ":" seconds "," ms.
    size_t pos = 0;
    const int64_t a = digits(s, pos, 1, 9);
    if (a < 0 || pos >= s.size() || s[pos] != ':') return -1;
    const size_t a_len = pos;
    ++pos;
    const int64_t b = digits(s, pos, 2, 2);
    if (b < 0 || pos >= s.size()) return -1;
    int64_t h = 0, m = 0, sec = 0;
    if (s[pos] == ':') {
        ++pos;
        sec = digits(s, pos, 2, 2);
        if (sec < 0) return -1;
        h = a;
        m = b;
        if (!comma && a_len < 2) return -1;
    } else {
        if (comma || a_len != 2) return -1;  // SRT always has hours
        m = a;
        sec = b;
    }
    if (m > 59 || sec > 59 || pos >= s.size()) return -1;
    const char sep = s[pos];
    if (!(sep == '.' || (comma && sep == ','))) return -1;
    ++pos;
    const size_t frac_at = pos;
    int64_t ms = digits(s, pos, 1, 3);
    if (ms < 0 || pos != s.size()) return -1;
    if (!comma && pos - frac_at != 3) return -1;
    for (size_t n = pos - frac_at; n < 3; ++n) ms *= 10;  // SRT "1,5" is 500 ms
    return ((h * 60 + m) * 60 + sec) * 1000 + ms;
}


std::string format_timestamp(int64_t ms) {
    if (ms < 0) ms = 0;
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld:%02lld.%03lld", static_cast<long long>(ms / 3600000),
                  static_cast<long long>(ms / 60000 % 60), static_cast<long long>(ms / 1000 % 60),
                  static_cast<long long>(ms % 1000));
    return buf;
}

std::vector<Cue> parse_webvtt(const std::string& raw, const std::string& name) {
    std::string data = raw;
    if (data.rfind("\xEF\xBB\xBF", 0) == 0) data.erase(0, 3);
    if (const size_t nul = data.find('\0'); nul != std::string::npos)
        fail(name, line_of(data, nul), "a NUL byte: not a text file");
    // §4.1: a WebVTT file is UTF-8.
    if (const size_t bad = invalid_utf8(data); bad != std::string::npos)
        fail(name, line_of(data, bad), "not UTF-8 text (WebVTT files are UTF-8)");
    const std::vector<std::string> lines = split_lines(data);
    // §4.1: "WEBVTT" then a space, a tab or the end of the line.
    if (lines.empty() || lines[0].rfind("WEBVTT", 0) != 0 ||
        (lines[0].size() > 6 && lines[0][6] != ' ' && lines[0][6] != '\t'))
        fail(name, 1, "a WebVTT file starts with the line WEBVTT");
    size_t i = 1;
    while (i < lines.size() && !blank(lines[i])) {  // header: no cue may start here
        if (lines[i].find("-->") != std::string::npos) fail(name, i + 1, "cue timing in the file header (blank line missing after WEBVTT)");
        ++i;
    }
    std::vector<Cue> cues;
    while (i < lines.size()) {
        if (blank(lines[i])) {
            ++i;
            continue;
        }
        const size_t block = i;
        const std::string& first = lines[i];
        const bool timing_first = first.find("-->") != std::string::npos;
        if (!timing_first && (keyword_line(first, "NOTE") || keyword_line(first, "STYLE") ||
                              keyword_line(first, "REGION"))) {
            while (i < lines.size() && !blank(lines[i])) ++i;  // comment / style / region block
            continue;
        }
        if (!timing_first) ++i;  // cue identifier
        if (i >= lines.size() || blank(lines[i]))
            fail(name, block + 1, "cue " + quoted(first) + " has no timing line");
        Timing t;
        if (!parse_timing(lines[i], false, t)) fail(name, i + 1, "expected a cue timing line, got " + quoted(lines[i]));
        check_timing(t, lines[i], name, i + 1);
        ++i;
        Cue c;
        c.start_ms = t.start;
        c.end_ms = t.end;
        c.settings = t.settings;
        while (i < lines.size() && !blank(lines[i])) {
            if (lines[i].find("-->") != std::string::npos)
                fail(name, i + 1, "cue text holds '-->' (blank line missing before the next cue?)");
            if (!c.text.empty()) c.text += '\n';
            c.text += lines[i];
            ++i;
        }
        if (cues.size() >= kMaxCues) fail(name, block + 1, "more than a million cues");
        if (!c.text.empty()) cues.push_back(std::move(c));
    }
    sort_cues(cues);
    return cues;
}

std::vector<Cue> parse_srt(const std::string& raw, const std::string& name) {
    std::string data = raw;
    if (data.rfind("\xEF\xBB\xBF", 0) == 0) data.erase(0, 3);
    if (const size_t nul = data.find('\0'); nul != std::string::npos)
        fail(name, line_of(data, nul), "a NUL byte: not a text file");
    if (invalid_utf8(data) != std::string::npos) data = latin1_to_utf8(data);
    const std::vector<std::string> lines = split_lines(data);
    std::vector<Cue> cues;
    size_t i = 0;
    while (i < lines.size()) {
        if (blank(lines[i])) {
            ++i;
            continue;
        }
        const std::string index = trim(lines[i]);
        if (index.find("-->") == std::string::npos) {
            if (index.empty() || !std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; }))
                fail(name, i + 1, "expected a cue number, got " + quoted(lines[i]));
            ++i;
            if (i >= lines.size() || blank(lines[i])) fail(name, i, "cue " + index + " has no timing line");
        }
        Timing t;
        if (!parse_timing(lines[i], true, t)) fail(name, i + 1, "expected a timing line, got " + quoted(lines[i]));
        // SRT's optional "X1:.. X2:.." display rectangle has no WebVTT meaning.
        t.settings.clear();
        check_timing(t, lines[i], name, i + 1);
        const size_t timing_line = i;
        ++i;
        Cue c;
        c.start_ms = t.start;
        c.end_ms = t.end;
        while (i < lines.size() && !blank(lines[i])) {
            if (lines[i].find("-->") != std::string::npos)
                fail(name, i + 1, "timing line inside the text of the cue at line " + std::to_string(timing_line + 1) +
                                      " (blank line missing?)");
            if (!c.text.empty()) c.text += '\n';
            c.text += srt_text_to_vtt(lines[i]);
            ++i;
        }
        if (cues.size() >= kMaxCues) fail(name, timing_line + 1, "more than a million cues");
        if (!c.text.empty()) cues.push_back(std::move(c));
    }
    sort_cues(cues);
    return cues;
}

std::vector<Cue> parse_subtitle_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw NotFoundError("cannot open subtitle file " + path);
    std::ostringstream buf;
    buf << in.rdbuf();
    const std::string data = buf.str();
    if (data.size() > (size_t(64) << 20)) throw InvalidDataError(path + ": subtitle file larger than 64 MiB");
    const size_t bom = data.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;
    if (data.compare(bom, 6, "WEBVTT") == 0) return parse_webvtt(data, path);
    return parse_srt(data, path);
}

}  // namespace cdlc
