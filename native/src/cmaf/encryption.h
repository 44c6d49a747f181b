// CMAF common encryption (ISO/IEC 23001-7): the sample transform of the 'cenc'
// scheme (AES-128 CTR, §10.1) and of 'cbcs' (AES-128 CBC with a 1:9 pattern on
// video, §10.4), with video samples protected per NAL unit as subsamples (§9.5:
// the length field and NAL header stay clear, non-VCL NAL units stay clear).
// The boxes that signal it (tenc/sinf, pssh, senc/saiz/saio) are in boxes.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/media_types.h"

namespace cdlc {

struct EncryptionConfig {
    std::string scheme;        // "" = clear, "cenc" or "cbcs"
    std::vector<uint8_t> kid;  // 16 bytes, the default_KID of tenc and pssh
    std::vector<uint8_t> key;  // 16 bytes (AES-128)
    // cbcs: the constant IV (16 bytes; empty = derived from the KID). cenc: unused,
    // each sample gets its own 8-byte IV.
    std::vector<uint8_t> iv;
    bool enabled() const { return !scheme.empty(); }
};

// Throws InvalidDataError unless the scheme is known and kid/key (and a given iv)
// are 16 bytes.
void validate_encryption(const EncryptionConfig& config);

// The 16-byte constant IV cbcs uses for this config.
std::vector<uint8_t> cbcs_constant_iv(const EncryptionConfig& config);

struct Subsample {
    uint32_t clear = 0;
    uint32_t protected_bytes = 0;
};

// Per-sample auxiliary information (senc entry, §7.2).
struct SampleCryptoInfo {
    std::vector<uint8_t> iv;              // per-sample IV (cenc: 8 bytes; cbcs: none)
    std::vector<Subsample> subsamples;    // empty: the whole sample is protected
};

// The AES of one track, applied to samples already described by a
// SampleEncryptor. Not thread-safe, but cheap to make (one cipher context, keyed
// once): each thread that encrypts has its own.
class SampleCipher {
public:
    SampleCipher(const EncryptionConfig& config, bool video);
    ~SampleCipher();
    SampleCipher(const SampleCipher&) = delete;
    SampleCipher& operator=(const SampleCipher&) = delete;

    // Encrypts in place the protected bytes `info` names (the whole sample when it
    // names no subsamples).
    void encrypt(uint8_t* data, size_t size, const SampleCryptoInfo& info);

private:
    void cbc_pattern(uint8_t* p, size_t n);

    bool cbcs_ = false;
    bool video_ = false;
    std::vector<uint8_t> constant_iv_;
    struct Aes;
    std::unique_ptr<Aes> aes_;
};

class SampleEncryptor {
public:
    // codec: "h264" / "hevc" (subsamples per NAL unit, 4-byte lengths) or audio.
    SampleEncryptor(const EncryptionConfig& config, TrackKind kind, const std::string& codec);
    ~SampleEncryptor();
    SampleEncryptor(const SampleEncryptor&) = delete;
    SampleEncryptor& operator=(const SampleEncryptor&) = delete;

    // The senc entry of the next sample (cenc: takes the next IV), then the
    // encryption it describes, in place: here, or on another thread by a cipher().
    SampleCryptoInfo describe(const uint8_t* data, size_t size);
    void encrypt(uint8_t* data, size_t size, const SampleCryptoInfo& info) { cipher_->encrypt(data, size, info); }
    std::unique_ptr<SampleCipher> cipher() const;

    // tenc fields of this track.
    uint8_t per_sample_iv_size() const { return cbcs_ ? 0 : 8; }
    uint8_t crypt_byte_block() const { return cbcs_ && video_ ? 1 : 0; }
    uint8_t skip_byte_block() const { return cbcs_ && video_ ? 9 : 0; }
    bool subsamples() const { return video_; }

private:
    std::vector<Subsample> layout(const uint8_t* data, size_t size) const;

    EncryptionConfig config_;
    bool cbcs_ = false;
    bool video_ = false;
    bool hevc_ = false;
    uint64_t counter_ = 0;  // cenc: the next sample's IV (high 8 bytes of the CTR block)
    std::unique_ptr<SampleCipher> cipher_;  // encrypt()'s, in the caller's thread
};

}  // namespace cdlc
