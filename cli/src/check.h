#pragma once
// `stallwatch check [--max-stall 50ms] [--forbid getaddrinfo,sleep] [--max-blocking 5ms] -- CMD`:
// the CI gate. Runs CMD under the preload shim (RunUnderShim) with its findings going to a
// private file: endpoint, waits for it to end, then judges what its watched loops did: a stall
// longer than --max-stall, a call of a forbidden kind, a blocking call longer than
// --max-blocking. The judging (Evaluate) is pure and tested on finding lines.
//
// Threading: everything here runs on the caller's thread; RunCheck blocks until CMD ends.

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "run.h"
#include "stallwatch/findings.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

// Exit status of a check that found offences (the program's own status with --exit-status
// when it failed, which takes precedence).
inline constexpr int kCheckFailedExit = 3;
// The default stall limit: the agent's default stall threshold.
inline constexpr std::chrono::milliseconds kDefaultMaxStall{50};

struct CheckCriteria {
  std::chrono::nanoseconds max_stall = kDefaultMaxStall;
  // Names of calls ("getaddrinfo") or of families ("dns", "sleep", "sync", "connect", "wait",
  // "lock"); "sleep" is the family (nanosleep, clock_nanosleep, usleep, sleep).
  std::set<std::string> forbid;
  std::optional<std::chrono::nanoseconds> max_blocking;  // none: any length is fine
};

// The names --forbid accepts: every call of the ledger and every family.
std::vector<std::string> ForbiddableNames();
// Parses "getaddrinfo,sleep,fsync" (comma-separated, no empty item); InvalidArgument names the
// bad item and the accepted names.
StatusOr<std::set<std::string>> ParseForbidList(std::string_view text);
// Whether `call` (a ledger call name) is forbidden by `forbid`.
bool IsForbidden(const std::set<std::string>& forbid, const std::string& call);

// One offending call site, summed over the run's windows.
struct CallOffence {
  std::string loop;
  std::string call;
  Frame site;
  uint64_t count = 0;
  double total_s = 0;
  double max_s = 0;
  std::string reason;  // "forbidden" or "longer than 5ms"
};

struct StallOffence {
  std::string loop;
  double duration_s = 0;
  std::string stall_class;
  std::string syscall;
  // Innermost first, at most kTopFrames, from the first frame outside libc.
  std::vector<Frame> top_frames;
};

struct CheckReport {
  std::vector<CallOffence> calls;
  std::vector<StallOffence> stalls;
  uint64_t loops_seen = 0;        // distinct loops that reported anything
  uint64_t lines_unreadable = 0;  // lines of the findings file that were not findings
  bool clean() const { return calls.empty() && stalls.empty(); }
};

// Frames of a stall shown per offence.
inline constexpr size_t kTopFrames = 5;

// Judges the findings (JSON Lines, as the file: endpoint writes them). Pure.
CheckReport Evaluate(const std::vector<std::string>& lines, const CheckCriteria& criteria);
// The report as text (one line per offence, frames indented), or as one JSON object.
std::string FormatCheckText(const CheckReport& r, const CheckCriteria& criteria);
std::string FormatCheckJson(const CheckReport& r, const CheckCriteria& criteria, int program_exit);

struct CheckOptions {
  CheckCriteria criteria;
  bool json = false;
  bool exit_status = false;  // a failing program's own status wins over the check's
  RunOptions run;            // preload, service, sampling; threshold and endpoint are set here
};

// Runs the program and judges it. Returns the exit status: 0 clean, kCheckFailedExit when
// something offended, the program's status when it failed and exit_status is set, 127 when it
// could not be started, 2 when the check itself could not run (one line on stderr).
int RunCheck(const CheckOptions& opts, const std::vector<std::string>& command);

}  // namespace stallwatch::cli
