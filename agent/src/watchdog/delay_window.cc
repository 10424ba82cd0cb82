#include "watchdog/delay_window.h"

#include <algorithm>
#include <utility>

namespace stallwatch::agent::internal {

void DelayWindow::Start(int64_t start_ns, HistogramCounts delay, HistogramCounts iter) {
  start_ns_ = start_ns;
  prev_delay_ = std::move(delay);
  prev_iter_ = std::move(iter);
}

void DelayWindow::Close(const WindowReading& r, DelayFinding* d) {
  HistogramCounts wd = r.delay.Minus(prev_delay_);
  HistogramCounts wi = r.iter.Minus(prev_iter_);
  wd.set_max_ns(r.delay_window_max_ns);
  wi.set_max_ns(r.iter_window_max_ns);
  max_delay_ever_ns_ = std::max<uint64_t>(max_delay_ever_ns_, wd.max_ns());
  prev_delay_ = r.delay;
  prev_iter_ = r.iter;

  const int64_t now = r.now_ns;
  const int64_t span = std::max<int64_t>(now - start_ns_, 1);
  d->window_s = static_cast<double>(span) / 1e9;
  d->count = wd.total();
  d->p50_s = static_cast<double>(wd.ValueAtQuantile(0.5)) / 1e9;
  d->p90_s = static_cast<double>(wd.ValueAtQuantile(0.9)) / 1e9;
  d->p99_s = static_cast<double>(wd.ValueAtQuantile(0.99)) / 1e9;
  d->p999_s = static_cast<double>(wd.ValueAtQuantile(0.999)) / 1e9;
  d->max_s = static_cast<double>(wd.max_ns()) / 1e9;
  d->sum_s = static_cast<double>(wd.sum_ns()) / 1e9;
  if (r.boundaries) {
    const int64_t since = r.busy_since_ns;
    const int64_t busy = r.busy_total_ns + (since > 0 && since < now ? now - since : 0);
    d->utilization =
        std::clamp(static_cast<double>(busy - prev_busy_ns_) / static_cast<double>(span), 0.0, 1.0);
    d->utilization_estimated = false;
    prev_busy_ns_ = busy;
  } else {
    const int64_t est = r.probe_busy_est_ns;
    d->utilization = std::clamp(
        static_cast<double>(est - prev_probe_busy_ns_) / static_cast<double>(span), 0.0, 1.0);
    d->utilization_estimated = true;
    prev_probe_busy_ns_ = est;
  }
  d->iterations = r.iterations - prev_iterations_;
  prev_iterations_ = r.iterations;
  d->iteration_sum_s = static_cast<double>(wi.sum_ns()) / 1e9;
  d->delay_buckets = wd.ToSparse();
  d->iteration_buckets = wi.ToSparse();
  start_ns_ = now;
}

}  // namespace stallwatch::agent::internal
