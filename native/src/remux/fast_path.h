// The MP4 fast path of the copy path.
// For MP4/MOV masters whose samples need no rewriting, the sample bytes go from
// the source file, mapped, to the segment files with writev: the kernel copies
// each byte once (page cache to page cache) and no read buffer is touched.
// libavformat still does all the demuxing (timestamps, sample flags, edit lists),
// but over an I/O layer that serves the real bytes of everything except mdat payloads: reads of
// those return without copying, so the demuxer only hands over positions and
// sizes (AVPacket.pos/size) and never pays for the media bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include <libavformat/avformat.h>
}

#include "io/mapped_file.h"

namespace cdlc::remux {

struct SkipMdatIO {
    int fd = -1;
    uint64_t size = 0;
    uint64_t pos = 0;
    std::vector<std::pair<uint64_t, uint64_t>> mdat;  // [begin, end) of mdat payloads
};

// The demuxer for the fast path, or null when the input does not qualify.
struct FastSource {
    std::shared_ptr<const MappedFile> file;
    SkipMdatIO io;
    AVIOContext* avio = nullptr;
    AVFormatContext* fmt = nullptr;
    ~FastSource() {
        if (fmt) avformat_close_input(&fmt);
        if (avio) {
            av_freep(&avio->buffer);
            avio_context_free(&avio);
        }
    }
};

// The demuxer over `input` that skips mdat payloads, or null when the input does
// not qualify (not MP4/MOV, not mappable, no mdat, streams differ from `probed`).
std::unique_ptr<FastSource> open_fast_source(const std::string& input, const AVFormatContext* probed);

}  // namespace cdlc::remux
