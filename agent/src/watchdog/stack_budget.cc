#include "watchdog/stack_budget.h"

#include <algorithm>
#include <utility>

namespace stallwatch::agent::internal {

void StackBudget::Start(int per_minute, int64_t now_ns) {
  per_minute_ = std::max(0, per_minute);
  tokens_ = per_minute_;
  refilled_ns_ = now_ns;
}

bool StackBudget::TakeToken(int64_t now_ns) {
  const double per_ns = per_minute_ / 60e9;
  tokens_ =
      std::min<double>(per_minute_, tokens_ + static_cast<double>(now_ns - refilled_ns_) * per_ns);
  refilled_ns_ = now_ns;
  if (tokens_ >= 1) {
    tokens_ -= 1;
    return true;
  }
  return false;
}

StackBudget::Decision StackBudget::Decide(uint64_t signature, uint64_t stall_id,
                                          const std::string& top_frame, int64_t now_ns) {
  Decision d;
  auto it = std::find_if(known_.begin(), known_.end(),
                         [&](const KnownStack& k) { return k.signature == signature; });
  if (it == known_.end()) {
    // A stack this loop has not seen: always reported, whatever the budget says (it may be the
    // one stall that names the culprit). It uses a token when one is left.
    (void)TakeToken(now_ns);
    known_.push_back({signature, stall_id, top_frame, 0});
    if (known_.size() > kMaxKnownStacks) {
      known_.pop_front();
    }
    return d;
  }
  // Most recently seen last: a signature that keeps repeating is never the one forgotten.
  KnownStack known = *it;
  known_.erase(it);
  if (!TakeToken(now_ns)) {
    d.stacks_allowed = false;
    ++reports_suppressed_total_;
    ++known.repeats_suppressed;
    d.sampling_note = "stack repeats stall " + std::to_string(known.stall_id) +
                      (known.top_frame.empty() ? "" : " (in " + known.top_frame + ")") +
                      ": sampled, not re-sent (repeated stacks beyond " +
                      std::to_string(per_minute_) + "/min per loop are counted; " +
                      std::to_string(known.repeats_suppressed) + " so far)";
  }
  known_.push_back(std::move(known));
  return d;
}

}  // namespace stallwatch::agent::internal
