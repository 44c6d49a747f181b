// FileWriter: one file written from memory pieces with writev (no gathering copy).
// Pieces that follow each other in memory (the samples of one chunk of a mapped
// source) go out as one iovec. Failures are IOError with one line naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <sys/uio.h>

namespace cdlc {

class FileWriter {
public:
    explicit FileWriter(const std::string& path);  // created or truncated
    ~FileWriter();
    FileWriter(const FileWriter&) = delete;
    FileWriter& operator=(const FileWriter&) = delete;

    // Queues [p, p + n): the memory must stay valid until close().
    void memory(const uint8_t* p, size_t n);
    // Writes what was queued and closes the file; throws IOError.
    void close();

private:
    [[noreturn]] void fail(const char* what);
    void flush_iov();

    std::string path_;
    int fd_ = -1;
    std::vector<iovec> iov_;
    std::vector<iovec> part_;  // the pieces of one writev call
};

}  // namespace cdlc
