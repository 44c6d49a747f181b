// Segment files written on worker threads. The copy path is bound by the kernel
// copying sample bytes into the page cache (perf: most of its time is in
// copy_folio_from_iter); each segment is its own file, so the copies of several
// segments run on several cores while the demuxer keeps going.
//
// A job's failure is kept and rethrown by the next submit() or by wait(), so the
// caller reports it as if the write had been synchronous. Destroying the pool
// drops jobs not yet started and joins the threads (a job in progress finishes).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace cdlc {

class WritePool {
public:
    // threads == 0: one per core, at most kMaxThreads. max_queued bounds the
    // memory held by jobs waiting to run (submit blocks while it is reached).
    explicit WritePool(unsigned threads = 0, size_t max_queued = 16);
    ~WritePool();
    WritePool(const WritePool&) = delete;
    WritePool& operator=(const WritePool&) = delete;

    void submit(std::function<void()> job);
    // Every submitted job has run; rethrows the first failure.
    void wait();

    static constexpr unsigned kMaxThreads = 4;

private:
    void run();
    void rethrow_locked(std::unique_lock<std::mutex>& lock);

    std::mutex mu_;
    std::condition_variable work_, room_, idle_;
    std::deque<std::function<void()>> queue_;
    size_t running_ = 0;
    size_t max_queued_;
    bool stop_ = false;
    std::exception_ptr error_;
    std::vector<std::thread> threads_;
};

}  // namespace cdlc
