#include "io/write_pool.h"

#include <algorithm>

namespace cdlc {

WritePool::WritePool(unsigned threads, size_t max_queued) : max_queued_(std::max<size_t>(1, max_queued)) {
    if (threads == 0) threads = std::clamp(std::thread::hardware_concurrency(), 1u, kMaxThreads);
    threads_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

WritePool::~WritePool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        queue_.clear();
    }
    work_.notify_all();
    room_.notify_all();
    for (std::thread& t : threads_) t.join();
}

void WritePool::rethrow_locked(std::unique_lock<std::mutex>& lock) {
    if (!error_) return;
    std::exception_ptr e = error_;
    error_ = nullptr;
    queue_.clear();  // later segments of a failed job are not worth writing
    lock.unlock();
    std::rethrow_exception(e);
}

void WritePool::submit(std::function<void()> job) {
    std::unique_lock<std::mutex> lock(mu_);
    room_.wait(lock, [&] { return queue_.size() < max_queued_ || error_ || stop_; });
    rethrow_locked(lock);
    queue_.push_back(std::move(job));
    lock.unlock();
    work_.notify_one();
}

void WritePool::wait() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_.wait(lock, [&] { return (queue_.empty() && running_ == 0) || error_; });
    // A failure: let the jobs already running end before the caller cleans up.
    idle_.wait(lock, [&] { return running_ == 0; });
    rethrow_locked(lock);
}

void WritePool::run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
        work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        std::function<void()> job = std::move(queue_.front());
        queue_.pop_front();
        ++running_;
        lock.unlock();
        room_.notify_one();
        std::exception_ptr failed;
        try {
            job();
        } catch (...) {
            failed = std::current_exception();
        }
        job = nullptr;  // release the job's buffers outside the lock
        lock.lock();
        --running_;
        if (failed && !error_) {
            error_ = failed;
            queue_.clear();
        }
        if (failed) room_.notify_all();
        if ((queue_.empty() && running_ == 0) || failed) idle_.notify_all();
    }
}

}  // namespace cdlc
