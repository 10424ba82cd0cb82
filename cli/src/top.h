#pragma once
// The table of `stallwatch top`: rows from the daemon's /api/v1/loops (and recent stalls),
// stalls per minute, and the screen. Pure functions of the daemon's JSON, tested on fixtures;
// the refresh loop and the terminal are in live.cc (RunTop). StallRate is not thread-safe (one
// per view); the functions are.

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "stallwatch/findings.h"
#include "stallwatch/status.h"
#include "views.h"

namespace stallwatch::cli {

// One row of `top`.
struct LoopRow {
  std::string service;
  int64_t pid = 0;
  std::string loop;
  bool connected = true;  // false: the process exited or its connection to the daemon closed
  bool silent = false;    // connected but no report for a while
  double p50_s = 0, p99_s = 0, max_s = 0;
  double utilization = 0;
  bool has_window = false;
  uint64_t stalls_total = 0;
  std::optional<uint64_t> stalls_per_min;  // stalls that started in the last minute
  double ongoing_s = 0;                    // age of the ongoing stall, 0 when none
  std::string ongoing_class;
  std::string top_frame;           // of the ongoing stall, else of the loop's latest stall
  bool top_frame_earlier = false;  // taken from an earlier stall (this one came without stacks)
};

// Stall counters of each loop over the last minute of refreshes, for stalls per minute whatever
// the refresh interval.
class StallRate {
 public:
  // Records the loop's counter at `now_ns` and drops samples older than a minute.
  void Add(const LoopKey& key, int64_t now_ns, uint64_t stalls_total);
  // Stalls counted over the samples kept (at most the last minute); nullopt before two samples.
  std::optional<uint64_t> LastMinute(const LoopKey& key) const;
  // Forgets the loops not in `keys` (gone from the daemon).
  void Retain(const std::set<LoopKey>& keys);

 private:
  std::map<LoopKey, std::deque<std::pair<int64_t, uint64_t>>> samples_;
};

// Rows from a /api/v1/loops body ({"loops":[…]}). Top frames come from the ongoing stall, else
// the loop's latest stall in `recent_stalls`, else `known` (updated from both). Stalls per
// minute: the larger of the stalls in `recent_stalls` that started within a minute of `now_ns`
// (Unix ns) and the counter increase in `rate` (which gets this refresh's counters). `rate` and
// `known` may be null. Live processes first, stalled now first, then by p99.
StatusOr<std::vector<LoopRow>> ParseLoopsBody(const std::string& loops_body,
                                              const std::vector<StallFinding>& recent_stalls,
                                              int64_t now_ns, StallRate* rate,
                                              KnownTopFrames* known);
// The screen of `top`: a header line and one line per loop, at most `width` columns; columns
// are dropped (P50, then MAX; UTIL and PID below ~60 columns) and names shortened with "…" only
// when they do not fit.
std::string FormatTop(const std::vector<LoopRow>& rows, const std::string& source,
                      size_t width = 80);

}  // namespace stallwatch::cli
