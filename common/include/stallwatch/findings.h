#pragma once
// The finding model: what the agent reports about a loop. Shared by the agent's outputs
// (JSON Lines, the daemon stream, the in-process snapshot), the daemon and the CLI.
// Plain value types; no threading contract beyond that of std::string/std::vector.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "stallwatch/export.h"

namespace stallwatch {

// Version of the JSON finding schema (docs/findings.md).
inline constexpr int kFindingSchemaVersion = 2;  // 2: frames carry "kind"

enum class StallClass { kUnknown, kCpu, kBlocked, kStarved, kSuspended };
STALLWATCH_EXPORT const char* StallClassName(
    StallClass c);  // "cpu", "blocked", "starved", "suspended", "unknown"
STALLWATCH_EXPORT bool ParseStallClass(const std::string& s, StallClass* out);

struct Frame {
  std::string function;  // demangled; "" when unknown
  std::string module;    // path of the ELF object
  uint64_t offset = 0;   // pc relative to the module's load address
  std::string file;      // source file where debug info exists, else ""
  int line = 0;
  // What the frame is: "native" (machine code of a module), "python" (a Python function: its
  // qualified name, file and line; no module) or "jit" (JIT code named from a perf map).
  std::string kind = "native";
};

struct Stack {
  uint64_t samples = 0;       // how many samples had exactly these frames
  std::string method;         // "signal" (running thread) or "proc" (blocked thread)
  std::vector<Frame> frames;  // innermost first, outermost last
};

struct StallFinding {
  std::string service;
  int64_t pid = 0;
  std::string loop;
  uint64_t stall_id = 0;  // unique per (pid, loop)
  int64_t start_ns = 0;   // Unix ns
  double duration_s = 0;  // so far when ongoing, exact when closed
  bool ongoing = false;
  bool estimated = false;  // true when start/end come from the probe only (±1 probe period)
  StallClass stall_class = StallClass::kUnknown;
  std::string syscall;    // "" when not in a syscall
  std::string fd_target;  // "" when not applicable
  double cpu_ratio = 0;   // loop thread CPU time / wall time over the stall
  double wait_ratio = 0;  // run-queue wait / wall time (CPU contention)
  std::string hint;
  std::vector<Stack> stacks;
  uint64_t samples_failed = 0;      // stack captures that failed during this stall
  uint64_t reports_suppressed = 0;  // stack reports suppressed by the rate limit (cumulative)
  std::string sampling_note;        // why stacks are missing, when they are
};

// A histogram as (bucket index, count) pairs of the agent's log-linear layout
// (see common/histogram.h); lets the daemon re-bucket exactly.
using SparseHistogram = std::vector<std::pair<uint32_t, uint64_t>>;

struct DelayFinding {
  std::string service;
  int64_t pid = 0;
  std::string loop;
  int64_t end_ns = 0;  // Unix ns at the end of the window
  double window_s = 0;
  uint64_t count = 0;  // probe ticks recorded (missed ticks included)
  double p50_s = 0, p90_s = 0, p99_s = 0, p999_s = 0, max_s = 0, sum_s = 0;
  double utilization = 0;
  bool utilization_estimated = false;  // true in probe-only mode (no loop boundaries)
  std::string boundary_source;         // "epoll_wait", "evwatch" or "probe"
  std::string loop_kind;               // "libevent" or "epoll" ("" from older agents)
  std::string runtime;                 // what runs the loop ("python", "node", "redis", …) or ""
  uint64_t iterations = 0;
  double iteration_sum_s = 0;
  SparseHistogram delay_buckets;
  SparseHistogram iteration_buckets;
  // Cumulative counters of this loop since attach, never rate-limited.
  uint64_t stalls_total = 0;
  uint64_t stack_samples_total = 0;
  uint64_t reports_suppressed_total = 0;
  uint64_t findings_dropped_total = 0;  // process-wide: dropped by the reporter's queue
};

// The blocking-call ledger of one loop over a window (docs/findings.md, kind "calls"): the
// known-blocking calls its thread made between waits, by call site, most total time first.
struct CallSiteStats {
  std::string call;  // "getaddrinfo", "usleep", … (a fixed list: docs/findings.md)
  Frame site;        // the caller: where the call returns to
  uint64_t count = 0;
  double total_s = 0;
  double max_s = 0;
  double p99_s = 0;  // within a factor of 2^(1/2) (the ledger's buckets), at most max_s
  // The window's calls by duration bucket (the ledger's layout, blocking_calls.h: index →
  // count, only buckets with calls). What the daemon's stallwatch_blocking_call_seconds sums.
  SparseHistogram buckets;
};

struct CallsFinding {
  std::string service;
  int64_t pid = 0;
  std::string loop;
  int64_t end_ns = 0;  // Unix ns at the end of the window
  double window_s = 0;
  uint64_t overflow = 0;  // calls in the window whose (site, call) found no room in the table
  std::vector<CallSiteStats> calls;
};

}  // namespace stallwatch
