// Package-only path: a master that already holds H.264/HEVC video and AAC audio is
// demuxed and its packets go straight to the CMAF segmenters (no decode). Segment
// boundaries follow the source's keyframes (at or after each target duration).
#pragma once

#include <string>

#include "cmaf/encryption.h"
#include "common/cue.h"
#include "common/media_types.h"

namespace cdlc {

// Renditions: "v<height>" for the first video stream, "audio" for the first audio
// stream, written to output_dir/<id>/. Containers: anything libavformat reads
// (MP4/MOV, Matroska, MPEG-TS, ...); H.264/HEVC (avcC/hvcC or Annex B) + AAC (raw
// or ADTS) or Opus. Video segments end at the source's first keyframe at or after
// each multiple of segment_seconds; audio segments end at the first audio frame at
// or after each video cut. The earliest first timestamp of the two streams
// becomes time 0 (A/V sync kept).
// Throws InvalidDataError when the codecs cannot be copied (the message names the
// codec and says to transcode instead), for corrupt or truncated input and for
// segment_seconds <= 0; NotFoundError for a missing file; IOError when writing
// fails. On error output_dir may hold partial files: publish only on success.
PipelineResult package_copy(const std::string& input, const std::string& output_dir,
                            double segment_seconds);

// What else a copy packages beside the master's own streams.
struct CopyOptions {
    std::vector<SidecarAudio> sidecar_audio;  // AAC/Opus files (others need a transcode)
    std::vector<SidecarText> sidecar_text;    // WebVTT / SRT files
    bool subtitles = true;                    // the master's text streams
    EncryptionConfig encryption;              // common encryption of audio and video
};

// Every audio stream of the master that can be copied (AAC, Opus) becomes a
// rendition: the first "audio", the others audio_<lang>; the first audio stream
// must be copyable (else InvalidDataError, as above), later ones that are not are
// listed in PipelineResult::skipped with the reason, like data streams, bitmap
// subtitles, attachments and extra video streams. Time zero is the first video
// keyframe; audio that starts up to 1 s before it (AAC priming) is kept and
// signalled with an edit list (TrackInfo::presentation_offset). Sidecar audio is
// aligned so its own first sample is time zero and cut at the video's cuts. Text
// streams (mov_text, subrip, webvtt, ass) and sidecar subtitles become WebVTT
// renditions sub_<lang> (N.vtt per segment_seconds, plus subtitles.vtt). A
// final audio segment shorter than half a segment joins the one before it.
// Sidecar subtitle files are parsed first: a bad one fails before any media work
// (InvalidDataError naming the file and line).
PipelineResult package_copy(const std::string& input, const std::string& output_dir,
                            double segment_seconds, const CopyOptions& options);

}  // namespace cdlc
