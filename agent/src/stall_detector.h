#pragma once
// The stall state machine of one loop, fed by the watchdog with what it reads from the loop's
// shared state. Pure: time comes in the observation, so tests drive it with a fake clock.
//
// A stall starts when the loop has been busy (not back to waiting for events) for longer than
// the threshold — exact start from the loop boundaries — or, without boundaries or while the
// loop is not busy, when its probe is later than the threshold (start = the missed tick's
// scheduled time, within one probe period). It is a candidate from half the threshold on (so
// the watchdog has a CPU/run-queue baseline), reported at the threshold, re-sampled at doubling
// intervals, and closed when the loop comes back.

#include <array>
#include <cstdint>

namespace stallwatch::agent::internal {

struct LoopObservation {
  int64_t now_ns = 0;
  bool running = true;      // loop thread known and inside dispatch
  bool boundaries = false;  // busy/idle stamps are available
  int64_t busy_since_ns = 0;
  // Busy periods >= threshold that ended since the previous observation, oldest first.
  struct Period {
    int64_t start_ns = 0;
    int64_t end_ns = 0;
  };
  std::array<Period, 8> long_periods{};
  int long_count = 0;
  void AddLongPeriod(int64_t start, int64_t end) {
    if (long_count < static_cast<int>(long_periods.size())) {
      long_periods[long_count++] = {start, end};
    }
  }
  int64_t probe_due_ns = 0;
  uint64_t probe_runs = 0;
  int64_t probe_last_run_ns = 0;
};

struct DetectorConfig {
  int64_t threshold_ns = 50'000'000;
  int64_t first_resample_ns = 25'000'000;
  int64_t max_resample_ns = 2'000'000'000;
};

enum class DetectorAction {
  kBaseline,       // a candidate began: take the CPU/run-queue baseline now
  kStarted,        // the candidate crossed the threshold: report ongoing
  kResample,       // time for another sample of the ongoing stall
  kEnded,          // the reported stall ended at end_ns
  kEndedShort,     // a candidate that was never reported exceeded the threshold: report closed
  kCandidateGone,  // a candidate ended below the threshold: forget the baseline
  kMissed          // a busy period >= threshold that started and ended between two looks
                   // (e.g. while the watchdog was stopped with the process): report closed
};

struct DetectorEvent {
  DetectorAction action = DetectorAction::kBaseline;
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  bool estimated = false;  // start/end from the probe, not from the loop boundaries
};

class StallDetector {
 public:
  explicit StallDetector(DetectorConfig config) : config_(config) {}

  struct Events {
    std::array<DetectorEvent, 12> items;
    int size = 0;
    void Add(DetectorEvent e) {
      if (size < static_cast<int>(items.size())) {
        items[size++] = e;
      }
    }
  };
  Events Observe(const LoopObservation& o);
  // After Observe(o): the latest time the watchdog must look again so that nothing is detected
  // later than it would be by looking all the time. Idle: a busy period (or a late probe) can
  // become a candidate no earlier than half the threshold after it began; a candidate crosses
  // the threshold at start + threshold; a stall is re-sampled at its schedule. `tick_ns` bounds
  // the wait while a candidate or stall is open (so its end is seen promptly).
  int64_t NextLookNs(const LoopObservation& o, int64_t tick_ns) const;

  bool active() const { return phase_ != Phase::kIdle; }
  bool reported() const { return phase_ == Phase::kStall; }
  int64_t start_ns() const { return start_; }

 private:
  enum class Phase { kIdle, kCandidate, kStall };
  enum class Source { kBusy, kProbe };
  void Close(const LoopObservation& o, Events* ev);
  void MaybeStart(const LoopObservation& o, Events* ev);

  DetectorConfig config_;
  Phase phase_ = Phase::kIdle;
  Source source_ = Source::kBusy;
  int64_t start_ = 0;
  uint64_t runs_at_start_ = 0;
  int64_t next_sample_ = 0;
  int64_t interval_ = 0;
  int64_t last_closed_busy_start_ = 0;
  int64_t last_end_ = 0;
};

}  // namespace stallwatch::agent::internal
