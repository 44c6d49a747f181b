#include "cmaf/encryption.h"

#include <algorithm>
#include <cstring>
#include <random>

extern "C" {
#include <libavutil/aes.h>
#include <libavutil/aes_ctr.h>
#include <libavutil/mem.h>
}

#include "common/error.h"

namespace cdlc {

struct SampleEncryptor::Aes {
    AVAESCTR* ctr = nullptr;
    AVAES* cbc = nullptr;
    ~Aes() {
        if (ctr) av_aes_ctr_free(ctr);
        av_free(cbc);
    }
};

void validate_encryption(const EncryptionConfig& c) {
    if (!c.enabled()) return;
    if (c.scheme != "cenc" && c.scheme != "cbcs")
        throw InvalidDataError("encryption scheme '" + c.scheme + "' is not supported (cenc, cbcs)");
    if (c.kid.size() != 16) throw InvalidDataError("encryption key id must be 16 bytes");
    if (c.key.size() != 16) throw InvalidDataError("encryption key must be 16 bytes (AES-128)");
    if (!c.iv.empty() && c.iv.size() != 16) throw InvalidDataError("cbcs constant IV must be 16 bytes");
}

std::vector<uint8_t> cbcs_constant_iv(const EncryptionConfig& c) {
    if (!c.iv.empty()) return c.iv;
    // Derived, not random, so every rendition (and every chunk of a long encode)
    // writes the same tenc: the KID with its bits flipped.
    std::vector<uint8_t> iv(c.kid);
    for (uint8_t& b : iv) b = static_cast<uint8_t>(~b);
    return iv;
}

SampleEncryptor::SampleEncryptor(const EncryptionConfig& config, TrackKind kind, const std::string& codec)
    : aes_(std::make_unique<Aes>()) {
    validate_encryption(config);
    if (!config.enabled()) throw Error("SampleEncryptor without a scheme");
    cbcs_ = config.scheme == "cbcs";
    video_ = kind == TrackKind::Video;
    hevc_ = codec == "hevc" || codec == "h265";
    if (cbcs_) {
        constant_iv_ = cbcs_constant_iv(config);
        aes_->cbc = av_aes_alloc();
        if (!aes_->cbc || av_aes_init(aes_->cbc, config.key.data(), 128, 0) < 0)
            throw Error("AES initialisation failed");
    } else {
        aes_->ctr = av_aes_ctr_alloc();
        if (!aes_->ctr || av_aes_ctr_init(aes_->ctr, config.key.data()) < 0)
            throw Error("AES-CTR initialisation failed");
        // A random start, then one IV per sample: IVs never repeat under one key
        // across the renditions that share it (§9.1: unique per sample).
        std::random_device rd;
        counter_ = (uint64_t(rd()) << 32) ^ rd();
    }
}

SampleEncryptor::~SampleEncryptor() = default;

std::vector<Subsample> SampleEncryptor::layout(const uint8_t* d, size_t n) const {
    // NAL units with 4-byte lengths (ISO/IEC 14496-15). A VCL NAL unit keeps its
    // length and header (and, for cenc, enough bytes that the protected part is
    // whole 16-byte blocks) clear; other NAL units are clear entirely.
    std::vector<Subsample> out;
    uint64_t clear = 0;
    size_t pos = 0;
    auto flush_clear = [&](uint32_t protected_bytes) {
        while (clear > 0xFFFF) {  // BytesOfClearData is 16 bits
            out.push_back({0xFFFF, 0});
            clear -= 0xFFFF;
        }
        out.push_back({static_cast<uint32_t>(clear), protected_bytes});
        clear = 0;
    };
    while (pos + 4 <= n) {
        const size_t len = (size_t(d[pos]) << 24) | (size_t(d[pos + 1]) << 16) | (size_t(d[pos + 2]) << 8) | d[pos + 3];
        if (len > n - pos - 4) throw InvalidDataError("NAL unit length runs past the end of the sample");
        const uint8_t* nal = d + pos + 4;
        const bool vcl = len > 0 && (hevc_ ? ((nal[0] >> 1) & 0x3F) < 32 : ((nal[0] & 0x1F) >= 1 && (nal[0] & 0x1F) <= 5));
        const size_t header = hevc_ ? 2 : 1;
        if (vcl && len > header + 16) {
            size_t prot = len - header;
            // A slice header is never shorter than a few bytes; keeping 32 clear
            // leaves it readable, as packagers commonly do.
            size_t keep = std::min<size_t>(prot, 32);
            prot -= keep;
            if (!cbcs_) {
                keep += prot % 16;
                prot -= prot % 16;
            }
            clear += 4 + header + keep;
            if (prot > 0) flush_clear(static_cast<uint32_t>(prot));
        } else {
            clear += 4 + len;
        }
        pos += 4 + len;
    }
    clear += n - pos;
    if (clear > 0 || out.empty()) flush_clear(0);
    return out;
}

void SampleEncryptor::cbc_pattern(uint8_t* p, size_t n) {
    // §10.4.2: the IV restarts at each subsample (constant IV); crypt 1 block, skip
    // 9 (video) or every whole block (audio, no pattern); a trailing partial block
    // stays clear.
    uint8_t iv[16];
    std::memcpy(iv, constant_iv_.data(), 16);
    const size_t blocks = n / 16;
    const size_t period = video_ ? 10 : 1;
    for (size_t b = 0; b < blocks; ++b)
        if (b % period == 0) av_aes_crypt(aes_->cbc, p + 16 * b, p + 16 * b, 1, iv, 0);
}

SampleCryptoInfo SampleEncryptor::encrypt(uint8_t* data, size_t size) {
    SampleCryptoInfo info;
    if (video_) info.subsamples = layout(data, size);
    if (cbcs_) {
        if (!video_) {
            cbc_pattern(data, size);
            return info;
        }
        size_t pos = 0;
        for (const Subsample& s : info.subsamples) {
            pos += s.clear;
            cbc_pattern(data + pos, s.protected_bytes);
            pos += s.protected_bytes;
        }
        return info;
    }
    info.iv.resize(8);
    for (int i = 0; i < 8; ++i) info.iv[i] = static_cast<uint8_t>(counter_ >> (56 - 8 * i));
    ++counter_;
    av_aes_ctr_set_iv(aes_->ctr, info.iv.data());  // counter block = IV || 0 (§10.1)
    if (!video_) {
        av_aes_ctr_crypt(aes_->ctr, data, data, static_cast<int>(size));
        return info;
    }
    // One key stream across the protected parts of the sample (§9.5.2.3).
    size_t pos = 0;
    for (const Subsample& s : info.subsamples) {
        pos += s.clear;
        if (s.protected_bytes) av_aes_ctr_crypt(aes_->ctr, data + pos, data + pos, static_cast<int>(s.protected_bytes));
        pos += s.protected_bytes;
    }
    return info;
}

}  // namespace cdlc
