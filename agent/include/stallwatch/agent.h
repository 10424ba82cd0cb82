#pragma once
// stallwatch C++ API: attach the stall-diagnostics agent to a libevent event_base.
//
//   auto agent = stallwatch::Agent::Attach(base, {.stall_threshold = 50ms});
//
// Threading: Attach and the destructor (detach) are called on the loop thread, or on any thread
// while the loop is not running. Snapshot() may be called on any thread. Hooks in Options are
// called on the agent's reporter thread, never on the loop thread.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "stallwatch/findings.h"
#include "stallwatch/status.h"

struct event_base;

namespace stallwatch {

enum class SamplingMode {
  kOff,        // no stacks
  kOn,         // stacks of running loop threads via a signal; blocked threads are never signalled
  kSignalAll,  // also signal blocked threads: may make their syscall return EINTR (docs/design)
};

// Where the watchdog (stall detection, classification, stacks, reporting) runs.
enum class WatchdogMode {
  // A process of its own when the program has never had a second thread at the first attach and
  // no hooks are set (the program stays single-threaded, keeping glibc's and the kernel's
  // single-threaded fast paths); otherwise threads in this process.
  kAuto,
  kThread,   // threads in this process
  kProcess,  // a process of its own whenever possible (hooks still need kThread)
};

// The endpoint the agent reports to when none is configured: the daemon's default socket.
inline constexpr const char* kDefaultEndpoint = "unix:/run/stallwatch/agent.sock";

struct Options {
  std::string service;    // "" → STALLWATCH_SERVICE or the program name
  std::string loop_name;  // "" → "loop-N"
  // Name the loop after the thread that runs it, when the program named that thread
  // (pthread_setname_np); "main" for the main thread; else loop_name/"loop-N". Used by the
  // preload shim, where bases are created before anyone knows which thread will run them.
  bool loop_name_from_thread = false;
  std::chrono::nanoseconds stall_threshold = std::chrono::milliseconds(50);
  std::chrono::nanoseconds probe_interval = std::chrono::milliseconds(10);
  std::chrono::nanoseconds report_interval = std::chrono::seconds(10);  // delay windows
  // "unix:/path", "tcp:host:port", "file:/path" (JSON Lines), "stderr", "off".
  // "" → kDefaultEndpoint. Process-wide: the first attached agent's value is used.
  std::string endpoint;
  // File holding the daemon's shared token (stallwatchd --agent-token-file), presented in the
  // hello on tcp: endpoints only; re-read at every connection. "" → none. Process-wide.
  std::string token_file;
  SamplingMode sampling = SamplingMode::kOn;
  int sample_signal = 0;                        // 0 → SIGRTMIN+3. Process-wide.
  int max_stack_reports_per_minute = 12;        // per loop; more are suppressed and counted
  size_t queue_capacity = 4096;                 // findings buffered while the endpoint is away
  WatchdogMode watchdog = WatchdogMode::kAuto;  // Process-wide (STALLWATCH_WATCHDOG).
  // Called on the reporter thread for every finding (tests, embedding).
  std::function<void(const StallFinding&)> on_stall;
  std::function<void(const DelayFinding&)> on_delay;

  // Options from the STALLWATCH_* environment on top of `base`. A malformed value is reported
  // once on stderr with the accepted form, and base's value is kept.
  static Options FromEnvironment(Options base);
  static Options FromEnvironment();
};

struct DelayStats {
  uint64_t count = 0;
  std::chrono::nanoseconds p50{0}, p90{0}, p99{0}, p999{0}, max{0};
  double utilization = 0;
};

struct LoopSnapshot {
  std::string service;
  std::string loop;
  int64_t tid = 0;              // 0 until the loop thread has run
  std::string boundary_source;  // "epoll_wait", "evwatch" or "probe"
  DelayStats since_attach;
  std::optional<DelayFinding> last_window;
  uint64_t iterations = 0;
  uint64_t stalls_total = 0;
  std::vector<StallFinding> recent_stalls;  // closed, oldest first, at most 64
  std::optional<StallFinding> ongoing;
  std::string sampling_status;  // "ok" or why stacks are unavailable
  std::string watchdog;         // "thread" or "process" (stallwatch-watchdog, pid below)
  int64_t watchdog_pid = 0;
};

namespace internal {
class LoopContext;
}

class Agent {
 public:
  // Attaches to `base`. Fails (without touching the loop) when base is null, when the probe
  // cannot be created, or when too many loops are attached.
  static StatusOr<std::unique_ptr<Agent>> Attach(event_base* base, Options options = {});
  ~Agent();  // detaches; see the threading note above
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  LoopSnapshot Snapshot() const;
  const std::string& loop_name() const;

 private:
  explicit Agent(std::shared_ptr<internal::LoopContext> ctx);
  std::shared_ptr<internal::LoopContext> ctx_;
};

}  // namespace stallwatch
