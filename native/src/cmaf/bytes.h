// Big-endian byte writer and bit reader: the two primitives under the ISO-BMFF
// writer (ISO/IEC 14496-12 §4.2: all box fields are big-endian) and the SPS
// parsers (ITU-T H.264 §7.2 / H.265 §7.2 bit syntax, §9.2 Exp-Golomb codes).
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

// MSB-first bit reader over an RBSP (emulation prevention already removed).
// Reading past the end throws InvalidDataError: parsers run on untrusted input.
class BitReader {
public:
    BitReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

    uint32_t bit() {
        if (pos_ >= size_ * 8) throw InvalidDataError("bitstream truncated while parsing parameter set");
        const uint32_t b = (data_[pos_ >> 3] >> (7 - (pos_ & 7))) & 1u;
        ++pos_;
        return b;
    }
    uint64_t bits(int n) {
        uint64_t v = 0;
        for (int i = 0; i < n; ++i) v = (v << 1) | bit();
        return v;
    }
    void skip(size_t n) {
        if (pos_ + n > size_ * 8) throw InvalidDataError("bitstream truncated while parsing parameter set");
        pos_ += n;
    }
    // ue(v), H.264 §9.1 / H.265 §9.2. Values wider than 32 bits are not valid in any
    // syntax element we read, so they are rejected instead of overflowing.
    uint32_t ue() {
        int zeros = 0;
        while (bit() == 0) {
            if (++zeros > 31) throw InvalidDataError("invalid Exp-Golomb code in parameter set");
        }
        return static_cast<uint32_t>((1ull << zeros) - 1 + bits(zeros));
    }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

}  // namespace cdlc
