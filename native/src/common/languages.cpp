// A small table of the languages a catalogue carries: ISO 639-2/T, 639-2/B where
// it differs, ISO 639-1, English name (ISO 639-2 registration authority's list).
#include "common/languages.h"

#include <algorithm>
#include <cctype>

namespace cdlc {

namespace {

struct Language {
    const char* t;     // ISO 639-2/T
    const char* b;     // ISO 639-2/B ("" when the same)
    const char* one;   // ISO 639-1 ("" when none)
    const char* name;  // English
};

const Language kLanguages[] = {
    {"ara", "", "ar", "Arabic"},       {"bul", "", "bg", "Bulgarian"},   {"cat", "", "ca", "Catalan"},
    {"ces", "cze", "cs", "Czech"},     {"cym", "wel", "cy", "Welsh"},    {"dan", "", "da", "Danish"},
    {"deu", "ger", "de", "German"},    {"ell", "gre", "el", "Greek"},    {"eng", "", "en", "English"},
    {"est", "", "et", "Estonian"},     {"eus", "baq", "eu", "Basque"},   {"fas", "per", "fa", "Persian"},
    {"fin", "", "fi", "Finnish"},      {"fra", "fre", "fr", "French"},   {"gle", "", "ga", "Irish"},
    {"glg", "", "gl", "Galician"},     {"heb", "", "he", "Hebrew"},      {"hin", "", "hi", "Hindi"},
    {"hrv", "", "hr", "Croatian"},     {"hun", "", "hu", "Hungarian"},   {"hye", "arm", "hy", "Armenian"},
    {"ind", "", "id", "Indonesian"},   {"isl", "ice", "is", "Icelandic"}, {"ita", "", "it", "Italian"},
    {"jpn", "", "ja", "Japanese"},     {"kat", "geo", "ka", "Georgian"}, {"kor", "", "ko", "Korean"},
    {"lav", "", "lv", "Latvian"},      {"lit", "", "lt", "Lithuanian"},  {"mkd", "mac", "mk", "Macedonian"},
    {"msa", "may", "ms", "Malay"},     {"nld", "dut", "nl", "Dutch"},    {"nor", "", "no", "Norwegian"},
    {"nob", "", "nb", "Norwegian Bokmål"}, {"pol", "", "pl", "Polish"}, {"por", "", "pt", "Portuguese"},
    {"ron", "rum", "ro", "Romanian"},  {"rus", "", "ru", "Russian"},    {"slk", "slo", "sk", "Slovak"},
    {"slv", "", "sl", "Slovenian"},    {"spa", "", "es", "Spanish"},     {"sqi", "alb", "sq", "Albanian"},
    {"srp", "", "sr", "Serbian"},      {"swe", "", "sv", "Swedish"},     {"tam", "", "ta", "Tamil"},
    {"tha", "", "th", "Thai"},         {"tur", "", "tr", "Turkish"},     {"ukr", "", "uk", "Ukrainian"},
    {"urd", "", "ur", "Urdu"},         {"vie", "", "vi", "Vietnamese"},  {"zho", "chi", "zh", "Chinese"},
    {"zxx", "", "", "No linguistic content"}, {"mul", "", "", "Multiple languages"},
};

}  // namespace

std::string normalise_language(const std::string& tag) {
    std::string primary;
    for (char c : tag) {
        if (c == '-' || c == '_') break;
        primary += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (primary.empty() || !std::all_of(primary.begin(), primary.end(), [](char c) { return c >= 'a' && c <= 'z'; }))
        return "und";
    for (const Language& l : kLanguages)
        if (primary == l.t || primary == l.b || primary == l.one) return l.t;
    return primary.size() == 3 ? primary : "und";
}

std::string language_name(const std::string& code) {
    if (code == "und" || code.empty()) return "Unknown";
    for (const Language& l : kLanguages)
        if (code == l.t) return l.name;
    return code;
}

}  // namespace cdlc
