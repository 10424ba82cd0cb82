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

// At most `burst` log lines per window of `interval_ns` (Seastar's logger::rate_limit): a churn
// of agents or a flood of bad frames cannot flood the log. A window opens at the first line
// allowed after the previous window ended. Not thread-safe; each user owns one.
//   if (limit.Allow(now_ns)) {
//     if (auto n = limit.TakeSuppressed()) log("... ({} similar lines not logged)", n);
//     log(...);
//   }
class LogRateLimit {
 public:
  // One line per `interval_ns`.
  explicit LogRateLimit(int64_t interval_ns) : LogRateLimit(interval_ns, 1) {}
  // Up to `burst` lines (at least one) per window of `interval_ns`.
  LogRateLimit(int64_t interval_ns, int burst)
      : interval_ns_(interval_ns), burst_(burst < 1 ? 1 : burst) {}
  // Whether a line may be logged at `now_ns` (monotonic). A refused call is counted;
  // TakeSuppressed() returns the number refused since it was last called.
  bool Allow(int64_t now_ns) {
    if (!started_ || now_ns - last_ns_ >= interval_ns_) {
      started_ = true;
      last_ns_ = now_ns;
      used_ = 1;
      return true;
    }
    if (used_ < burst_) {
      ++used_;
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
  int burst_;
  int64_t last_ns_ = 0;  // start of the current window
  int used_ = 0;         // lines allowed in the current window
  bool started_ = false;
  uint64_t suppressed_ = 0;
};

}  // namespace stallwatch
