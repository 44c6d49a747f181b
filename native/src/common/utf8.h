// UTF-8 well-formedness (RFC 3629): subtitle files must be UTF-8, and stream
// titles become manifest names only when they are.
#pragma once

#include <cstddef>
#include <string>

namespace cdlc {

// Offset of the first byte that is not part of well-formed UTF-8 (RFC 3629 §4),
// or npos.
size_t invalid_utf8(const std::string& s);

// True when `s` is well-formed UTF-8 (RFC 3629).
bool valid_utf8(const std::string& s);

}  // namespace cdlc
