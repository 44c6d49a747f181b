// What the stages of one transcode share: the stop flag with the first failure
// (RunState), and the thread + bounded queue skeleton of the stages that run on
// threads of their own (QueueWorker: the rung workers and the audio workers).
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "transcode/queue.h"

namespace cdlc::transcode {

// Shared by all stages of one run: the stop flag and the first failure.
struct RunState {
    std::atomic<bool>& stop;
    std::mutex mutex;
    std::exception_ptr error;

    explicit RunState(std::atomic<bool>& s) : stop(s) {}
    void fail(std::exception_ptr e) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (!error) error = std::move(e);
        }
        stop = true;
    }
    std::exception_ptr first_error() {
        std::lock_guard<std::mutex> lock(mutex);
        return error;
    }
};

// A stage on its own thread, fed through a bounded queue by the demux thread.
// Derived (CRTP, so the per-item call is a direct one) provides
//   consume(raw item pointer)  for each item popped,
//   flush()                    once the queue is closed and drained (encoder EOF),
//   finish()                   after a flush that the stop flag did not cut short.
// Any exception stops the whole run through RunState::fail. The owner joins the
// thread before Derived's members go (Derived's destructor or an explicit join()).
template <class Derived, class Item>
class QueueWorker {
public:
    QueueWorker(RunState& state, size_t capacity) : state_(state), queue_(capacity, state.stop) {}
    QueueWorker(const QueueWorker&) = delete;
    QueueWorker& operator=(const QueueWorker&) = delete;

    void start() { thread_ = std::thread([this] { loop(); }); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }
    bool push(Item item, const std::function<void()>& on_wait) { return queue_.push(std::move(item), on_wait); }
    void close() { queue_.close(); }

protected:
    ~QueueWorker() = default;

    RunState& state_;

private:
    void loop() {
        Derived& self = *static_cast<Derived*>(this);
        try {
            Item item;
            while (queue_.pop(item)) {
                self.consume(item.get());
                item.reset();
            }
            if (state_.stop) return;
            self.flush();
            if (state_.stop) return;
            self.finish();
        } catch (...) {
            state_.fail(std::current_exception());
        }
    }

    BoundedQueue<Item> queue_;
    std::thread thread_;
};

}  // namespace cdlc::transcode
