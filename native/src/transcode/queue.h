// Bounded single-producer / single-consumer queue between pipeline stages.
// Every wait is sliced (kPoll) so a stop flag (cancel() or another stage's failure)
// is noticed within that time even when the other side is stuck.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace cdlc {

template <class T>
class BoundedQueue {
public:
    static constexpr std::chrono::milliseconds kPoll{50};

    BoundedQueue(size_t capacity, const std::atomic<bool>& stop) : capacity_(capacity), stop_(stop) {}

    // Blocks while full. Returns false (and drops the item) when the pipeline stops.
    // `on_wait` runs between slices of a wait (progress reports from the producer).
    bool push(T item, const std::function<void()>& on_wait = {}) {
        std::unique_lock<std::mutex> lock(mutex_);
        while (items_.size() >= capacity_) {
            if (stop_.load()) return false;
            if (on_wait) {
                lock.unlock();
                on_wait();
                lock.lock();
                if (items_.size() < capacity_) break;
            }
            not_full_.wait_for(lock, kPoll);
        }
        if (stop_.load()) return false;
        items_.push_back(std::move(item));
        not_empty_.notify_one();
        return true;
    }

    // No more items after the ones queued; pop() returns false once they are taken.
    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        not_empty_.notify_all();
    }

    // Blocks while empty. False when closed and drained, or when the pipeline stops.
    bool pop(T& out) {
        std::unique_lock<std::mutex> lock(mutex_);
        while (items_.empty()) {
            if (stop_.load() || closed_) return false;
            not_empty_.wait_for(lock, kPoll);
        }
        if (stop_.load()) return false;
        out = std::move(items_.front());
        items_.pop_front();
        not_full_.notify_one();
        return true;
    }

private:
    size_t capacity_;
    const std::atomic<bool>& stop_;
    std::mutex mutex_;
    std::condition_variable not_full_, not_empty_;
    std::deque<T> items_;
    bool closed_ = false;
};

}  // namespace cdlc
