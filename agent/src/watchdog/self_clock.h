#pragma once
// The watchdog's account of its own time: when, between two readings of its clocks, it was
// neither running, nor queued for a CPU, nor in a sleep it chose, the whole process (or, for a
// watchdog process, the host it watches) was suspended, and a stall over that window is not the
// loop's doing. Pure: fed clock readings and intended sleeps; reading the clocks is the caller's.
//
// Threading: not thread-safe; owned by the watchdog engine and used under its lock.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <utility>

namespace stallwatch::agent::internal {

// One reading of the watchdog thread's clocks (ns): monotonic, its CPU time, and its time
// queued for a CPU (schedstat run_delay; 0 when unknown).
struct OwnClocks {
  int64_t mono_ns = 0;
  int64_t cpu_ns = 0;
  int64_t run_delay_ns = 0;
  // The thread's voluntary context switches so far (getrusage RUSAGE_THREAD), -1 if unknown:
  // processing in which the watchdog blocked of its own accord (a lock, a read of a large
  // binary's symbols, a page-in) is neither running nor queued, yet no pause of the process.
  int64_t voluntary_switches = -1;
};

class SelfClock {
 public:
  // Time neither running, queued, nor in a chosen sleep, above which the process is taken to
  // have been suspended.
  static constexpr std::chrono::nanoseconds kSuspendedAtLeast = std::chrono::milliseconds(20);
  // Suspension windows remembered (the oldest is forgotten first).
  static constexpr size_t kMaxWindows = 32;

  // The machine's hypervisor steal time so far, summed over its CPUs (ns; -1 unknown). Time a
  // virtual CPU spent running another guest is invisible to the thread's clocks and run queue,
  // yet it is waiting for a CPU, not a pause of the process: it is taken off a gap that looks
  // like one. Read only when a gap is found (and once a second otherwise, for the next one).
  void SetStealReader(std::function<int64_t()> read) { read_steal_ = std::move(read); }

  // Records a suspension when, between `from` and `to`, the watchdog was neither running, nor
  // queued for a CPU (steal included), nor in a sleep it chose (`intended_sleep_ns`) for more
  // than kSuspendedAtLeast. The window recorded ends at `to`.
  void Account(const OwnClocks& from, const OwnClocks& to, int64_t intended_sleep_ns);

  // Processing between two waits: sleeps inside it (waiting for a signal sample) were added with
  // AddIntendedSleep; they are used here and forgotten. Processing in which the watchdog blocked
  // (voluntary_switches grew) is no evidence of a pause: a pause is seen in the waits, which
  // take nearly all of the watchdog's time.
  void AccountProcessing(const OwnClocks& from, const OwnClocks& to);
  void AddIntendedSleep(int64_t ns) { intended_sleep_ns_ += ns; }

  // Whether a span of `span_ns` on the monotonic clock, of which the watchdog meant to sleep
  // `intended_ns`, can hold a pause at all: the other clocks only take time off the span. Where
  // it cannot, the caller may leave its thread clocks unread (three syscalls a reading) and call
  // SkipProcessing, or no AccountWait, for that span.
  static bool MayHoldPause(int64_t span_ns, int64_t intended_ns) {
    return span_ns - intended_ns > kSuspendedAtLeast.count();
  }
  // The intended sleeps of the processing span so far (AddIntendedSleep).
  int64_t processing_sleep_ns() const { return intended_sleep_ns_; }
  // A processing span that MayHoldPause said no to: its intended sleeps are forgotten.
  void SkipProcessing() { intended_sleep_ns_ = 0; }

  // A wait for at most `tick_ns` that started at `from` and ended (or is looked at) at `to`:
  // the sleep was chosen up to the tick; longer, the watchdog should have woken up.
  void AccountWait(const OwnClocks& from, const OwnClocks& to, int64_t tick_ns);

  // Records a window [from_ns, to_ns) in which the watched thread was seen stopped.
  void AddSuspension(int64_t from_ns, int64_t to_ns);

  // The time of [from_ns, to_ns) covered by recorded suspension windows.
  int64_t Overlap(int64_t from_ns, int64_t to_ns) const;

  // [from, to) windows, newest last, at most kMaxWindows.
  const std::deque<std::pair<int64_t, int64_t>>& windows() const { return windows_; }

 private:
  std::deque<std::pair<int64_t, int64_t>> windows_;
  int64_t intended_sleep_ns_ = 0;
  std::function<int64_t()> read_steal_;
  int64_t steal_ns_ = -1;  // the last reading (taken at the end of an earlier span)
  int64_t steal_read_at_ = std::numeric_limits<int64_t>::min() / 2;  // its monotonic time
};

}  // namespace stallwatch::agent::internal
