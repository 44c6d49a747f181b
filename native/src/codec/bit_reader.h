// MSB-first bit reader: the primitive under the SPS parsers (ITU-T H.264 §7.2 /
// H.265 §7.2 bit syntax, §9.2 Exp-Golomb codes) and the AV1 sequence header parser.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/error.h"

namespace cdlc {

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
