// One-pass ABR transcoder: demux and decode the master once, scale each rung from
// the decoded frame (or from the scaled pictures of a rung of its size or twice
// it), encode each rung in its own thread, encode audio once, and hand encoded
// packets to one CMAF segmenter per rendition.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cmaf/encryption.h"
#include "common/cue.h"
#include "common/media_types.h"

namespace cdlc {

struct RungConfig {
    std::string id;              // rendition id / directory name, e.g. "v720"
    int width = 0;               // output size (even); 0 = derive from height and the DAR
    int height = 0;
    int64_t bitrate = 0;         // target, bit/s (capped VBR)
    int64_t maxrate = 0;         // 0 = 1.5 x bitrate (ISO buffer model cap)
    int64_t bufsize = 0;         // 0 = 2 x bitrate
    int crf = -1;                // >= 0 selects CRF (still capped by maxrate)
    std::string encoder = "libx264";   // or "h264_nvenc"
};

struct TranscodeConfig {
    std::string input;
    std::string output_dir;      // each rendition writes output_dir/<id>/init.mp4 and N.m4s
    std::vector<RungConfig> rungs;
    double segment_seconds = 4.0;
    double gop_seconds = 2.0;    // keyframe interval; segment_seconds is a multiple of it
    std::string preset = "veryfast";
    int fps_num = 0;             // output frame rate; 0 = the source's (normalised to CFR)
    int fps_den = 1;
    // Encode every audio stream of the master (and every sidecar), each decoded once
    // and encoded once into a rendition of its own: the best one ("default") as
    // audio_id, the others as audio_<lang> (audio_<n> when untagged).
    bool audio = true;
    int64_t audio_bitrate = 128000;
    int audio_sample_rate = 48000;
    int audio_channels = 2;
    std::string audio_id = "audio";
    // Threads of each rung's encoder; 0 = the encoder's default (x264: 1.5 x cores,
    // as the ffmpeg CLI uses). Every rung also has its own feeding thread.
    int encoder_threads = 0;
    // Span ("chunk") encoding, so a long master can be encoded in pieces on many
    // machines and stitched by merging segment indexes: the output is the part of
    // the one-piece encode (same rungs, segment/GOP lengths, preset, fps) that lies
    // in [span_start, span_end) seconds of the one-piece timeline, whose zero stays
    // the master's first video picture. Both are multiples of segment_seconds;
    // span_end 0 (or past the master's end) = to the end. Segments keep their
    // one-piece numbers and times (the first is span_start / segment_seconds + 1).
    double span_start = 0.0;
    double span_end = 0.0;
    // > 0: `input` may be an http(s) URL (a presigned object URL), read with ranged
    // GETs, each read waiting at most this many seconds (av::open_input). A read
    // that fails is an IOError, never taken for the end of the master.
    double remote_timeout = 0.0;
    // false: no video rendition (rungs are ignored and may be empty), e.g. one
    // audio-only task over the whole master beside video-only chunk tasks. The
    // master still needs a video stream: its first picture is time zero.
    bool video = true;
    // Extra audio: files beside the master, each trimmed/aligned so its own first
    // sample is the master's time zero, encoded like the master's audio.
    std::vector<SidecarAudio> sidecar_audio;
    // Text: the master's text subtitle streams (mov_text, subrip, webvtt, ass) and
    // sidecar WebVTT/SRT files become WebVTT renditions sub_<lang> (segmented N.vtt
    // plus subtitles.vtt). Only on a whole-master run (no span), so that chunked
    // encodes produce them once: the engine turns them off on all but one task.
    bool subtitles = true;
    std::vector<SidecarText> sidecar_text;
    // Common encryption of every audio and video rendition (scheme "" = clear);
    // text renditions stay clear (WebVTT has no CENC form).
    EncryptionConfig encryption;
    // Stills from the decode: a thumbnail (long side thumbnail_long pixels) at every
    // thumbnail_interval seconds of the output timeline, and the best-scored one
    // again at poster size (long side poster_long, never above the source's) as the
    // poster. 0 = none. Video runs only; a span takes those inside it.
    double thumbnail_interval = 0.0;
    int thumbnail_long = 160;
    int poster_long = 1280;
};

// progress: fraction done in [0, 1]; called at most ~10 times a second, from a
// worker thread, never while holding internal locks.
using ProgressFn = std::function<void(double)>;

class Transcoder {
public:
    explicit Transcoder(TranscodeConfig config);
    ~Transcoder();
    Transcoder(const Transcoder&) = delete;
    Transcoder& operator=(const Transcoder&) = delete;

    // Runs the whole ladder. Blocking; the caller's thread demuxes and decodes, each
    // rung and the audio run on threads of their own. Masters are normalised on the
    // way: deinterlaced (bwdif, pictures flagged interlaced), rotated upright
    // (display matrix), made constant-rate (fps-filter semantics), scaled to even
    // sizes with square pixels keeping the display aspect ratio, converted to 8-bit
    // 4:2:0; audio resampled to audio_sample_rate and down/up-mixed to
    // audio_channels. Time zero is the first video picture (audio trimmed/padded).
    // Every rung gets an IDR exactly at each gop_seconds boundary (closed GOPs, no
    // scene cuts). Throws std::invalid_argument for a bad config, InvalidDataError
    // (with the decoder's own messages) for corrupt masters, NotFoundError for a
    // missing file/decoder/encoder, IOError for output failures, CancelledError
    // when cancel() was called. A failure or cancel() poisons the object: run once.
    // With a span: the decode seeks to the keyframe at or before span_start, drops
    // every normalised frame before it and stops at span_end; the frame grid, the
    // forced keyframes, segment numbers and tfdt equal the one-piece run's, so
    // init.mp4 (same codec configuration) serves every chunk. Audio of a span is
    // encoded with a one-frame pre-roll from before span_start and cut at its
    // packets (AAC's 1024-sample frames do not meet segment boundaries exactly);
    // audio of the whole master (span 0..0) is the one-piece rendition. Progress is
    // the fraction of the span done; duration_seconds the span's encoded length.
    PipelineResult run(const ProgressFn& progress);

    // Safe from any thread; run() returns (throws CancelledError) within a second.
    void cancel();

private:
    TranscodeConfig config_;
    std::atomic<bool> cancelled_{false};
};

}  // namespace cdlc
