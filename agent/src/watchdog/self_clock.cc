#include "watchdog/self_clock.h"

#include <algorithm>

namespace stallwatch::agent::internal {
namespace {
constexpr int64_t kSecond = 1'000'000'000;
}  // namespace

void SelfClock::Account(const OwnClocks& from, const OwnClocks& to, int64_t intended_sleep_ns) {
  const int64_t span = to.mono_ns - from.mono_ns;
  int64_t unaccounted =
      span - (to.cpu_ns - from.cpu_ns) - (to.run_delay_ns - from.run_delay_ns) - intended_sleep_ns;
  if (read_steal_ &&
      (unaccounted > kSuspendedAtLeast.count() || to.mono_ns - steal_read_at_ >= kSecond)) {
    // The last reading was taken at the end of an earlier span: the steal since covers this one
    // (and perhaps a little before it, which errs towards "not suspended").
    const int64_t steal = read_steal_();
    if (unaccounted > kSuspendedAtLeast.count() && steal >= 0 && steal_ns_ >= 0) {
      unaccounted -= std::max<int64_t>(steal - steal_ns_, 0);
    }
    steal_ns_ = steal;
    steal_read_at_ = to.mono_ns;
  }
  if (unaccounted > kSuspendedAtLeast.count()) {
    AddSuspension(to.mono_ns - unaccounted, to.mono_ns);
  }
}

void SelfClock::AccountProcessing(const OwnClocks& from, const OwnClocks& to) {
  const bool blocked = from.voluntary_switches >= 0 && to.voluntary_switches >= 0 &&
                       to.voluntary_switches > from.voluntary_switches;
  if (!blocked) {
    Account(from, to, intended_sleep_ns_);
  }
  intended_sleep_ns_ = 0;
}

void SelfClock::AccountWait(const OwnClocks& from, const OwnClocks& to, int64_t tick_ns) {
  Account(from, to, std::min(tick_ns, to.mono_ns - from.mono_ns));
}

void SelfClock::AddSuspension(int64_t from_ns, int64_t to_ns) {
  windows_.emplace_back(from_ns, to_ns);
  if (windows_.size() > kMaxWindows) {
    windows_.pop_front();
  }
}

int64_t SelfClock::Overlap(int64_t from_ns, int64_t to_ns) const {
  int64_t total = 0;
  for (const auto& [a, b] : windows_) {
    const int64_t lo = std::max(a, from_ns);
    const int64_t hi = std::min(b, to_ns);
    if (hi > lo) {
      total += hi - lo;
    }
  }
  return total;
}

}  // namespace stallwatch::agent::internal
