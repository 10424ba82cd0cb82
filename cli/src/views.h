#pragma once
// The daemon views: `stallwatch stalls` and `stacks` (`top`'s table is in top.h). Parsing and
// formatting are pure
// functions of the daemon's JSON (docs: PRODUCT.md, /api/v1/*) or of a `file:` endpoint's JSON
// Lines, tested on fixtures; fetching and the terminal are in live.cc. Thread-safe.

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "stallwatch/findings.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

// The stall findings of a /api/v1/stalls body: {"stalls":[…]} or a bare array.
StatusOr<std::vector<StallFinding>> ParseStallsBody(const std::string& body);

// The stalls of a `file:` endpoint's output (one finding per line). Each stall is reported
// several times (ongoing updates, then closed): the latest report of each (pid, loop, stall_id)
// is kept, with the stacks of an earlier report when the latest has none. Ongoing first, then
// newest first, as the daemon answers. Lines that are not a finding are counted, not fatal.
struct JsonLinesStalls {
  std::vector<StallFinding> stalls;
  std::vector<std::tuple<std::string, int64_t, std::string>> loops;  // every loop seen, sorted
  size_t lines = 0;                                                  // non-empty lines read
  size_t malformed = 0;        // lines that are not a JSON finding
  size_t first_malformed = 0;  // its line number (from 1), 0 when none
};
JsonLinesStalls ParseStallsJsonLines(const std::string& content);

struct StallFilter {
  std::string service;   // "" = any
  std::string loop;      // "" = any
  int64_t since_ns = 0;  // only stalls that started at or after (Unix ns); 0 = any
  std::optional<bool> ongoing;
};
std::vector<StallFinding> FilterStalls(std::vector<StallFinding> stalls, const StallFilter& f);

using LoopKey = std::tuple<std::string, int64_t, std::string>;  // service, pid, loop

// When a --service or --loop filter matches none of `known` (service, pid, loop): one line
// naming the known ones, e.g. "no loop 'x' in the daemon's stalls; known loops: main, worker-1".
// "" when the filter matches a known name (it then merely had no stalls).
std::string NoMatchMessage(const StallFilter& f, const std::vector<LoopKey>& known,
                           const std::string& where);

// Stacks as shown: frames at one function and line are one entry whatever their exact pc, and
// stacks that are then equal are merged (samples added), most samples first.
std::vector<Stack> MergeStacksForDisplay(const std::vector<Stack>& stacks);

// Index of the loop's dispatch entry (the outermost event_base_loop, event_base_dispatch,
// uv_run or aeMain frame), or npos: frames after it (main, option parsing, libc start) are the
// program's set-up, not the stall.
size_t DispatchEntryIndex(const Stack& stack);

// The frame that names the user's code: the first frame above the dispatch entry that is not
// in libc, the loader, the vDSO, libevent, the agent or another system library (/usr/lib, /lib);
// else the first frame outside libc/libevent/the agent; else the first named one. As
// "Foo::Bar (x.cc:12)" without the argument list; "" for an empty stack.
std::string UserTopFrame(const Stack& stack);
// UserTopFrame of the stall's most sampled stack; "" without stacks.
std::string StallTopFrame(const StallFinding& stall);

// The last known top frame of each loop, from its latest stall that had stacks; used for stalls
// that come without (a repeat of a known stack, or suppressed).
using KnownTopFrames = std::map<LoopKey, std::pair<int64_t, std::string>>;  // start_ns, frame
void LearnTopFrames(const std::vector<StallFinding>& stalls, KnownTopFrames* known);
// The known frame of the stall's loop from a stall that started before it; "" when none.
std::string EarlierTopFrame(const StallFinding& stall, const KnownTopFrames& known);

struct StallsFormat {
  bool stacks = true;
  bool full = false;       // every frame and stack: no folding below the dispatch entry
  size_t max_frames = 12;  // per stack (not with full)
  size_t max_stacks = 3;   // per stall (not with full)
};
// Human listing: one headline per stall (time, who, duration, class, top frame of the user's
// code), then syscall/fd target, hint and stacks. Consecutive closed stalls of one loop with the
// same class, syscall and stack are one entry ("×20, same stack"). `known` gives the top frame
// of stalls without stacks.
std::string FormatStalls(const std::vector<StallFinding>& stalls, const StallsFormat& format = {},
                         const KnownTopFrames& known = {});

// What a repeated stall must match (used by FormatStalls and StallFollower).
struct RepeatKey {
  LoopKey loop;
  StallClass stall_class = StallClass::kUnknown;
  std::string syscall, fd_target;
  bool has_stacks = false;
  std::string signature;  // the shown frames of its main stack, up to the dispatch entry
  std::string top;        // headline frame
  bool ongoing = false;
};

// `stalls --follow`: what to print for each poll (the daemon's newest stalls, or the lines
// appended to a file). A stall is printed when first seen and once more when an ongoing one
// closes; a closed stall that repeats the one printed just before is one short line
// ("×3 same stack: … stalled 201ms"). Not thread-safe: one caller.
class StallFollower {
 public:
  // With `json`, each new or closed stall is one JSON line (the finding format) instead.
  explicit StallFollower(StallsFormat format = {}, bool json = false)
      : format_(format), json_(json) {}
  // Marks these as printed (the listing shown at start) without output.
  void Seen(const std::vector<StallFinding>& stalls);
  // The text for what is new in `stalls` ("" when nothing is), oldest first.
  std::string Update(const std::vector<StallFinding>& stalls);

 private:
  using Id = std::tuple<int64_t, std::string, uint64_t>;  // pid, loop, stall id
  static constexpr size_t kMaxRemembered = 4096;
  // Whether `s` is news (unseen, or closed since seen ongoing); remembers it.
  bool Mark(const StallFinding& s);

  StallsFormat format_;
  bool json_;
  KnownTopFrames known_;
  std::map<Id, bool> closed_;  // stalls seen, and whether closed when seen
  std::deque<Id> order_;       // to forget the oldest
  std::optional<RepeatKey> last_;
  size_t repeats_ = 0;
};

// Merged stacks of a /api/v1/stacks?format=json body ({"stacks":[{service, samples, frames}]}),
// merged by function and line, most samples first, as indented text; the callers of the
// dispatch entry folded unless `full`.
StatusOr<std::string> FormatStacksBody(const std::string& body, bool full = false,
                                       size_t max_frames = 20);

// The call sites of a /api/v1/calls body ({"calls":[…], "sites", "overflow", "sites_not_kept"}),
// grouped by loop in the daemon's order (most total time first):
//   "getaddrinfo from resolve_backend (app.c:20): 1 243 calls, 38ms p99, 41ms max, 9.10s total
//   in 10 min". InvalidArgument when the body is not that document.
StatusOr<std::string> FormatCallsBody(const std::string& body);

// Columns on a terminal (UTF-8: continuation bytes take none).
size_t DisplayWidth(const std::string& s);

}  // namespace stallwatch::cli
