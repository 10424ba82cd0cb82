#pragma once
// The per-stall stack records behind filtered /api/v1/stacks queries: what each report of a
// stall added to each of its stacks (service, loop, class, the time span the report covers,
// samples, stall time), oldest first, bounded in count and bytes. The merged stack table of
// stack_store.cc holds every stack since start-up but cannot say which loop, class or time its
// samples came from; these records can, for as far back as they reach.
//
// Pure (no I/O, time passed in). Threading: not thread-safe; the Registry calls it on the
// daemon's loop thread only.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "stallwatch/findings.h"

namespace stallwatch::daemon {

// A time bound of a stacks query: a Unix time, or a duration before the time of the request.
struct TimeBound {
  int64_t ns = 0;    // Unix ns, or with `ago` a duration in ns
  bool ago = false;  // relative to the request ("10m": ten minutes ago)
  int64_t At(int64_t now_unix_ns) const { return ago ? now_unix_ns - ns : ns; }
  bool operator==(const TimeBound&) const = default;
};

// What GET /api/v1/stacks selects. No field set: every stack since start-up (the merged table).
struct StackQuery {
  std::optional<std::string> service;
  std::optional<std::string> loop;
  std::optional<StallClass> stall_class;
  std::optional<TimeBound> since;  // samples taken at or after
  std::optional<TimeBound> until;  // samples taken at or before
  bool filtered() const {
    return service.has_value() || loop.has_value() || stall_class.has_value() ||
           since.has_value() || until.has_value();
  }
};

// One stack of a reply, merged over what a query selected. `stack` points into the store it
// came from and is valid until that store next changes (the same turn of the daemon's loop).
struct StackTotal {
  std::string service;
  std::string loop;              // "" when merged over loops
  std::string stall_class;       // "" when merged over classes
  const Stack* stack = nullptr;  // frames only: its `samples` is not this total's
  uint64_t samples = 0;
  int64_t stall_ns = 0;  // the stack's share of stall time (docs/daemon.md)
};

class StackRecords {
 public:
  // Records kept at most, and bytes (records plus the distinct stacks they refer to, each once).
  StackRecords(size_t max_records, size_t max_bytes);

  // Records what one report of a stall added to one of its stacks: `samples` new samples (0
  // when the report only added stall time) and `stall_ns` of stall time, taken between
  // `from_ns` and `to_ns` (Unix). `key` is the stack's folded form (it names the service), the
  // identity of stacks across records; `stack` its frames, copied (trimmed) on first sight.
  // The oldest records are dropped to stay within the bounds.
  void Add(const std::string& key, const Stack& stack, const std::string& service,
           const std::string& loop, StallClass stall_class, int64_t from_ns, int64_t to_ns,
           uint64_t samples, int64_t stall_ns);

  // The records `q` selects (its time bounds resolved at `now_unix_ns`; a record matches when
  // its span overlaps [since, until]), summed by folded stack, in the order of their folded
  // form; `by_loop_and_class` also keeps loops and classes apart.
  std::vector<StackTotal> Select(const StackQuery& q, int64_t now_unix_ns,
                                 bool by_loop_and_class) const;

  // Samples of records dropped to stay within the bounds (of every service).
  uint64_t samples_not_kept() const { return samples_not_kept_; }
  // The latest end of a dropped record: from then on the records are complete; 0 while none was
  // dropped.
  int64_t complete_since_ns() const { return complete_since_ns_; }
  size_t size() const { return records_.size(); }
  size_t bytes() const { return bytes_; }

 private:
  struct Shape {
    Stack stack;  // trimmed as the daemon keeps stacks; samples unused
    size_t bytes = 0;
    size_t refs = 0;  // records that refer to it
  };
  using ShapeMap = std::map<std::string, Shape>;  // by folded stack
  struct Record {
    ShapeMap::iterator shape;
    std::string service, loop;
    StallClass stall_class = StallClass::kUnknown;
    int64_t from_ns = 0, to_ns = 0;
    uint64_t samples = 0;
    int64_t stall_ns = 0;
    size_t bytes = 0;  // of the record itself
  };
  void DropOldest();

  size_t max_records_, max_bytes_;
  std::deque<Record> records_;  // in arrival order
  ShapeMap shapes_;
  size_t bytes_ = 0;
  uint64_t samples_not_kept_ = 0;
  int64_t complete_since_ns_ = 0;
};

}  // namespace stallwatch::daemon
