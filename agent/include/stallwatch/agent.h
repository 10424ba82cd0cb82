#pragma once
// stallwatch C++ API: attach the stall-diagnostics agent to a libevent event_base.
//
//   auto agent = stallwatch::Agent::Attach(base, {.stall_threshold = 50ms});
//
// Threading: Attach and the destructor (detach) are called on the loop thread, or on any thread
// while the loop is not running. Snapshot() may be called on any thread, the loop thread
// included: it copies what the watchdog published and never waits for the watchdog while that
// samples or unwinds a stalled thread. Hooks in Options are called on the agent's hook thread
// (one per process, started by the first attach with hooks; findings in the order they were
// made), never on a loop thread nor on the watchdog; when the destructor returns, the loop's
// findings have been through its hooks and they are not called again. Hooks need the watchdog
// to be a thread of this process: with hooks set it never starts as a process of its own, and
// an attach with hooks fails when it already runs as one (WatchdogMode).

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "stallwatch/export.h"
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

// The endpoint the agent reports to when none is configured: the daemon's default socket
// (stallwatch/common/defaults.h, kAgentEndpoint; agent/src/options.cc checks they agree).
inline constexpr const char* kDefaultEndpoint = "unix:/run/stallwatch/agent.sock";
// Defaults of the settings the environment can also give (see Options).
inline constexpr std::chrono::milliseconds kDefaultStallThreshold{50};
inline constexpr std::chrono::milliseconds kDefaultProbeInterval{10};
inline constexpr std::chrono::seconds kDefaultReportInterval{10};
inline constexpr int kDefaultMaxStackReportsPerMinute = 12;

// Agent settings. Every setting is resolved at attach, field by field: a value set here in code
// wins; a field left unset (an empty optional, "" or 0) takes its STALLWATCH_* variable; without
// one, the default. So `Agent::Attach(base, {.stall_threshold = 50ms})` keeps 50 ms whatever
// STALLWATCH_THRESHOLD says, while STALLWATCH_SERVICE (e.g. from the ops drop-in) still names
// the service. A malformed variable is reported once on stderr with the accepted forms, and the
// default is used; a malformed field set in code makes Attach fail.
struct Options {
  std::string service;    // "" → STALLWATCH_SERVICE, else the program name. Process-wide.
  std::string loop_name;  // "" → "loop-N"
  // Name the loop after the thread that runs it, when the program named that thread
  // (pthread_setname_np); "main" for the main thread; else loop_name/"loop-N". Used by the
  // preload shim, where bases are created before anyone knows which thread will run them.
  bool loop_name_from_thread = false;
  // A loop making no progress for longer than this is a stall.
  // Unset → STALLWATCH_THRESHOLD, else kDefaultStallThreshold (50ms). At least 1ms.
  std::optional<std::chrono::nanoseconds> stall_threshold;
  // Probe period. Unset → STALLWATCH_INTERVAL, else kDefaultProbeInterval (10ms). At least 100us.
  std::optional<std::chrono::nanoseconds> probe_interval;
  // Delay-statistics window. Unset → STALLWATCH_REPORT_INTERVAL, else 10s. At least 100ms.
  std::optional<std::chrono::nanoseconds> report_interval;
  // "unix:/path", "tcp:host:port", "file:/path" (JSON Lines), "stderr", "off".
  // "" → STALLWATCH_ENDPOINT, else kDefaultEndpoint. Process-wide: the first attached agent's
  // value is used.
  std::string endpoint;
  // File holding the daemon's shared token (stallwatchd --agent-token-file), presented in the
  // hello on tcp: endpoints only; re-read at every connection. "" → STALLWATCH_TOKEN_FILE, else
  // none. Process-wide.
  std::string token_file;
  // Unset → STALLWATCH_SAMPLING, else kOn. Process-wide.
  std::optional<SamplingMode> sampling;
  // A real-time signal (SIGRTMIN..SIGRTMAX). 0 → STALLWATCH_SIGNAL, else SIGRTMIN+3. Process-wide.
  int sample_signal = 0;
  // Stack budget per loop, by stack signature (the stack's top frames): the first stall with a
  // signature not seen before always gets its stacks; a stall whose stack repeats a known one
  // gets its stacks only within this many per minute, else it is counted (its samples and
  // reports_suppressed) and its finding's sampling_note names the stall and the frame it
  // repeats. Unset → STALLWATCH_MAX_STACK_REPORTS, else kDefaultMaxStackReportsPerMinute (12).
  // At least 0.
  std::optional<int> max_stack_reports_per_minute;
  size_t queue_capacity = 4096;  // findings buffered while the endpoint is away
  // Unset → STALLWATCH_WATCHDOG, else kAuto. Process-wide.
  std::optional<WatchdogMode> watchdog;
  // Called on the agent's hook thread for every finding of the loop (tests, embedding); see the
  // threading note at the top.
  std::function<void(const StallFinding&)> on_stall;
  std::function<void(const DelayFinding&)> on_delay;

  // `base` with every unset field taken from the STALLWATCH_* environment, else its default
  // (every optional is set in the result). Fields set in `base` are kept. Attach does this
  // itself; call it to see what an attach would use. Any thread.
  STALLWATCH_EXPORT static Options FromEnvironment(Options base);
  STALLWATCH_EXPORT static Options FromEnvironment();
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
  std::string kind;             // "libevent" (Attach) or "epoll" (AttachEpoll)
  std::string runtime;          // what runs the loop where it can be told ("python", …), or ""
  std::string boundary_source;  // "epoll_wait", "evwatch" or "probe"
  DelayStats since_attach;
  std::optional<DelayFinding> last_window;
  uint64_t iterations = 0;
  uint64_t stalls_total = 0;
  std::vector<StallFinding> recent_stalls;  // closed, oldest first, at most 64
  std::optional<StallFinding> ongoing;
  std::string sampling_status;  // "ok" or why stacks are unavailable
  // Findings of this process dropped before they reached the endpoint (the queue was full while
  // the endpoint was away or refused them); also in every delay finding and, through the daemon,
  // stallwatch_agent_findings_dropped_total.
  uint64_t findings_dropped = 0;
  std::string watchdog;  // "thread" or "process" (stallwatch-watchdog, pid below)
  int64_t watchdog_pid = 0;
};

namespace internal {
class LoopContext;
}

class Agent {
 public:
  // Attaches to `base`. Fails (without touching the loop) when base is null, when libevent is not
  // loaded, when a setting is out of range, when hooks are set but the watchdog runs in a process
  // of its own, when the probe cannot be created, or when too many loops are attached. A base
  // that is already watched (the program attaches its own agent and runs under the preload shim)
  // is watched once: Attach logs a warning and returns an agent for the existing loop.
  STALLWATCH_EXPORT static StatusOr<std::unique_ptr<Agent>> Attach(event_base* base,
                                                                   Options options = {});
  // Attaches to an event loop that is not libevent's: the calling thread's loop, which waits for
  // its events on `epfd` (epoll_wait, epoll_pwait or epoll_pwait2 through libc). Called on that
  // thread. The probe's timerfd joins the host's epoll set when this process created it (its
  // events never reach the host), else it waits beside it in an epoll fd of the agent's
  // (docs/design.md "Foreign loops"). The preload shim calls it for every loop it finds by how
  // the loop waits. Fails as Attach does, and when `epfd` is not an epoll fd or is watched already.
  STALLWATCH_EXPORT static StatusOr<std::unique_ptr<Agent>> AttachEpoll(int epfd,
                                                                        Options options = {});
  STALLWATCH_EXPORT ~Agent();  // detaches; see the threading note above
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  STALLWATCH_EXPORT LoopSnapshot Snapshot() const;
  STALLWATCH_EXPORT const std::string& loop_name() const;

 private:
  explicit Agent(std::shared_ptr<internal::LoopContext> ctx);
  std::shared_ptr<internal::LoopContext> ctx_;
};

}  // namespace stallwatch
