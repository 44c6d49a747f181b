// Assembles the boxes of boxes.h into a CMAF header and CMAF segments.
#include "cmaf/writer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cmaf/boxes.h"
#include "codec/av1.h"
#include "codec/nal.h"
#include "common/error.h"

namespace cdlc {

namespace {

// Brands: 'iso6' (the 14496-12 feature set used: tfdt v1, default-base-is-moof),
// 'cmfc' (CMAF track, 23000-19 §7.2), 'dash' (DASH segment format, 23009-1 §6.3.4).
const std::vector<const char*> kInitBrands = {"iso6", "cmfc", "dash"};
// Segment brands: 'msdh' + 'msix' (DASH media segment with a sidx, 23009-1
// §6.3.4.2-3) and 'cmfs' (CMAF segment, 23000-19 §7.2).
const std::vector<const char*> kSegmentBrands = {"msdh", "msix", "cmfs"};

uint32_t to_fixed16(double v) {
    if (!(v >= 0) || v > 65535.0) return 0;
    return static_cast<uint32_t>(std::lround(v * 65536.0));
}

}  // namespace

const char* sample_entry_type(const std::string& codec) {
    if (codec == "h264") return "avc1";
    if (codec == "hevc" || codec == "h265") return "hvc1";
    if (codec == "av1") return "av01";
    if (codec == "aac") return "mp4a";
    if (codec == "opus") return "Opus";
    throw InvalidDataError("codec '" + codec + "' cannot be written to CMAF (supported: h264, hevc, av1, aac, opus)");
}

std::vector<uint8_t> build_init_segment(const TrackInfo& track) { return build_init_segment(track, nullptr); }

std::vector<uint8_t> build_init_segment(const TrackInfo& track, const TrackProtection* protection) {
    const bool audio = track.kind == TrackKind::Audio;
    const char* entry = sample_entry_type(track.codec);
    const bool entry_is_audio = std::string(entry) == "mp4a" || std::string(entry) == "Opus";
    if (entry_is_audio != audio)
        throw InvalidDataError("codec '" + track.codec + "' does not match the track kind");
    if (track.timescale == 0) throw InvalidDataError("track timescale must be positive");

    box::FileType ftyp;
    ftyp.type = "ftyp";
    ftyp.major = "iso6";
    ftyp.compatible = kInitBrands;

    box::Movie moov;
    moov.trak.tkhd.audio = audio;
    if (track.presentation_offset < 0) throw InvalidDataError("presentation offset must be >= 0");
    moov.trak.edts.media_time = track.presentation_offset;
    moov.trak.mdia.mdhd.timescale = track.timescale;
    moov.trak.mdia.mdhd.language = track.language;
    moov.trak.mdia.hdlr.audio = audio;
    moov.trak.mdia.minf.audio = audio;
    box::SampleDescription& stsd = moov.trak.mdia.minf.stbl.stsd;
    if (!audio) {
        if (track.width <= 0 || track.height <= 0 || track.width > 65535 || track.height > 65535)
            throw InvalidDataError("video track needs a width and height in 1..65535");
        const int sar_num = track.sar_num > 0 && track.sar_den > 0 ? track.sar_num : 1;
        const int sar_den = track.sar_num > 0 && track.sar_den > 0 ? track.sar_den : 1;
        // tkhd carries the display size: coded width stretched by the SAR (§8.3.2.3).
        moov.trak.tkhd.width_fixed = to_fixed16(double(track.width) * sar_num / sar_den);
        moov.trak.tkhd.height_fixed = to_fixed16(track.height);
        if (track.rotation != 0 && track.rotation != 90 && track.rotation != 180 && track.rotation != 270)
            throw InvalidDataError("track rotation must be 0, 90, 180 or 270 degrees");
        moov.trak.tkhd.rotation = track.rotation;
        box::VisualSampleEntry v;
        v.type = entry;
        v.width = static_cast<uint16_t>(track.width);
        v.height = static_cast<uint16_t>(track.height);
        const std::string type(entry);
        const uint8_t* extradata = track.extradata.data();
        const size_t extradata_size = track.extradata.size();
        if (type == "av01") {
            v.config.type = "av1C";
            v.config.record = av1_decoder_config(extradata, extradata_size);
        } else if (type == "hvc1") {
            v.config.type = "hvcC";
            v.config.record = hevc_decoder_config(extradata, extradata_size);
        } else {
            v.config.type = "avcC";
            v.config.record = avc_decoder_config(extradata, extradata_size);
        }
        v.pasp.h_spacing = static_cast<uint32_t>(sar_num);
        v.pasp.v_spacing = static_cast<uint32_t>(sar_den);
        stsd.visual = std::move(v);
    } else {
        if (track.sample_rate <= 0 || track.channels <= 0 || track.channels > 255)
            throw InvalidDataError("audio track needs a sample rate and 1..255 channels");
        box::AudioSampleEntry a;
        a.type = entry;
        a.channels = static_cast<uint16_t>(track.channels);
        a.sample_rate = static_cast<uint32_t>(track.sample_rate);
        if (track.codec == "aac") {
            if (track.extradata.size() < 2)
                throw InvalidDataError("AAC track has no AudioSpecificConfig");
            box::ElementaryStreamDescriptor esds;
            esds.audio_specific_config = track.extradata;
            const uint64_t br = track.bitrate > 0 ? uint64_t(track.bitrate) : 0;
            esds.avg_bitrate = static_cast<uint32_t>(std::min<uint64_t>(br, 0xFFFFFFFFu));
            esds.max_bitrate = esds.avg_bitrate;
            a.esds = std::move(esds);
        } else {
            box::OpusSpecific dops;
            dops.opus_head = track.extradata;
            if (dops.opus_head.size() < 19) throw InvalidDataError("Opus track has no OpusHead");
            a.dops = std::move(dops);
            // Opus in ISO-BMFF §4.3: samplerate is 48000 whatever the input rate.
            a.sample_rate = 48000;
        }
        stsd.sound = std::move(a);
    }
    if (protection) {
        box::ProtectionSchemeInfo sinf;
        sinf.original_format = entry;
        sinf.scheme = protection->scheme;
        sinf.kid = protection->kid;
        sinf.constant_iv = protection->constant_iv;
        sinf.per_sample_iv_size = protection->per_sample_iv_size;
        sinf.crypt_byte_block = protection->crypt_byte_block;
        sinf.skip_byte_block = protection->skip_byte_block;
        if (stsd.visual) {
            stsd.visual->type = "encv";
            stsd.visual->sinf = std::move(sinf);
        } else {
            stsd.sound->type = "enca";
            stsd.sound->sinf = std::move(sinf);
        }
        box::ProtectionSystemHeader pssh;
        pssh.kid = protection->kid;
        moov.pssh = std::move(pssh);
    }

    const uint64_t total = ftyp.size() + moov.size();
    std::vector<uint8_t> out;
    out.reserve(total);
    ByteWriter w(out);
    ftyp.write(w);
    moov.write(w);
    if (out.size() != total) throw Error("CMAF header size mismatch (writer bug)");
    return out;
}

std::vector<uint8_t> build_media_segment_header(uint32_t sequence_number, uint32_t timescale,
                                                uint64_t base_media_decode_time, bool audio,
                                                const std::vector<FragmentSample>& samples,
                                                MediaSegmentLayout* layout) {
    return build_media_segment_header(sequence_number, timescale, base_media_decode_time, audio, samples, layout,
                                      nullptr, 0, false);
}

std::vector<uint8_t> build_media_segment_header(uint32_t sequence_number, uint32_t timescale,
                                                uint64_t base_media_decode_time, bool audio,
                                                const std::vector<FragmentSample>& samples,
                                                MediaSegmentLayout* layout,
                                                const std::vector<SampleCryptoInfo>* crypto, uint8_t iv_size,
                                                bool subsamples) {
    box::FileType styp;
    styp.type = "styp";
    styp.major = "msdh";
    styp.compatible = kSegmentBrands;

    box::MovieFragment moof;
    moof.mfhd.sequence_number = sequence_number;
    moof.traf.tfdt.base_media_decode_time = base_media_decode_time;
    box::TrackRun& trun = moof.traf.trun;
    trun.samples.reserve(samples.size());
    if (audio) {
        moof.traf.tfhd.default_sample_flags = box::kSyncSampleFlags;
        trun.sample_flags = false;
    }
    uint64_t payload = 0, duration = 0;
    // Earliest composition time relative to tfdt: min over samples of (decode
    // time offset + composition offset).
    int64_t min_offset = std::numeric_limits<int64_t>::max();
    for (const FragmentSample& s : samples) {
        if (s.size > 0xFFFFFFFFu) throw InvalidDataError("sample larger than 4 GiB");
        trun.samples.push_back({s.duration, static_cast<uint32_t>(s.size),
                                s.sync ? box::kSyncSampleFlags : box::kNonSyncSampleFlags,
                                s.composition_offset});
        if (s.composition_offset != 0) trun.composition_offsets = true;
        min_offset = std::min<int64_t>(min_offset, int64_t(duration) + s.composition_offset);
        payload += s.size;
        duration += s.duration;
    }
    if (samples.empty()) min_offset = 0;
    if (crypto && (iv_size > 0 || subsamples)) {
        if (crypto->size() != samples.size()) throw Error("one encryption entry per sample (writer bug)");
        box::SampleEncryption enc;
        enc.iv_size = iv_size;
        enc.subsamples = subsamples;
        enc.samples = *crypto;
        // saio: the first senc entry, from the start of moof (default-base-is-moof):
        // moof header, mfhd, traf header, tfhd, tfdt, trun, then senc's own 16 bytes.
        enc.saio_offset = 8 + moof.mfhd.size() + 8 + moof.traf.tfhd.size() + moof.traf.tfdt.size() +
                          trun.size() + 16;
        moof.traf.encryption = std::move(enc);
    }
    const uint64_t moof_size = moof.size();
    const uint64_t mdat_header = 8;
    if (moof_size + mdat_header + payload > 0x7FFFFFFFull)
        throw InvalidDataError("segment larger than 2 GiB");
    trun.data_offset = static_cast<uint32_t>(moof_size + mdat_header);

    box::SegmentIndex sidx;
    sidx.timescale = timescale;
    // Earliest presentation time of the segment (§8.16.3.3), clamped at 0 for
    // leading pictures of an open GOP at the very start.
    const int64_t ept = int64_t(base_media_decode_time) + min_offset;
    sidx.earliest_presentation_time = ept > 0 ? uint64_t(ept) : 0;
    sidx.referenced_size = static_cast<uint32_t>(moof_size + mdat_header + payload);
    sidx.subsegment_duration = static_cast<uint32_t>(std::min<uint64_t>(duration, 0xFFFFFFFFu));
    sidx.starts_with_sap = !samples.empty() && samples.front().sync;

    const uint64_t header = styp.size() + sidx.size() + moof_size + mdat_header;
    std::vector<uint8_t> out;
    out.reserve(header);
    ByteWriter w(out);
    styp.write(w);
    sidx.write(w);
    moof.write(w);
    box::write_header(w, mdat_header + payload, "mdat");
    if (out.size() != header) throw Error("CMAF segment header size mismatch (writer bug)");

    if (layout) {
        layout->header_size = header;
        layout->iframe_size = 0;
        uint64_t offset = header;
        for (const FragmentSample& s : samples) {
            offset += s.size;
            if (s.sync) {
                layout->iframe_size = offset;
                break;
            }
        }
    }
    return out;
}

}  // namespace cdlc
