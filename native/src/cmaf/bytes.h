// Big-endian byte writer: the primitive under the ISO-BMFF writer (ISO/IEC
// 14496-12 §4.2: all box fields are big-endian). Its reading twin, BitReader,
// lives with the bitstream parsers (codec/bit_reader.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/error.h"

namespace cdlc {

// Writes into a buffer sized up front (sizes first, then write).
// Writing past the reserved size is a bug in a size() method, not bad input, so it
// throws Error rather than silently reallocating.
class ByteWriter {
public:
    explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}

    void u8(uint32_t v) { put(static_cast<uint8_t>(v)); }
    void u16(uint32_t v) {
        put(static_cast<uint8_t>(v >> 8));
        put(static_cast<uint8_t>(v));
    }
    void u24(uint32_t v) {
        put(static_cast<uint8_t>(v >> 16));
        u16(v & 0xFFFF);
    }
    void u32(uint32_t v) {
        u16(v >> 16);
        u16(v & 0xFFFF);
    }
    void u64(uint64_t v) {
        u32(static_cast<uint32_t>(v >> 32));
        u32(static_cast<uint32_t>(v));
    }
    void fourcc(const char* c) { bytes(reinterpret_cast<const uint8_t*>(c), 4); }
    void zeros(size_t n) { out_.insert(out_.end(), n, 0); }
    void bytes(const uint8_t* p, size_t n) { out_.insert(out_.end(), p, p + n); }
    void bytes(const std::vector<uint8_t>& v) { bytes(v.data(), v.size()); }
    size_t position() const { return out_.size(); }

private:
    void put(uint8_t b) { out_.push_back(b); }
    std::vector<uint8_t>& out_;
};

}  // namespace cdlc
