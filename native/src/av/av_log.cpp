#include "av/av_log.h"

#include <cstdarg>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>

extern "C" {
#include <libavutil/log.h>
}

namespace cdlc::av {

namespace {

std::mutex g_mutex;
std::map<std::string, std::deque<std::string>>* g_messages = nullptr;  // leaked on purpose:
                                                                       // libav may log at exit
thread_local int t_quiet = 0;
constexpr size_t kKeep = 3;

void capture(void* avcl, int level, const char* fmt, va_list vl) {
    if (t_quiet > 0) return;
    if (level <= AV_LOG_ERROR && avcl) {
        const AVClass* cls = *static_cast<AVClass* const*>(avcl);
        if (cls && cls->item_name) {
            va_list copy;
            va_copy(copy, vl);
            char buf[512];
            int n = std::vsnprintf(buf, sizeof(buf), fmt, copy);
            va_end(copy);
            if (n > 0) {
                std::string msg(buf);
                while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ' || msg.back() == '.')) msg.pop_back();
                std::lock_guard<std::mutex> lock(g_mutex);
                auto& q = (*g_messages)[cls->item_name(avcl)];
                q.push_back(msg);
                if (q.size() > kKeep) q.pop_front();
            }
        }
    }
    av_log_default_callback(avcl, level, fmt, vl);
}

}  // namespace

void install_log_capture() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_messages = new std::map<std::string, std::deque<std::string>>();
        // Library chatter (x264's "using cpu capabilities", stream info) is noise
        // in a server's log; keep errors. Leave an explicitly chosen level alone.
        if (av_log_get_level() == AV_LOG_INFO) av_log_set_level(AV_LOG_ERROR);
        av_log_set_callback(capture);
    });
}

std::string recent_errors(const std::string& name) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_messages) return {};
    auto it = g_messages->find(name);
    if (it == g_messages->end()) return {};
    std::string out;
    for (const auto& m : it->second) {
        if (!out.empty()) out += "; ";
        out += m;
    }
    return out;
}

void clear_errors(const std::string& name) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_messages) g_messages->erase(name);
}

QuietLogScope::QuietLogScope() { ++t_quiet; }
QuietLogScope::~QuietLogScope() { --t_quiet; }

}  // namespace cdlc::av
