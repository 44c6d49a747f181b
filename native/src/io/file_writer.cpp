#include "io/file_writer.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#include "common/error.h"

namespace cdlc {

namespace {

// At most this much per writev. Bigger writes let the page cache allocate
// large folios for the new file, and on the VMs we measured (bench/package.py)
// copying into those ran up to 4x slower in the median than 256 KiB writes.
constexpr size_t kMaxWrite = 256u << 10;

}  // namespace

FileWriter::FileWriter(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw IOError("open " + path + " for writing failed: " + std::strerror(errno));
}

FileWriter::~FileWriter() {
    if (fd_ >= 0) ::close(fd_);
}

void FileWriter::memory(const uint8_t* p, size_t n) {
    if (!n) return;
    if (!iov_.empty() && static_cast<const uint8_t*>(iov_.back().iov_base) + iov_.back().iov_len == p) {
        iov_.back().iov_len += n;
        return;
    }
    iov_.push_back({const_cast<uint8_t*>(p), n});
}

void FileWriter::close() {
    flush_iov();
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("closing");
}

void FileWriter::fail(const char* what) {
    if (errno == EFAULT)  // only a mapped source can fault: it shrank under us
        throw IOError("the source file changed size while being packaged (writing " + path_ + ")");
    throw IOError(std::string(what) + " " + path_ + " failed: " + std::strerror(errno));
}

void FileWriter::flush_iov() {
    size_t i = 0;
    while (i < iov_.size()) {
        part_.clear();
        size_t bytes = 0;
        for (size_t k = i; k < iov_.size() && part_.size() < IOV_MAX && bytes < kMaxWrite; ++k) {
            iovec v = iov_[k];
            v.iov_len = std::min(v.iov_len, kMaxWrite - bytes);
            part_.push_back(v);
            bytes += v.iov_len;
        }
        const ssize_t w = ::writev(fd_, part_.data(), static_cast<int>(part_.size()));
        if (w < 0) {
            if (errno == EINTR) continue;
            fail("writing");
        }
        if (w == 0) {
            errno = EIO;
            fail("writing");
        }
        // Skip what was written; a short write resumes inside an iovec.
        size_t done = static_cast<size_t>(w);
        while (i < iov_.size() && done >= iov_[i].iov_len) done -= iov_[i++].iov_len;
        if (i < iov_.size()) {
            iov_[i].iov_base = static_cast<uint8_t*>(iov_[i].iov_base) + done;
            iov_[i].iov_len -= done;
        }
    }
    iov_.clear();
}

}  // namespace cdlc
