#include "remux/fast_path.h"

#include <algorithm>
#include <cstring>

namespace cdlc::remux {

namespace {

// Top-level boxes (ISO/IEC 14496-12 §4.2); empty when the file is not ISO-BMFF.
std::vector<std::pair<uint64_t, uint64_t>> mdat_payloads(int fd, uint64_t file_size) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    uint64_t pos = 0;
    while (pos + 8 <= file_size) {
        uint8_t h[16];
        if (!pread_all(fd, h, 8, pos)) return {};
        uint64_t size = (uint64_t(h[0]) << 24) | (uint64_t(h[1]) << 16) | (uint64_t(h[2]) << 8) | h[3];
        uint64_t header = 8;
        if (size == 1) {
            if (pos + 16 > file_size || !pread_all(fd, h + 8, 8, pos + 8)) return {};
            size = 0;
            for (int i = 8; i < 16; ++i) size = (size << 8) | h[i];
            header = 16;
        } else if (size == 0) {
            size = file_size - pos;
        }
        if (size < header || size > file_size - pos) return out;  // trailing junk: stop here
        if (std::memcmp(h + 4, "mdat", 4) == 0) out.emplace_back(pos + header, pos + size);
        pos += size;
    }
    return out;
}

int skip_mdat_read(void* opaque, uint8_t* buf, int n) {
    auto* io = static_cast<SkipMdatIO*>(opaque);
    if (io->pos >= io->size) return AVERROR_EOF;
    const uint64_t begin = io->pos, end = std::min<uint64_t>(io->pos + uint64_t(n), io->size);
    uint64_t p = begin;
    for (const auto& [mb, me] : io->mdat) {
        if (p >= end) break;
        if (me <= p) continue;
        if (mb > p) {  // real bytes up to this mdat payload
            const uint64_t upto = std::min(mb, end);
            if (!pread_all(io->fd, buf + (p - begin), upto - p, p)) return AVERROR(EIO);
            p = upto;
        }
        if (p < end && p >= mb) p = std::min(me, end);  // payload: left as is
    }
    if (p < end && !pread_all(io->fd, buf + (p - begin), end - p, p)) return AVERROR(EIO);
    io->pos = end;
    return static_cast<int>(end - begin);
}

int64_t skip_mdat_seek(void* opaque, int64_t offset, int whence) {
    auto* io = static_cast<SkipMdatIO*>(opaque);
    whence &= ~AVSEEK_FORCE;
    if (whence == AVSEEK_SIZE) return static_cast<int64_t>(io->size);
    int64_t target = offset;
    if (whence == SEEK_CUR) target += static_cast<int64_t>(io->pos);
    else if (whence == SEEK_END) target += static_cast<int64_t>(io->size);
    else if (whence != SEEK_SET) return AVERROR(EINVAL);
    if (target < 0) return AVERROR(EINVAL);
    io->pos = static_cast<uint64_t>(target);
    return target;
}

}  // namespace

std::unique_ptr<FastSource> open_fast_source(const std::string& input, const AVFormatContext* probed) {
    if (!std::strstr(probed->iformat->name, "mp4")) return nullptr;
    auto src = std::make_unique<FastSource>();
    src->file = MappedFile::open(input);
    if (!src->file) return nullptr;
    const int raw_fd = src->file->fd();
    src->io.fd = raw_fd;
    src->io.size = src->file->size();
    src->io.mdat = mdat_payloads(raw_fd, src->io.size);
    if (src->io.mdat.empty()) return nullptr;
    // Small on purpose: avio_read() hands reads larger than its buffer straight
    // to skip_mdat_read(), so video samples are neither read nor copied at all.
    constexpr int kBuffer = 4096;
    auto* buffer = static_cast<uint8_t*>(av_malloc(kBuffer));
    if (!buffer) return nullptr;
    src->avio = avio_alloc_context(buffer, kBuffer, 0, &src->io, skip_mdat_read, nullptr, skip_mdat_seek);
    if (!src->avio) {
        av_free(buffer);
        return nullptr;
    }
    src->fmt = avformat_alloc_context();
    if (!src->fmt) return nullptr;
    src->fmt->pb = src->avio;
    // No parsers (they would read the skipped payload); the mov demuxer sets pts,
    // dts, duration and key flags itself from the sample tables.
    src->fmt->flags |= AVFMT_FLAG_CUSTOM_IO | AVFMT_FLAG_NOPARSE | AVFMT_FLAG_NOFILLIN;
    if (avformat_open_input(&src->fmt, input.c_str(), probed->iformat, nullptr) < 0) {
        src->fmt = nullptr;  // freed by avformat_open_input on failure
        return nullptr;
    }
    if (src->fmt->nb_streams != probed->nb_streams) return nullptr;
    return src;
}

}  // namespace cdlc::remux
