#pragma once
// A loop's delay window: the figures of one report interval, computed from the counters read at
// its end and those remembered from its start. Pure: the caller reads the loop's state.
//
// Threading: not thread-safe; the watchdog engine owns one per loop.

#include <cstdint>

#include "stallwatch/common/histogram.h"
#include "stallwatch/findings.h"

namespace stallwatch::agent::internal {

// The loop's cumulative counters, read at the end of a window.
struct WindowReading {
  int64_t now_ns = 0;
  HistogramCounts delay;             // cumulative probe delays
  HistogramCounts iter;              // cumulative busy periods
  uint64_t delay_window_max_ns = 0;  // the histograms' maxima since the previous window
  uint64_t iter_window_max_ns = 0;
  bool boundaries = false;    // loop boundaries seen (else utilization is the probe's estimate)
  int64_t busy_since_ns = 0;  // start of the busy period in progress (0: waiting)
  int64_t busy_total_ns = 0;  // completed busy periods
  int64_t probe_busy_est_ns = 0;
  uint64_t iterations = 0;
};

// What the next window is measured from.
class DelayWindow {
 public:
  // Starts the first window at `start_ns` from the loop's counters then.
  void Start(int64_t start_ns, HistogramCounts delay, HistogramCounts iter);

  // Fills `d`'s window figures (window_s, count, quantiles, max, sum, utilization and whether it
  // is estimated, iterations, iteration sum, buckets) from `r`, and starts the next window at
  // r.now_ns.
  void Close(const WindowReading& r, DelayFinding* d);

  int64_t start_ns() const { return start_ns_; }
  // The largest window maximum so far.
  uint64_t max_delay_ever_ns() const { return max_delay_ever_ns_; }

 private:
  HistogramCounts prev_delay_, prev_iter_;
  int64_t start_ns_ = 0;
  int64_t prev_busy_ns_ = 0;
  int64_t prev_probe_busy_ns_ = 0;
  uint64_t prev_iterations_ = 0;
  uint64_t max_delay_ever_ns_ = 0;
};

}  // namespace stallwatch::agent::internal
