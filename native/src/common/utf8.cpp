#include "common/utf8.h"

namespace cdlc {

size_t invalid_utf8(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        size_t n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : 9;
        if (n == 9 || i + n >= s.size()) return i;
        if (c == 0xC0 || c == 0xC1 || c > 0xF4) return i;
        for (size_t k = 1; k <= n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return i;
        if (n == 2) {
            const unsigned char d = static_cast<unsigned char>(s[i + 1]);
            if ((c == 0xE0 && d < 0xA0) || (c == 0xED && d >= 0xA0)) return i;  // overlong, surrogates
        }
        if (n == 3) {
            const unsigned char d = static_cast<unsigned char>(s[i + 1]);
            if ((c == 0xF0 && d < 0x90) || (c == 0xF4 && d >= 0x90)) return i;
        }
        i += n + 1;
    }
    return std::string::npos;
}

bool valid_utf8(const std::string& s) { return invalid_utf8(s) == std::string::npos; }

}  // namespace cdlc
