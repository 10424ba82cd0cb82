#pragma once
// A loop's stack budget, by stack signature: the first stall with a signature the loop has not
// seen always gets its stacks; a stall whose stack repeats a known one gets them only while
// tokens last (`per_minute` a minute, refilled continuously), else it is counted and its note
// names the stall that has the stacks. Pure: fed signatures and times.
//
// Threading: not thread-safe; the watchdog engine owns one per loop.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

namespace stallwatch::agent::internal {

class StackBudget {
 public:
  // Signatures a loop remembers (the least recently seen is forgotten first).
  static constexpr size_t kMaxKnownStacks = 256;

  struct Decision {
    bool stacks_allowed = true;
    std::string sampling_note;  // when not allowed: which stall has these stacks
  };

  // A full bucket of `per_minute` tokens (at least 0) at `now_ns`.
  void Start(int per_minute, int64_t now_ns);

  // The stall `stall_id`, whose first stack has `signature` (its first named frame outside the
  // system libraries: `top_frame`, may be empty), at `now_ns`.
  Decision Decide(uint64_t signature, uint64_t stall_id, const std::string& top_frame,
                  int64_t now_ns);

  // Stalls whose stacks were counted, not reported, so far.
  uint64_t reports_suppressed_total() const { return reports_suppressed_total_; }
  size_t known_stacks() const { return known_.size(); }

 private:
  struct KnownStack {
    uint64_t signature = 0;
    uint64_t stall_id = 0;  // the first stall with it, which was reported with its stacks
    std::string top_frame;  // for the note
    uint64_t repeats_suppressed = 0;
  };

  bool TakeToken(int64_t now_ns);

  int per_minute_ = 0;
  double tokens_ = 0;
  int64_t refilled_ns_ = 0;
  std::deque<KnownStack> known_;  // least recently seen first, at most kMaxKnownStacks
  uint64_t reports_suppressed_total_ = 0;
};

}  // namespace stallwatch::agent::internal
