#include "stall_detector.h"

#include <algorithm>

namespace stallwatch::agent::internal {

StallDetector::Events StallDetector::Observe(const LoopObservation& o) {
  Events ev;
  const int64_t tracked_start = phase_ != Phase::kIdle ? start_ : -1;
  if (phase_ != Phase::kIdle) {
    bool ended = false, exact = false;
    int64_t end = o.now_ns;
    if (source_ == Source::kBusy) {
      if (o.busy_since_ns != start_ || !o.running) {
        ended = true;
        for (int i = 0; i < o.long_count; ++i) {
          if (o.long_periods[i].start_ns == start_ && o.long_periods[i].end_ns >= start_) {
            end = o.long_periods[i].end_ns;
            exact = true;
          }
        }
      }
    } else if (o.probe_runs != runs_at_start_) {
      ended = true;
      end = std::max(o.probe_last_run_ns, start_);
    } else if (!o.running) {
      ended = true;
    }
    if (ended) {
      const int64_t duration = end - start_;
      const bool estimated = source_ == Source::kProbe || !exact;
      if (phase_ == Phase::kStall) {
        ev.Add({DetectorAction::kEnded, start_, end, estimated});
      } else if (duration >= config_.threshold_ns) {
        ev.Add({DetectorAction::kEndedShort, start_, end, estimated});
      } else {
        ev.Add({DetectorAction::kCandidateGone, start_, end, estimated});
      }
      if (source_ == Source::kBusy) last_closed_busy_start_ = start_;
      last_end_ = end;
      phase_ = Phase::kIdle;
    } else if (phase_ == Phase::kCandidate && o.now_ns - start_ >= config_.threshold_ns) {
      phase_ = Phase::kStall;
      interval_ = config_.first_resample_ns;
      next_sample_ = o.now_ns + interval_;
      ev.Add({DetectorAction::kStarted, start_, o.now_ns, source_ == Source::kProbe});
    } else if (phase_ == Phase::kStall && o.now_ns >= next_sample_) {
      interval_ = std::min(interval_ * 2, config_.max_resample_ns);
      next_sample_ = o.now_ns + interval_;
      ev.Add({DetectorAction::kResample, start_, o.now_ns, source_ == Source::kProbe});
    }
  }
  // Long busy periods this detector never tracked were missed (e.g. the watchdog was stopped
  // with the process): report each, closed, with its exact span.
  for (int i = 0; i < o.long_count; ++i) {
    const auto& p = o.long_periods[i];
    if (p.start_ns == tracked_start || p.start_ns == last_closed_busy_start_) continue;
    if (phase_ != Phase::kIdle && p.start_ns == start_) continue;
    if (p.end_ns - p.start_ns < config_.threshold_ns) continue;
    ev.Add({DetectorAction::kMissed, p.start_ns, p.end_ns, false});
    last_closed_busy_start_ = p.start_ns;
    last_end_ = std::max(last_end_, p.end_ns);
  }
  if (phase_ == Phase::kIdle) MaybeStart(o, &ev);
  return ev;
}

int64_t StallDetector::NextLookNs(const LoopObservation& o, int64_t tick_ns) const {
  const int64_t half = config_.threshold_ns / 2;
  switch (phase_) {
    case Phase::kStall:
      return std::min(next_sample_, o.now_ns + tick_ns);
    case Phase::kCandidate:
      return std::min(start_ + config_.threshold_ns, o.now_ns + tick_ns);
    case Phase::kIdle:
      break;
  }
  // Whatever begins from now on is a candidate no earlier than now + half.
  int64_t next = o.now_ns + half;
  if (!o.running) return next;
  if (o.boundaries && o.busy_since_ns > 0 && o.busy_since_ns != last_closed_busy_start_) {
    next = std::min(next, o.busy_since_ns + half);
  } else if (o.probe_due_ns > 0 && o.probe_due_ns >= last_end_) {
    next = std::min(next, std::max(o.probe_due_ns + half, o.now_ns));
  }
  return next;
}

void StallDetector::MaybeStart(const LoopObservation& o, Events* ev) {
  if (!o.running) return;
  const int64_t half = config_.threshold_ns / 2;
  if (o.boundaries && o.busy_since_ns > 0) {
    if (o.busy_since_ns == last_closed_busy_start_ || o.now_ns - o.busy_since_ns < half) return;
    phase_ = Phase::kCandidate;
    source_ = Source::kBusy;
    start_ = o.busy_since_ns;
  } else {
    if (o.probe_due_ns <= 0 || o.probe_due_ns < last_end_ || o.now_ns - o.probe_due_ns < half) {
      return;
    }
    phase_ = Phase::kCandidate;
    source_ = Source::kProbe;
    start_ = o.probe_due_ns;
    runs_at_start_ = o.probe_runs;
  }
  ev->Add({DetectorAction::kBaseline, start_, o.now_ns, source_ == Source::kProbe});
  if (o.now_ns - start_ >= config_.threshold_ns) {
    phase_ = Phase::kStall;
    interval_ = config_.first_resample_ns;
    next_sample_ = o.now_ns + interval_;
    ev->Add({DetectorAction::kStarted, start_, o.now_ns, source_ == Source::kProbe});
  }
}

}  // namespace stallwatch::agent::internal
