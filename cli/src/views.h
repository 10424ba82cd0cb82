#pragma once
// The daemon views: `stallwatch stalls`, `stacks` and `top`. Parsing and formatting are pure
// functions of the daemon's JSON (docs: PRODUCT.md, /api/v1/*), tested on fixtures; fetching
// is in main.cc via HttpGet. Thread-safe.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "stallwatch/findings.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

// The stall findings of a /api/v1/stalls body: {"stalls":[…]} or a bare array.
StatusOr<std::vector<StallFinding>> ParseStallsBody(const std::string& body);

struct StallFilter {
  std::string service;   // "" = any
  std::string loop;      // "" = any
  int64_t since_ns = 0;  // only stalls that started at or after (Unix ns); 0 = any
  std::optional<bool> ongoing;
};
std::vector<StallFinding> FilterStalls(std::vector<StallFinding> stalls, const StallFilter& f);

struct StallsFormat {
  bool stacks = true;
  size_t max_frames = 12;  // per stack
  size_t max_stacks = 3;   // per stall
};
// Human listing: one header line per stall, then syscall/fd target, hint and stacks.
std::string FormatStalls(const std::vector<StallFinding>& stalls, const StallsFormat& format = {});

// Merged stacks of a /api/v1/stacks?format=json body ({"stacks":[{service, samples, frames}]}),
// most samples first, as indented text.
StatusOr<std::string> FormatStacksBody(const std::string& body, size_t max_frames = 20);

// One row of `top`.
struct LoopRow {
  std::string service;
  int64_t pid = 0;
  std::string loop;
  bool connected = true;
  double p50_s = 0, p99_s = 0, max_s = 0;
  double utilization = 0;
  bool has_window = false;
  uint64_t stalls_total = 0;
  double stalls_per_s = 0;  // from the previous refresh; 0 on the first
  double ongoing_s = 0;     // age of the ongoing stall, 0 when none
  std::string ongoing_class;
  std::string top_frame;  // of the ongoing stall, else of the loop's latest stall
};
using LoopKey = std::tuple<std::string, int64_t, std::string>;

// Rows from a /api/v1/loops body ({"loops":[…]}), with top frames from recent stalls and
// stalls/s against `previous` totals over `interval_s`.
StatusOr<std::vector<LoopRow>> ParseLoopsBody(const std::string& loops_body,
                                              const std::vector<StallFinding>& recent_stalls,
                                              const std::map<LoopKey, uint64_t>& previous,
                                              double interval_s);
// The screen of `top`: a header line and one line per loop, at most `width` columns.
std::string FormatTop(const std::vector<LoopRow>& rows, const std::string& source,
                      size_t width = 120);

}  // namespace stallwatch::cli
