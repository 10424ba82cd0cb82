#pragma once
// Classification of a stall from what the watchdog measured over it, and the hint that tells
// the user what to do. Pure.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stallwatch/findings.h"

namespace stallwatch::agent::internal {

struct ClassifierInput {
  int64_t wall_ns = 0;        // measured span (from the watchdog's baseline to now)
  int64_t cpu_ns = -1;        // loop thread CPU time over the span, -1 if unknown
  int64_t run_delay_ns = -1;  // loop thread run-queue wait over the span, -1 if unknown
  // Hypervisor steal time of a CPU over the span (/proc/stat, per CPU on average), -1 if
  // unknown: a thread that wanted a CPU lost it without queueing in this kernel's run queue, so
  // it counts as waiting for a CPU too (wait_ratio), and a stall mostly stolen says so in its hint.
  int64_t steal_ns = -1;
  int64_t suspended_ns = 0;  // time of the span during which the whole process was paused
  std::string syscall;       // most frequent syscall seen in samples ("" if none)
  std::string fd_target;
  bool seen_running = false;  // a sample saw the thread outside any syscall
  int samples = 0;            // /proc samples taken during the stall
  int syscall_samples = 0;    // of which in `syscall`
  // Function names of the sampled stacks (any order; "" for unknown frames): evidence for the
  // hint table, e.g. getaddrinfo under a blocked poll is a DNS lookup.
  std::vector<std::string> functions;
  // Where those frames are (any order): native frames' module paths and Python frames' files —
  // evidence for the hint table too, e.g. http/client.py under a poll is a blocking HTTP client.
  std::vector<std::string> places;
  // What runs the loop ("python", "node", "redis", "" …: LoopState::runtime): the hint's remedy
  // is said in that runtime's terms (RuntimeAdvice).
  std::string runtime;
};

struct Classification {
  StallClass stall_class = StallClass::kUnknown;
  double cpu_ratio = 0;
  double wait_ratio = 0;  // run-queue wait plus hypervisor steal, over the span
  std::string hint;
};

// A row of the hint table: a blocked stall whose evidence matches every non-empty field gets
// `hint`. Rows are tried in order; the first match wins; no match falls back to the generic
// hint of the class. Patterns are globs ('*' matches any run of characters, the rest literally).
struct HintRule {
  std::string_view name;                       // for tests and docs, e.g. "dns-udp"
  std::span<const std::string_view> syscalls;  // the syscall is one of these (empty: any)
  std::string_view fd_target;                  // glob on the fd's target ("": not used)
  std::span<const std::string_view> frames;    // some stack function matches one ("": not used)
  std::span<const std::string_view> places;    // some frame's module or Python file matches one
  std::string_view hint;                       // "%s" is replaced by "poll() on socket udp …"
};

// The table, in order.
std::span<const HintRule> HintRules();

// Whether `text` matches the glob `pattern` ('*' only).
bool GlobMatch(std::string_view pattern, std::string_view text);

// A runtime's own wording of a hint: for `runtime`, the hint of case `what` — a rule's name
// ("dns-udp", "dns-frames", "fsync", "http-client", "db-driver", "connect") or a class's fallback
// ("cpu", "sleep", "futex", "blocked") — is `hint` ("%s": the call, as in HintRule). Without a row,
// the libevent/C wording.
struct RuntimeAdvice {
  std::string_view runtime;
  std::string_view what;
  std::string_view hint;
};
std::span<const RuntimeAdvice> RuntimeAdviceTable();

Classification Classify(const ClassifierInput& in);
std::string HintFor(StallClass c, const std::string& syscall, const std::string& fd_target,
                    const std::vector<std::string>& functions = {}, std::string_view runtime = "",
                    const std::vector<std::string>& places = {});

}  // namespace stallwatch::agent::internal
