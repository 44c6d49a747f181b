#include "cmaf/encryption.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "common/error.h"

namespace cdlc {

namespace {

// OpenSSL's queued reason, or what was attempted when it queued none.
[[noreturn]] void throw_openssl(const char* operation) {
    const unsigned long code = ERR_get_error();
    ERR_clear_error();
    std::string message = std::string("AES ") + operation + " failed";
    if (code != 0) {
        char reason[256];
        ERR_error_string_n(code, reason, sizeof reason);
        message += ": ";
        message += reason;
    }
    throw Error(message);
}

}  // namespace

// One EVP context per cipher, keyed once: a new IV re-initialises it without
// the cipher and key, which keeps the key schedule (EVP_EncryptInit_ex).
struct SampleCipher::Aes {
    EVP_CIPHER_CTX* ctx = nullptr;
    std::vector<uint8_t> pattern;  // cbcs: a subsample's encrypted blocks, contiguous

    Aes(const EVP_CIPHER* cipher, const uint8_t* key) : ctx(EVP_CIPHER_CTX_new()) {
        if (!ctx) throw_openssl("context allocation");
        if (EVP_EncryptInit_ex(ctx, cipher, nullptr, key, nullptr) != 1) {
            EVP_CIPHER_CTX_free(ctx);
            throw_openssl("key setup");
        }
        // cbcs encrypts whole blocks only; CTR has no padding to turn off.
        EVP_CIPHER_CTX_set_padding(ctx, 0);
    }
    ~Aes() { EVP_CIPHER_CTX_free(ctx); }
    Aes(const Aes&) = delete;
    Aes& operator=(const Aes&) = delete;

    void restart(const uint8_t* iv) {
        if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv) != 1) throw_openssl("IV setup");
    }

    // In place; continues the chain (CBC) or the key stream (CTR) of the last restart.
    void crypt(uint8_t* p, size_t n) {
        // EVP lengths are int: a sample beyond 1 GiB goes in slices of whole blocks.
        constexpr size_t slice = size_t(1) << 30;
        while (n > 0) {
            const size_t len = std::min(n, slice);
            int out = 0;
            if (EVP_EncryptUpdate(ctx, p, &out, p, static_cast<int>(len)) != 1) throw_openssl("encryption");
            if (static_cast<size_t>(out) != len) throw Error("AES encryption returned a short block");
            p += len;
            n -= len;
        }
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

SampleCipher::SampleCipher(const EncryptionConfig& config, bool video)
    : cbcs_(config.scheme == "cbcs"), video_(video) {
    validate_encryption(config);
    if (!config.enabled()) throw Error("SampleCipher without a scheme");
    if (cbcs_) constant_iv_ = cbcs_constant_iv(config);
    aes_ = std::make_unique<Aes>(cbcs_ ? EVP_aes_128_cbc() : EVP_aes_128_ctr(), config.key.data());
}

SampleCipher::~SampleCipher() = default;

SampleEncryptor::SampleEncryptor(const EncryptionConfig& config, TrackKind kind, const std::string& codec)
    : config_(config) {
    validate_encryption(config);
    if (!config.enabled()) throw Error("SampleEncryptor without a scheme");
    cbcs_ = config.scheme == "cbcs";
    video_ = kind == TrackKind::Video;
    hevc_ = codec == "hevc" || codec == "h265";
    cipher_ = cipher();
    if (!cbcs_) {
        // A random start, then one IV per sample: IVs never repeat under one key
        // across the renditions that share it (§9.1: unique per sample).
        std::random_device rd;
        counter_ = (uint64_t(rd()) << 32) ^ rd();
    }
}

SampleEncryptor::~SampleEncryptor() = default;

std::unique_ptr<SampleCipher> SampleEncryptor::cipher() const {
    return std::make_unique<SampleCipher>(config_, video_);
}

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

void SampleCipher::cbc_pattern(uint8_t* p, size_t n) {
    // §10.4.2: the IV restarts at each subsample (constant IV); crypt 1 block, skip
    // 9 (video) or every whole block (audio, no pattern); a trailing partial block
    // stays clear. The CBC chain runs through the encrypted blocks only, so they
    // are gathered, encrypted in one call and scattered back.
    const size_t blocks = n / 16;
    if (blocks == 0) return;
    aes_->restart(constant_iv_.data());
    if (!video_) {
        aes_->crypt(p, 16 * blocks);
        return;
    }
    constexpr size_t period = 10;
    const size_t crypted = (blocks + period - 1) / period;
    // Grown only: resizing down and up again would zero it each time.
    std::vector<uint8_t>& buf = aes_->pattern;
    if (buf.size() < 16 * crypted) buf.resize(16 * crypted);
    uint8_t* g = buf.data();
    for (size_t i = 0; i < crypted; ++i) std::memcpy(g + 16 * i, p + 16 * period * i, 16);
    aes_->crypt(g, 16 * crypted);
    for (size_t i = 0; i < crypted; ++i) std::memcpy(p + 16 * period * i, g + 16 * i, 16);
}

SampleCryptoInfo SampleEncryptor::describe(const uint8_t* data, size_t size) {
    SampleCryptoInfo info;
    if (video_) info.subsamples = layout(data, size);
    if (!cbcs_) {
        info.iv.resize(8);
        for (int i = 0; i < 8; ++i) info.iv[i] = static_cast<uint8_t>(counter_ >> (56 - 8 * i));
        ++counter_;
    }
    return info;
}

void SampleCipher::encrypt(uint8_t* data, size_t size, const SampleCryptoInfo& info) {
    uint64_t described = 0;
    for (const Subsample& s : info.subsamples) described += uint64_t(s.clear) + s.protected_bytes;
    if (described > size) throw Error("subsamples run past the end of the sample");
    if (cbcs_) {
        if (info.subsamples.empty()) {
            cbc_pattern(data, size);
            return;
        }
        size_t pos = 0;
        for (const Subsample& s : info.subsamples) {
            pos += s.clear;
            cbc_pattern(data + pos, s.protected_bytes);
            pos += s.protected_bytes;
        }
        return;
    }
    if (info.iv.size() != 8) throw Error("cenc sample without its 8-byte IV");
    uint8_t block[16] = {};  // counter block = IV || 0 (§10.1)
    std::memcpy(block, info.iv.data(), 8);
    aes_->restart(block);
    if (info.subsamples.empty()) {
        aes_->crypt(data, size);
        return;
    }
    // One key stream across the protected parts of the sample (§9.5.2.3).
    size_t pos = 0;
    for (const Subsample& s : info.subsamples) {
        pos += s.clear;
        aes_->crypt(data + pos, s.protected_bytes);
        pos += s.protected_bytes;
    }
}

}  // namespace cdlc
