#pragma once
// Text that goes into a log line or an error message from outside the process (an agent-chosen
// service or loop name, a request's query): escaped so that the line stays one bounded line.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace stallwatch {

// `s` with backslash as "\\", control characters (and DEL) as "\xNN", cut to at most `max_bytes`
// bytes at a UTF-8 character boundary with "..." appended when cut.
std::string EscapeForLog(std::string_view s, size_t max_bytes = 128);

// At most one log line per `interval_ns` (Seastar's logger::rate_limit): a churn of agents or a
// flood of bad frames cannot flood the log. Not thread-safe; each user owns one.
//   if (auto skipped = limit.Allow(now_ns)) log("... ({} similar lines not logged)", *skipped - 1)
class LogRateLimit {
 public:
  explicit LogRateLimit(int64_t interval_ns) : interval_ns_(interval_ns) {}
  // Whether a line may be logged at `now_ns` (monotonic). A refused call is counted;
  // suppressed() is the number refused since the last allowed one (reset by an allowed call,
  // after the caller read it through TakeSuppressed()).
  bool Allow(int64_t now_ns) {
    if (!started_ || now_ns - last_ns_ >= interval_ns_) {
      started_ = true;
      last_ns_ = now_ns;
      return true;
    }
    ++suppressed_;
    return false;
  }
  // The number of refused lines since the last call, then zero.
  uint64_t TakeSuppressed() {
    const uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
  }

 private:
  int64_t interval_ns_;
  int64_t last_ns_ = 0;
  bool started_ = false;
  uint64_t suppressed_ = 0;
};

}  // namespace stallwatch
