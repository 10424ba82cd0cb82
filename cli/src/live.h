#pragma once
// The views that talk to the daemon or a file and the terminal: `stallwatch top`, `stalls`
// (once or --follow) and `stacks`. What they show is formatted by views.h. Called on the main
// thread only (they own the terminal and wait for keys on stdin).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>

#include "stallwatch/common/defaults.h"
#include "stallwatch/status.h"
#include "views.h"

namespace stallwatch::cli {

// Accepted refresh intervals of `top` and `stalls --follow`.
inline constexpr std::chrono::milliseconds kMinRefresh{100};
inline constexpr std::chrono::minutes kMaxRefresh{60};

// GET `path` of the daemon at `daemon` (http://host:port); a refused connection says how to fix it.
StatusOr<std::string> DaemonGet(const std::string& daemon, const std::string& path);

// Columns of the terminal on `fd` (TIOCGWINSZ), else $COLUMNS, else 80.
size_t TerminalColumns(int fd);

struct TopOptions {
  std::string daemon{defaults::kDaemonUrl};
  std::chrono::nanoseconds interval = std::chrono::seconds(1);
  int iterations = 0;  // 0: until q or Ctrl-C on a terminal, 1 otherwise
};
// Runs `top` until `cancel`, q, or the iterations are done. Fails (when stdout is not a
// terminal) on the first daemon error; on a terminal errors are shown and retried.
[[nodiscard]] Status RunTop(const TopOptions& options, const std::atomic<bool>* cancel);

struct StallsOptions {
  std::string daemon{defaults::kDaemonUrl};
  std::string file;  // a `file:` endpoint's JSON Lines instead of the daemon
  size_t limit = 20;
  StallFilter filter;
  std::chrono::nanoseconds since{0};  // 0: any
  StallsFormat format;
  bool json = false;
  bool follow = false;
  std::chrono::nanoseconds interval = std::chrono::seconds(1);  // of --follow
};
// Prints the stalls (and with `follow`, new ones until `cancel` or q). A --service/--loop that
// matches nothing known fails with the known names.
[[nodiscard]] Status RunStalls(const StallsOptions& options, const std::atomic<bool>* cancel);

struct StacksOptions {
  std::string daemon{defaults::kDaemonUrl};
  // "text" (merged by function and line, callers of the dispatch folded unless `full`),
  // "folded", "json" or "pprof" (a gzipped profile.proto).
  std::string format = "text";
  bool full = false;
  // The daemon's filters (docs/daemon.md); "" = any. since/until are passed as given (Unix ns,
  // RFC 3339 or a duration ago such as 10m): the daemon checks them.
  std::string service, loop, stall_class, since, until;
  std::string output;  // a file instead of stdout ("" or "-": stdout)
};
// The daemon path of a stacks query: /api/v1/stacks?format=…&service=…
std::string StacksPath(const StacksOptions& options);
// Prints (or writes to `output`) the daemon's stacks. A pprof profile is binary: it is refused
// on a terminal (FailedPrecondition naming -o) and written to a file or a pipe only.
[[nodiscard]] Status RunStacks(const StacksOptions& options);

// `stallwatch calls`: the blocking-call ledger's call sites, from the daemon.
struct CallsOptions {
  std::string daemon{defaults::kDaemonUrl};
  // The daemon's filters (docs/daemon.md, /api/v1/calls); "" / 0 = any. call and family are
  // checked by the daemon against its fixed list.
  std::string service, loop, call, family;
  int64_t pid = 0;
  size_t limit = 20;
  bool json = false;  // the daemon's JSON as served
};
// The daemon path of a calls query: /api/v1/calls?limit=…&service=…
std::string CallsPath(const CallsOptions& options);
[[nodiscard]] Status RunCalls(const CallsOptions& options);

}  // namespace stallwatch::cli
