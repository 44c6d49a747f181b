// Source files as the copy path reads them: mapped read-only (their bytes only
// ever handed to writev), and read by position with pread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace cdlc {

// A source file mapped read-only for the copy path. Its bytes are never read in
// user space: they are only handed to writev(2), so a file truncated while we
// work turns into an EFAULT from the kernel (an IOError), never a SIGBUS.
class MappedFile {
public:
    // Null when the file cannot be mapped (not a regular file, empty).
    static std::shared_ptr<const MappedFile> open(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    int fd() const { return fd_; }
    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }

private:
    MappedFile() = default;
    int fd_ = -1;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

// Reads exactly n bytes at offset off (retrying on EINTR and short reads); false
// on an error or at the end of the file.
bool pread_all(int fd, uint8_t* buf, uint64_t n, uint64_t off);

}  // namespace cdlc
