// write() of every box in boxes.h. Field comments name the syntax element of
// ISO/IEC 14496-12 (section given on the struct).
#include "cmaf/boxes.h"

#include <cstring>

namespace cdlc::box {

namespace {

// The transformation matrix {a b u, c d v, x y w}, §8.2.2.3 (16.16 and 2.30 fixed
// point): unity, or a clockwise quarter turn for display. These are the values
// FFmpeg writes and reads back as that rotation (libavutil/display.h: a 90-degree
// clockwise display is b = 1, c = -1); no translation, as FFmpeg writes it.
void write_matrix(ByteWriter& w, int rotation = 0) {
    constexpr uint32_t one = 0x00010000, minus_one = 0xFFFF0000;
    uint32_t a = one, b = 0, c = 0, d = one;
    if (rotation == 90) a = 0, b = one, c = minus_one, d = 0;
    else if (rotation == 180) a = minus_one, d = minus_one;
    else if (rotation == 270) a = 0, b = minus_one, c = one, d = 0;
    const uint32_t m[9] = {a, b, 0, c, d, 0, 0, 0, 0x40000000};
    for (uint32_t v : m) w.u32(v);
}

// 14496-1 §8.3.3 expandable size: always the 4-byte form, as common muxers write
// it, so sizes never depend on the payload length class.
constexpr uint64_t kDescrHeader = 5;
void write_descr_header(ByteWriter& w, uint8_t tag, uint64_t payload) {
    w.u8(tag);
    w.u8(0x80 | ((payload >> 21) & 0x7F));
    w.u8(0x80 | ((payload >> 14) & 0x7F));
    w.u8(0x80 | ((payload >> 7) & 0x7F));
    w.u8(payload & 0x7F);
}

const char* handler_name(bool audio) { return audio ? "SoundHandler" : "VideoHandler"; }

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

}  // namespace

void write_header(ByteWriter& w, uint64_t size, const char* type) {
    if (size > 0xFFFFFFFFull) throw Error(std::string("box too large: ") + type);
    w.u32(static_cast<uint32_t>(size));
    w.fourcc(type);
}

void write_full_header(ByteWriter& w, uint64_t size, const char* type, uint8_t version, uint32_t flags) {
    write_header(w, size, type);
    w.u8(version);
    w.u24(flags);
}

void FileType::write(ByteWriter& w) const {
    write_header(w, size(), type);
    w.fourcc(major);
    w.u32(minor);
    for (const char* c : compatible) w.fourcc(c);
}

void MovieHeader::write(ByteWriter& w) const {
    write_full_header(w, size(), "mvhd", 0, 0);
    w.u32(0);  // creation_time
    w.u32(0);  // modification_time
    w.u32(timescale);
    w.u32(0);  // duration: unknown / sum of fragments
    w.u32(0x00010000);  // rate 1.0
    w.u16(0x0100);      // volume 1.0
    w.zeros(2 + 8);     // reserved
    write_matrix(w);
    w.zeros(24);        // pre_defined
    w.u32(next_track_id);
}

void TrackHeader::write(ByteWriter& w) const {
    write_full_header(w, size(), "tkhd", 0, 0x000003);  // track_enabled | track_in_movie
    w.u32(0);  // creation_time
    w.u32(0);  // modification_time
    w.u32(track_id);
    w.u32(0);  // reserved
    w.u32(0);  // duration
    w.zeros(8);
    w.u16(0);  // layer
    w.u16(audio ? 1 : 0);  // alternate_group: tracks of one kind are alternatives
    w.u16(audio ? 0x0100 : 0);  // volume
    w.u16(0);
    write_matrix(w, rotation);
    w.u32(width_fixed);
    w.u32(height_fixed);
}

void MediaHeader::write(ByteWriter& w) const {
    write_full_header(w, size(), "mdhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(timescale);
    w.u32(0);  // duration
    // pad(1) + language: three 5-bit letters, each (char - 0x60), §8.4.2.3
    const std::string lang = language.size() == 3 ? language : "und";
    uint16_t packed = 0;
    for (char c : lang) packed = static_cast<uint16_t>((packed << 5) | ((c - 0x60) & 0x1F));
    w.u16(packed);
    w.u16(0);  // pre_defined
}

uint64_t Handler::size() const { return 12 + 4 + 4 + 12 + std::strlen(handler_name(audio)) + 1; }

void Handler::write(ByteWriter& w) const {
    write_full_header(w, size(), "hdlr", 0, 0);
    w.u32(0);  // pre_defined
    w.fourcc(audio ? "soun" : "vide");
    w.zeros(12);
    const char* name = handler_name(audio);
    w.bytes(reinterpret_cast<const uint8_t*>(name), std::strlen(name) + 1);
}

void CodecConfig::write(ByteWriter& w) const {
    write_header(w, size(), type);
    w.bytes(record);
}

void PixelAspectRatio::write(ByteWriter& w) const {
    write_header(w, size(), "pasp");
    w.u32(h_spacing);
    w.u32(v_spacing);
}

void VisualSampleEntry::write(ByteWriter& w) const {
    write_header(w, size(), type);
    w.zeros(6);
    w.u16(1);  // data_reference_index
    w.u16(0);  // pre_defined
    w.u16(0);  // reserved
    w.zeros(12);  // pre_defined
    w.u16(width);
    w.u16(height);
    w.u32(0x00480000);  // horizresolution 72 dpi
    w.u32(0x00480000);  // vertresolution
    w.u32(0);           // reserved
    w.u16(1);           // frame_count
    w.zeros(32);        // compressorname (empty Pascal string)
    w.u16(0x0018);      // depth
    w.u16(0xFFFF);      // pre_defined = -1
    config.write(w);
    pasp.write(w);
    if (sinf) sinf->write(w);
}

uint64_t ElementaryStreamDescriptor::size() const {
    const uint64_t dsi = kDescrHeader + audio_specific_config.size();
    const uint64_t dcd = kDescrHeader + 13 + dsi;
    const uint64_t sl = kDescrHeader + 1;
    const uint64_t es = kDescrHeader + 3 + dcd + sl;
    return 12 + es;
}

void ElementaryStreamDescriptor::write(ByteWriter& w) const {
    const uint64_t dsi = audio_specific_config.size();
    const uint64_t dcd = 13 + kDescrHeader + dsi;
    const uint64_t sl = 1;
    const uint64_t es = 3 + kDescrHeader + dcd + kDescrHeader + sl;
    write_full_header(w, size(), "esds", 0, 0);
    write_descr_header(w, 0x03, es);  // ES_DescrTag
    w.u16(0);                          // ES_ID (0: assigned by the file format)
    w.u8(0);                           // no dependsOn / URL / OCR
    write_descr_header(w, 0x04, dcd);  // DecoderConfigDescrTag
    w.u8(0x40);                        // objectTypeIndication: Audio ISO/IEC 14496-3
    w.u8(0x15);                        // streamType audio (5) << 2 | upStream 0 | reserved 1
    w.u24(0);                          // bufferSizeDB
    w.u32(max_bitrate);
    w.u32(avg_bitrate);
    write_descr_header(w, 0x05, dsi);  // DecSpecificInfoTag: AudioSpecificConfig
    w.bytes(audio_specific_config);
    write_descr_header(w, 0x06, sl);   // SLConfigDescrTag
    w.u8(0x02);                        // predefined: reserved for MP4
}

uint64_t OpusSpecific::size() const {
    const uint64_t family = opus_head.size() > 18 ? opus_head[18] : 0;
    const uint64_t channels = opus_head.size() > 9 ? opus_head[9] : 0;
    return 8 + 11 + (family != 0 ? 2 + channels : 0);
}

void OpusSpecific::write(ByteWriter& w) const {
    if (opus_head.size() < 19 || std::memcmp(opus_head.data(), "OpusHead", 8) != 0)
        throw InvalidDataError("Opus extradata is not an OpusHead");
    const uint8_t* h = opus_head.data();
    const uint8_t channels = h[9], family = h[18];
    if (family != 0 && opus_head.size() < size_t(21) + channels)
        throw InvalidDataError("OpusHead channel mapping table truncated");
    write_header(w, size(), "dOps");
    w.u8(0);  // Version
    w.u8(channels);
    w.u16(le16(h + 10));  // PreSkip
    w.u32(le32(h + 12));  // InputSampleRate
    w.u16(le16(h + 16));  // OutputGain
    w.u8(family);
    if (family != 0) w.bytes(h + 19, 2 + channels);  // StreamCount, CoupledCount, mapping
}

uint64_t AudioSampleEntry::size() const {
    return 36 + (esds ? esds->size() : 0) + (dops ? dops->size() : 0) + (sinf ? sinf->size() : 0);
}

void ProtectionSchemeInfo::write(ByteWriter& w) const {
    if (kid.size() != 16) throw InvalidDataError("tenc needs a 16-byte KID");
    if (per_sample_iv_size == 0 && constant_iv.size() != 16) throw InvalidDataError("tenc needs a constant IV");
    write_header(w, size(), "sinf");
    write_header(w, 12, "frma");
    w.fourcc(original_format);
    write_full_header(w, 20, "schm", 0, 0);
    w.fourcc(scheme.c_str());
    w.u32(0x00010000);  // scheme_version 1.0
    write_header(w, 8 + tenc_size(), "schi");
    const bool pattern = scheme == "cbcs";
    write_full_header(w, tenc_size(), "tenc", pattern ? 1 : 0, 0);
    w.u8(0);  // reserved
    w.u8(pattern ? static_cast<uint32_t>((crypt_byte_block << 4) | (skip_byte_block & 0x0F)) : 0);
    w.u8(1);  // default_isProtected
    w.u8(per_sample_iv_size);
    w.bytes(kid);
    if (per_sample_iv_size == 0) {
        w.u8(static_cast<uint32_t>(constant_iv.size()));
        w.bytes(constant_iv);
    }
}

void ProtectionSystemHeader::write(ByteWriter& w) const {
    static const uint8_t kCommonSystem[16] = {0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02,
                                              0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2, 0xfb, 0x4b};
    write_full_header(w, size(), "pssh", 1, 0);
    w.bytes(kCommonSystem, 16);
    w.u32(1);  // KID_count
    w.bytes(kid);
    w.u32(0);  // DataSize
}

uint64_t SampleEncryption::senc_size() const {
    uint64_t n = 16;
    for (const SampleCryptoInfo& s : samples) n += entry_size(s);
    return n;
}

uint64_t SampleEncryption::saiz_size() const {
    bool same = true;
    for (const SampleCryptoInfo& s : samples) same = same && entry_size(s) == entry_size(samples.front());
    return 17 + (same ? 0 : samples.size());
}

void SampleEncryption::write(ByteWriter& w) const {
    write_full_header(w, senc_size(), "senc", 0, subsamples ? 0x2 : 0);
    w.u32(static_cast<uint32_t>(samples.size()));
    for (const SampleCryptoInfo& s : samples) {
        if (s.iv.size() != iv_size) throw Error("senc: IV size mismatch (writer bug)");
        w.bytes(s.iv);
        if (!subsamples) continue;
        if (s.subsamples.size() > 0xFFFF) throw InvalidDataError("too many subsamples in one sample");
        w.u16(static_cast<uint32_t>(s.subsamples.size()));
        for (const Subsample& sub : s.subsamples) {
            w.u16(sub.clear);
            w.u32(sub.protected_bytes);
        }
    }
    const bool same = saiz_size() == 17;
    write_full_header(w, saiz_size(), "saiz", 0, 0);
    for (const SampleCryptoInfo& s : samples)
        if (entry_size(s) > 255) throw InvalidDataError("sample auxiliary information larger than 255 bytes (too many slices)");
    w.u8(same && !samples.empty() ? static_cast<uint32_t>(entry_size(samples.front())) : 0);
    w.u32(static_cast<uint32_t>(samples.size()));
    if (!same)
        for (const SampleCryptoInfo& s : samples) w.u8(static_cast<uint32_t>(entry_size(s)));
    write_full_header(w, 20, "saio", 0, 0);
    w.u32(1);  // entry_count
    w.u32(static_cast<uint32_t>(saio_offset));
}

void AudioSampleEntry::write(ByteWriter& w) const {
    write_header(w, size(), type);
    w.zeros(6);
    w.u16(1);  // data_reference_index
    w.zeros(8);  // reserved (version 0)
    w.u16(channels);
    w.u16(16);  // samplesize
    w.u16(0);   // pre_defined
    w.u16(0);   // reserved
    // samplerate 16.16; rates >= 65536 do not fit and are signalled by the codec config.
    w.u32(sample_rate < 65536 ? sample_rate << 16 : 0);
    if (esds) esds->write(w);
    if (dops) dops->write(w);
    if (sinf) sinf->write(w);
}

uint64_t SampleDescription::size() const {
    return 16 + (visual ? visual->size() : 0) + (sound ? sound->size() : 0);
}

void SampleDescription::write(ByteWriter& w) const {
    write_full_header(w, size(), "stsd", 0, 0);
    w.u32(1);  // entry_count
    if (visual) visual->write(w);
    if (sound) sound->write(w);
}

void SampleTable::write(ByteWriter& w) const {
    write_header(w, size(), "stbl");
    stsd.write(w);
    write_full_header(w, 16, "stts", 0, 0);
    w.u32(0);
    write_full_header(w, 16, "stsc", 0, 0);
    w.u32(0);
    write_full_header(w, 20, "stsz", 0, 0);
    w.u32(0);  // sample_size
    w.u32(0);  // sample_count
    write_full_header(w, 16, "stco", 0, 0);
    w.u32(0);
}

void MediaInformation::write(ByteWriter& w) const {
    write_header(w, size(), "minf");
    if (audio) {
        write_full_header(w, 16, "smhd", 0, 0);
        w.u16(0);  // balance
        w.u16(0);
    } else {
        write_full_header(w, 20, "vmhd", 0, 1);  // flags = 1 (§12.1.2.2)
        w.zeros(8);  // graphicsmode + opcolor
    }
    write_header(w, 36, "dinf");
    write_full_header(w, 28, "dref", 0, 0);
    w.u32(1);
    write_full_header(w, 12, "url ", 0, 1);  // self-contained: media in this file
    stbl.write(w);
}

void Media::write(ByteWriter& w) const {
    write_header(w, size(), "mdia");
    mdhd.write(w);
    hdlr.write(w);
    minf.write(w);
}

void EditList::write(ByteWriter& w) const {
    if (size() == 0) return;
    if (media_time > 0x7FFFFFFF) throw InvalidDataError("edit list media_time does not fit 32 bits");
    write_header(w, size(), "edts");
    write_full_header(w, 28, "elst", 0, 0);
    w.u32(1);                                     // entry_count
    w.u32(0);                                     // segment_duration: to the end (fragmented)
    w.u32(static_cast<uint32_t>(media_time));     // media_time
    w.u16(1);                                     // media_rate_integer
    w.u16(0);                                     // media_rate_fraction
}

void Track::write(ByteWriter& w) const {
    write_header(w, size(), "trak");
    tkhd.write(w);
    edts.write(w);
    mdia.write(w);
}

void MovieExtends::write(ByteWriter& w) const {
    write_header(w, size(), "mvex");
    write_full_header(w, 32, "trex", 0, 0);
    w.u32(track_id);
    w.u32(1);  // default_sample_description_index
    w.u32(0);  // default_sample_duration
    w.u32(0);  // default_sample_size
    w.u32(0);  // default_sample_flags
}

void Movie::write(ByteWriter& w) const {
    write_header(w, size(), "moov");
    mvhd.write(w);
    trak.write(w);
    mvex.write(w);
    if (pssh) pssh->write(w);
}

void SegmentIndex::write(ByteWriter& w) const {
    write_full_header(w, size(), "sidx", 1, 0);
    w.u32(reference_id);
    w.u32(timescale);
    w.u64(earliest_presentation_time);
    w.u64(0);  // first_offset: the moof follows this sidx directly
    w.u16(0);  // reserved
    w.u16(1);  // reference_count
    if (referenced_size > 0x7FFFFFFF) throw Error("segment larger than 2 GiB cannot be indexed");
    w.u32(referenced_size);  // reference_type 0 (media)
    w.u32(subsegment_duration);
    w.u32(starts_with_sap ? 0x90000000u : 0);  // starts_with_SAP 1, SAP_type 1, delta 0
}

void MovieFragmentHeader::write(ByteWriter& w) const {
    write_full_header(w, size(), "mfhd", 0, 0);
    w.u32(sequence_number);
}

void TrackFragmentHeader::write(ByteWriter& w) const {
    const uint32_t flags = 0x020000 | (default_sample_flags ? 0x000020 : 0);
    write_full_header(w, size(), "tfhd", 0, flags);
    w.u32(track_id);
    if (default_sample_flags) w.u32(*default_sample_flags);
}

void TrackFragmentDecodeTime::write(ByteWriter& w) const {
    write_full_header(w, size(), "tfdt", 1, 0);
    w.u64(base_media_decode_time);
}

void TrackRun::write(ByteWriter& w) const {
    // data-offset | sample-duration | sample-size [| sample-flags] [| composition offsets]
    const uint32_t flags = 0x000001 | 0x000100 | 0x000200 | (sample_flags ? 0x000400 : 0) |
                           (composition_offsets ? 0x000800 : 0);
    write_full_header(w, size(), "trun", composition_offsets ? 1 : 0, flags);
    w.u32(static_cast<uint32_t>(samples.size()));
    w.u32(data_offset);
    for (const TrunSample& s : samples) {
        w.u32(s.duration);
        w.u32(s.size);
        if (sample_flags) w.u32(s.flags);
        if (composition_offsets) w.u32(static_cast<uint32_t>(s.composition_offset));
    }
}

void TrackFragment::write(ByteWriter& w) const {
    write_header(w, size(), "traf");
    tfhd.write(w);
    tfdt.write(w);
    trun.write(w);
    if (encryption) encryption->write(w);
}

void MovieFragment::write(ByteWriter& w) const {
    write_header(w, size(), "moof");
    mfhd.write(w);
    traf.write(w);
}

}  // namespace cdlc::box
