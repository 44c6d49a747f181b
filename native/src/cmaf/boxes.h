// ISO-BMFF boxes of a CMAF track (ISO/IEC 14496-12, ISO/IEC 23000-19): one box,
// one struct. Each struct knows its size() and write()s exactly that
// many bytes; a container's size is the sum of its children. Only what a CMAF
// header (init.mp4) and a CMAF segment (N.m4s) need is modelled.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cmaf/bytes.h"
#include "cmaf/encryption.h"

namespace cdlc::box {

// ---- file-level ------------------------------------------------------------

// 'ftyp' §4.3 / 'styp' §8.16.2: the same layout under two names.
struct FileType {
    const char* type = "ftyp";
    const char* major = "iso6";
    uint32_t minor = 0;
    std::vector<const char*> compatible;
    uint64_t size() const { return 16 + 4 * compatible.size(); }
    void write(ByteWriter& w) const;
};

// ---- movie (init segment) ---------------------------------------------------

// 'mvhd' §8.2.2, version 0. Durations are 0: a fragmented movie's duration is
// the sum of its fragments (§8.8.1); mehd is optional and omitted.
struct MovieHeader {
    uint32_t timescale = 1000;
    uint32_t next_track_id = 2;
    uint64_t size() const { return 108; }
    void write(ByteWriter& w) const;
};

// 'tkhd' §8.3.2, version 0, flags track_enabled|track_in_movie.
struct TrackHeader {
    uint32_t track_id = 1;
    bool audio = false;
    uint32_t width_fixed = 0;   // 16.16, display size (SAR applied)
    uint32_t height_fixed = 0;
    int rotation = 0;           // clockwise quarter turns for display (the matrix)
    uint64_t size() const { return 92; }
    void write(ByteWriter& w) const;
};

// 'mdhd' §8.4.2, version 0.
struct MediaHeader {
    uint32_t timescale = 90000;
    std::string language = "und";  // ISO 639-2/T, packed 3 x 5 bits
    uint64_t size() const { return 32; }
    void write(ByteWriter& w) const;
};

// 'hdlr' §8.4.3.
struct Handler {
    bool audio = false;
    uint64_t size() const;
    void write(ByteWriter& w) const;
};

// 'avcC' / 'hvcC' (14496-15 §5.3.4.1 / §8.4.1) / 'av1C' (AV1-ISOBMFF §2.3), an opaque record here.
struct CodecConfig {
    const char* type = "avcC";
    std::vector<uint8_t> record;
    uint64_t size() const { return 8 + record.size(); }
    void write(ByteWriter& w) const;
};

// 'pasp' §12.1.4.
struct PixelAspectRatio {
    uint32_t h_spacing = 1, v_spacing = 1;
    uint64_t size() const { return 16; }
    void write(ByteWriter& w) const;
};

// 'sinf' §8.12.1 of a protected sample entry (ISO/IEC 23001-7 §4): 'frma' (the
// original sample entry type), 'schm' (scheme 'cenc'/'cbcs', version 1.0) and
// 'schi' holding 'tenc' (23001-7 §8.2: version 0 for cenc, 1 with the pattern for
// cbcs; a constant IV when there is no per-sample IV).
struct ProtectionSchemeInfo {
    const char* original_format = "avc1";
    std::string scheme = "cenc";
    uint8_t crypt_byte_block = 0, skip_byte_block = 0;
    uint8_t per_sample_iv_size = 8;
    std::vector<uint8_t> kid;           // 16 bytes
    std::vector<uint8_t> constant_iv;   // 16 bytes when per_sample_iv_size == 0
    uint64_t tenc_size() const { return 32 + (per_sample_iv_size == 0 ? 1 + constant_iv.size() : 0); }
    uint64_t size() const { return 8 + 12 + 20 + 8 + tenc_size(); }
    void write(ByteWriter& w) const;
};

// 'pssh' §8.1 of 23001-7, version 1, of the W3C "common" system
// (1077efec-c0b2-4d02-ace3-3c1e52e2fb4b): names the KID, carries no data. DRM
// systems' own pssh boxes come from their key servers.
struct ProtectionSystemHeader {
    std::vector<uint8_t> kid;
    uint64_t size() const { return 12 + 16 + 4 + 16 + 4; }
    void write(ByteWriter& w) const;
};

// 'avc1' / 'hvc1' / 'av01' VisualSampleEntry §12.1.3 with its config and pasp ('encv' with
// a sinf when protected).
struct VisualSampleEntry {
    const char* type = "avc1";
    uint16_t width = 0, height = 0;
    CodecConfig config;
    PixelAspectRatio pasp;
    std::optional<ProtectionSchemeInfo> sinf;
    uint64_t size() const { return 86 + config.size() + pasp.size() + (sinf ? sinf->size() : 0); }
    void write(ByteWriter& w) const;
};

// 'esds' (14496-14 §5.6): ES_Descriptor > DecoderConfigDescriptor (+AudioSpecificConfig)
// + SLConfigDescriptor, lengths in the expandable form of 14496-1 §8.3.3.
struct ElementaryStreamDescriptor {
    std::vector<uint8_t> audio_specific_config;
    uint32_t avg_bitrate = 0, max_bitrate = 0;
    uint64_t size() const;
    void write(ByteWriter& w) const;
};

// 'dOps' (Opus in ISO-BMFF, §4.3.2): OpusHead re-encoded big-endian.
struct OpusSpecific {
    std::vector<uint8_t> opus_head;  // the 19+ byte little-endian OpusHead
    uint64_t size() const;
    void write(ByteWriter& w) const;
};

// 'mp4a' / 'Opus' AudioSampleEntry §12.2.3 (version 0).
struct AudioSampleEntry {
    const char* type = "mp4a";
    uint16_t channels = 2;
    uint32_t sample_rate = 48000;
    std::optional<ElementaryStreamDescriptor> esds;
    std::optional<OpusSpecific> dops;
    std::optional<ProtectionSchemeInfo> sinf;  // 'enca' when protected
    uint64_t size() const;
    void write(ByteWriter& w) const;
};

// 'stsd' §8.5.2 with exactly one entry.
struct SampleDescription {
    std::optional<VisualSampleEntry> visual;
    std::optional<AudioSampleEntry> sound;
    uint64_t size() const;
    void write(ByteWriter& w) const;
};

// 'stbl' §8.5.1: stsd plus the empty stts/stsc/stsz/stco a fragmented track keeps
// (samples live in the fragments, §8.8.1).
struct SampleTable {
    SampleDescription stsd;
    uint64_t size() const { return 8 + stsd.size() + 16 + 16 + 20 + 16; }
    void write(ByteWriter& w) const;
};

// 'minf' §8.4.4: vmhd (§12.1.2) or smhd (§12.2.2), dinf/dref/url (§8.7.1-2), stbl.
struct MediaInformation {
    bool audio = false;
    SampleTable stbl;
    uint64_t size() const { return 8 + (audio ? 16 : 20) + 36 + stbl.size(); }
    void write(ByteWriter& w) const;
};

// 'mdia' §8.4.1.
struct Media {
    MediaHeader mdhd;
    Handler hdlr;
    MediaInformation minf;
    uint64_t size() const { return 8 + mdhd.size() + hdlr.size() + minf.size(); }
    void write(ByteWriter& w) const;
};

// 'edts' §8.6.5 holding one 'elst' §8.6.6 (version 0) entry: presentation time 0
// shows media time `media_time`. segment_duration 0: the edit runs to the end of
// the media, the sum of the fragments in a fragmented file (§8.6.6.3). Used for
// audio priming only (AAC encoder delay); video carries its B-frame delay in
// composition offsets (segmenter.cpp). media_time 0 writes nothing (size 0).
struct EditList {
    int64_t media_time = 0;
    uint64_t size() const { return media_time > 0 ? 8 + 28 : 0; }
    void write(ByteWriter& w) const;
};

// 'trak' §8.3.1: tkhd, the optional edts, mdia.
struct Track {
    TrackHeader tkhd;
    EditList edts;
    Media mdia;
    uint64_t size() const { return 8 + tkhd.size() + edts.size() + mdia.size(); }
    void write(ByteWriter& w) const;
};

// 'mvex' §8.8.1 holding one 'trex' §8.8.3.
struct MovieExtends {
    uint32_t track_id = 1;
    uint64_t size() const { return 8 + 32; }
    void write(ByteWriter& w) const;
};

// 'moov' §8.2.1.
struct Movie {
    MovieHeader mvhd;
    Track trak;
    MovieExtends mvex;
    std::optional<ProtectionSystemHeader> pssh;
    uint64_t size() const { return 8 + mvhd.size() + trak.size() + mvex.size() + (pssh ? pssh->size() : 0); }
    void write(ByteWriter& w) const;
};

// ---- fragment (media segment) ------------------------------------------------

// Sample flags §8.8.3.1: sync samples depend on nothing (sample_depends_on = 2);
// others depend on earlier samples (1) and are marked non-sync.
constexpr uint32_t kSyncSampleFlags = 0x02000000;
constexpr uint32_t kNonSyncSampleFlags = 0x01010000;

// 'sidx' §8.16.3, version 1, one reference covering moof+mdat.
struct SegmentIndex {
    uint32_t reference_id = 1;
    uint32_t timescale = 90000;
    uint64_t earliest_presentation_time = 0;
    uint32_t referenced_size = 0;
    uint32_t subsegment_duration = 0;
    bool starts_with_sap = true;
    uint64_t size() const { return 8 + 4 + 4 + 4 + 16 + 4 + 12; }
    void write(ByteWriter& w) const;
};

// 'mfhd' §8.8.5.
struct MovieFragmentHeader {
    uint32_t sequence_number = 1;
    uint64_t size() const { return 16; }
    void write(ByteWriter& w) const;
};

// 'tfhd' §8.8.7: default-base-is-moof (CMAF 23000-19 §7.5.17), optionally
// default_sample_flags (used for audio, where every sample is a sync sample).
struct TrackFragmentHeader {
    uint32_t track_id = 1;
    std::optional<uint32_t> default_sample_flags;
    uint64_t size() const { return 16 + (default_sample_flags ? 4 : 0); }
    void write(ByteWriter& w) const;
};

// 'tfdt' §8.8.12, version 1 (64-bit baseMediaDecodeTime).
struct TrackFragmentDecodeTime {
    uint64_t base_media_decode_time = 0;
    uint64_t size() const { return 20; }
    void write(ByteWriter& w) const;
};

struct TrunSample {
    uint32_t duration = 0;
    uint32_t size = 0;
    uint32_t flags = 0;
    int32_t composition_offset = 0;
};

// 'trun' §8.8.8. Version 1 (signed composition offsets) when any offset is
// present; per-sample flags unless tfhd carries a default.
struct TrackRun {
    uint32_t data_offset = 0;  // from the start of moof (default-base-is-moof)
    bool sample_flags = true;
    bool composition_offsets = false;
    std::vector<TrunSample> samples;
    uint32_t per_sample() const { return 8 + (sample_flags ? 4 : 0) + (composition_offsets ? 4 : 0); }
    uint64_t size() const { return 20 + uint64_t(per_sample()) * samples.size(); }
    void write(ByteWriter& w) const;
};

// 'senc' (ISO/IEC 23001-7 §7.2.1): per-sample IVs and subsample maps, with
// 'saiz' §8.7.8 / 'saio' §8.7.9 pointing at them (CMAF §8.2.2 needs all three).
struct SampleEncryption {
    uint8_t iv_size = 8;
    bool subsamples = false;
    std::vector<SampleCryptoInfo> samples;
    uint64_t saio_offset = 0;  // of the first entry, from the start of moof (set by the writer)
    uint64_t entry_size(const SampleCryptoInfo& s) const {
        return iv_size + (subsamples ? 2 + 6 * s.subsamples.size() : 0);
    }
    uint64_t senc_size() const;
    uint64_t saiz_size() const;
    uint64_t size() const { return senc_size() + saiz_size() + 20; }
    void write(ByteWriter& w) const;  // senc, saiz, saio
};

// 'traf' §8.8.6.
struct TrackFragment {
    TrackFragmentHeader tfhd;
    TrackFragmentDecodeTime tfdt;
    TrackRun trun;
    std::optional<SampleEncryption> encryption;
    uint64_t size() const {
        return 8 + tfhd.size() + tfdt.size() + trun.size() + (encryption ? encryption->size() : 0);
    }
    void write(ByteWriter& w) const;
};

// 'moof' §8.8.4.
struct MovieFragment {
    MovieFragmentHeader mfhd;
    TrackFragment traf;
    uint64_t size() const { return 8 + mfhd.size() + traf.size(); }
    void write(ByteWriter& w) const;
};

// Helpers shared by the write() methods.
void write_header(ByteWriter& w, uint64_t size, const char* type);
void write_full_header(ByteWriter& w, uint64_t size, const char* type, uint8_t version, uint32_t flags);

}  // namespace cdlc::box
