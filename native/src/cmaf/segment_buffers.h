// Reused buffers for the segments of the encrypted copy path, which reads each
// segment's samples into memory of its own before encrypting them in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace cdlc {

// The buffers that encrypted segments are read into, reused: a fresh allocation
// of megabytes per segment costs a page fault and a zeroed page per 4 KiB (perf:
// clear_page). A buffer comes back when the last sample in it is written; the
// free list holds at most what was in flight at once, kMaxFree at most.
class SegmentBuffers final : public std::enable_shared_from_this<SegmentBuffers> {
public:
    SegmentBuffers() { free_.reserve(kMaxFree); }  // give() must not allocate

    // At least `size` bytes, not initialised; back to the free list when the last
    // copy of the pointer goes, on whichever thread that is.
    std::shared_ptr<uint8_t> take(size_t size) {
        uint8_t* p = nullptr;
        size_t capacity = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto best = free_.end();
            for (auto it = free_.begin(); it != free_.end(); ++it)
                if (it->second >= size && (best == free_.end() || it->second < best->second)) best = it;
            if (best != free_.end()) {
                p = best->first;
                capacity = best->second;
                free_.erase(best);
            }
        }
        if (!p) {
            capacity = size + size / 4;  // segments of a track differ a little
            p = new uint8_t[capacity];
        }
        std::shared_ptr<SegmentBuffers> self = shared_from_this();
        return std::shared_ptr<uint8_t>(p, [self, capacity](uint8_t* q) { self->give(q, capacity); });
    }

    ~SegmentBuffers() {
        for (auto& f : free_) delete[] f.first;
    }
    SegmentBuffers(const SegmentBuffers&) = delete;
    SegmentBuffers& operator=(const SegmentBuffers&) = delete;

private:
    static constexpr size_t kMaxFree = 32;

    void give(uint8_t* p, size_t capacity) noexcept {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (free_.size() < kMaxFree) {
                free_.emplace_back(p, capacity);
                return;
            }
        }
        delete[] p;
    }

    std::mutex mutex_;
    std::vector<std::pair<uint8_t*, size_t>> free_;
};

}  // namespace cdlc
