#include "io/mapped_file.h"

#include <cerrno>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cdlc {

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nullptr;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        ::close(fd);
        return nullptr;
    }
    // Pre-faulted: the kernel's copy out of a mapping cannot fault pages in as
    // it goes; each miss costs a short copy, a zeroed destination range and a
    // retry (perf: memset in folio_zero_new_buffers). Masters past kPopulateMax
    // are faulted in as they are read instead of all up front.
    constexpr off_t kPopulateMax = off_t(4) << 30;
    const int flags = MAP_SHARED | (st.st_size <= kPopulateMax ? MAP_POPULATE : 0);
    void* base = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, flags, fd, 0);
    if (base == MAP_FAILED) {
        ::close(fd);
        return nullptr;
    }
    std::shared_ptr<MappedFile> f(new MappedFile());
    f->fd_ = fd;
    f->data_ = static_cast<const uint8_t*>(base);
    f->size_ = static_cast<uint64_t>(st.st_size);
    return f;
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
    if (fd_ >= 0) ::close(fd_);
}

bool pread_all(int fd, uint8_t* buf, uint64_t n, uint64_t off) {
    while (n > 0) {
        const ssize_t r = ::pread(fd, buf, n, static_cast<off_t>(off));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        buf += r;
        off += uint64_t(r);
        n -= uint64_t(r);
    }
    return true;
}

}  // namespace cdlc
