#include "remux/tracks.h"

#include "common/error.h"

namespace cdlc::remux {

std::shared_ptr<const void> adopt(AVPacket* pkt) {
    AVPacket* held = av_packet_alloc();
    if (!held) throw Error("out of memory allocating a packet");
    av_packet_move_ref(held, pkt);
    return std::shared_ptr<const void>(held, [](const void* q) {
        AVPacket* h = static_cast<AVPacket*>(const_cast<void*>(q));
        av_packet_free(&h);
    });
}

std::string codec_name(AVCodecID id) {
    const char* n = avcodec_get_name(id);
    return n ? n : "unknown";
}

}  // namespace cdlc::remux
