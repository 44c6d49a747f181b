// Neutral media models shared by every stage of the native core:
// demuxers/encoders produce them, the CMAF writer and the segmenter consume them.
// Nothing here knows about FFmpeg or Python.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cdlc {

enum class TrackKind { Video, Audio, Text };

// Everything the ISO-BMFF writer needs to describe one track (moov/trak) and
// everything the packager needs for codec strings and manifests.
struct TrackInfo {
    TrackKind kind = TrackKind::Video;
    std::string codec;               // "h264", "hevc", "av1", "aac", "opus"
    uint32_t timescale = 90000;      // mdhd timescale; all packet times below use it
    // Decoder configuration in ISO form: AVCDecoderConfigurationRecord (avcC),
    // HEVCDecoderConfigurationRecord (hvcC), AudioSpecificConfig (esds) or OpusHead (dOps).
    std::vector<uint8_t> extradata;
    // video
    int width = 0;
    int height = 0;
    int sar_num = 1;
    int sar_den = 1;
    // Clockwise quarter turns (0/90/180/270) a player applies to the coded
    // pictures for display: the tkhd matrix. The copy keeps a phone's portrait
    // capture as coded, sideways, and says so here; a transcode turns it upright.
    int rotation = 0;
    int frame_rate_num = 0;          // constant output frame rate, e.g. 30000/1001
    int frame_rate_den = 1;
    // audio
    int sample_rate = 0;
    int channels = 0;
    // nominal (target) bitrate in bit/s; 0 if unknown (copy path)
    int64_t bitrate = 0;
    std::string language = "und";    // ISO 639-2/T ("eng", "fra"), "und" when unknown
    // Human-readable name for manifests (HLS NAME): the stream's title tag, else the
    // language's English name ("French"); empty for video.
    std::string name;
    // Media time (track timescale) that presents at time 0: the edit list's
    // media_time (ISO/IEC 14496-12 §8.6.6) and DASH @presentationTimeOffset. For
    // AAC this is the encoder delay (priming, 1024 samples for FFmpeg's aac), so the
    // first source sample plays at 0 together with the first video picture.
    int64_t presentation_offset = 0;
    // text (subtitles): forced-only narrative, and SDH (captions for the deaf and
    // hard of hearing: HLS CHARACTERISTICS, DASH Role "caption")
    bool forced = false;
    bool sdh = false;
};

// One coded access unit. Video data is length-prefixed (4-byte NAL lengths,
// ISO/IEC 14496-15), never Annex B; AAC is raw (no ADTS header).
struct EncodedPacket {
    std::vector<uint8_t> data;
    int64_t pts = 0;                 // presentation time, track timescale
    int64_t dts = 0;                 // decode time, track timescale
    int64_t duration = 0;            // track timescale
    bool keyframe = false;           // sync sample (IDR / audio frame)
};

// One media segment as written: what manifests and the metadata store need.
struct SegmentRecord {
    int number = 0;                  // 1-based, the {number} of {number}.m4s
    int64_t start = 0;               // tfdt: earliest decode time, track timescale
    int64_t duration = 0;            // sum of sample durations, track timescale
    uint64_t size = 0;               // bytes of the .m4s file
    uint64_t iframe_size = 0;        // bytes from file start to end of its first sync
                                     // sample (I-frame playlists); 0 for audio
};

// A rendition as finished: its track, where its files are, its segment index.
struct RenditionResult {
    std::string id;                  // directory name under the output dir, e.g. "v720" or "audio"
    TrackInfo track;
    std::vector<SegmentRecord> segments;
    // The rung whose scaled pictures this video rendition was made from (same size,
    // or twice its size), "" when from the decoded master itself.
    std::string scaled_from;
};

// A stream of a master (or a sidecar) that did not become a rendition, and why:
// nothing is dropped silently.
struct SkippedStream {
    std::string source;              // the input file
    int index = -1;                  // stream index in it
    std::string kind;                // "video", "audio", "subtitle", "data", "attachment"
    std::string codec;               // libavcodec's name, e.g. "bin_data", "dvd_subtitle"
    std::string reason;
};

// A still picture taken from the decode (storyboard tiles, the poster): packed
// RGB24 rows, `width * 3` bytes each, upright with square pixels.
struct Picture {
    double time = 0.0;               // seconds on the output timeline
    int width = 0;
    int height = 0;
    double score = 0.0;              // how much it shows: luma spread, 0 for a flat frame
    std::vector<uint8_t> rgb;
};

struct PipelineResult {
    std::vector<RenditionResult> renditions;
    std::vector<SkippedStream> skipped;
    double duration_seconds = 0.0;   // of the output
    int64_t source_frames = 0;       // decoded video frames (0 on the copy path)
    // With thumbnails asked for: one small picture per interval of the output
    // timeline, and the poster (the best-scored of them, at poster size).
    std::vector<Picture> thumbnails;
    Picture poster;
};

// A consumer of encoded packets, e.g. the CMAF segmenter. Called from one thread
// per track; implementations need not be thread-safe across calls.
class PacketSink {
public:
    virtual ~PacketSink() = default;
    virtual void write(const EncodedPacket& packet) = 0;
    // Flush everything buffered (the last segment). No write() after finish().
    virtual void finish() = 0;
};

}  // namespace cdlc
