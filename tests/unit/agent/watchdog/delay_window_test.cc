#include "watchdog/delay_window.h"

#include <gtest/gtest.h>

namespace stallwatch::agent::internal {
namespace {

constexpr int64_t kMs = 1'000'000;

HistogramCounts Counts(std::initializer_list<std::pair<uint64_t, uint64_t>> values) {
  HistogramCounts h;
  for (const auto& [v, n] : values) {
    h.Add(v, n);
  }
  return h;
}

TEST(DelayWindowTest, FiguresAreTheDeltaOverTheWindow) {
  DelayWindow w;
  w.Start(1000 * kMs, Counts({{1 * kMs, 10}}), Counts({{2 * kMs, 5}}));
  WindowReading r;
  r.now_ns = 3000 * kMs;  // a 2 s window
  r.delay = Counts({{1 * kMs, 10}, {1 * kMs, 90}, {100 * kMs, 1}});
  r.iter = Counts({{2 * kMs, 5}, {4 * kMs, 20}});
  r.delay_window_max_ns = 100 * kMs;
  r.iter_window_max_ns = 4 * kMs;
  r.boundaries = true;
  r.busy_total_ns = 500 * kMs;
  r.iterations = 120;
  DelayFinding d;
  w.Close(r, &d);
  EXPECT_DOUBLE_EQ(d.window_s, 2.0);
  EXPECT_EQ(d.count, 91u);  // the 10 before the window are not in it
  EXPECT_NEAR(d.p50_s, 0.001, 0.0001);
  EXPECT_NEAR(d.p999_s, 0.1, 0.01);
  EXPECT_DOUBLE_EQ(d.max_s, 0.1);
  EXPECT_NEAR(d.sum_s, 0.190, 0.001);
  EXPECT_DOUBLE_EQ(d.utilization, 0.25);
  EXPECT_FALSE(d.utilization_estimated);
  EXPECT_EQ(d.iterations, 120u);
  EXPECT_NEAR(d.iteration_sum_s, 0.080, 0.001);
  uint64_t delay_in_buckets = 0;
  for (const auto& [idx, n] : d.delay_buckets) {
    delay_in_buckets += n;
  }
  EXPECT_EQ(delay_in_buckets, 91u);
  EXPECT_EQ(w.start_ns(), 3000 * kMs);
  EXPECT_EQ(w.max_delay_ever_ns(), static_cast<uint64_t>(100 * kMs));
}

TEST(DelayWindowTest, TheNextWindowStartsWhereThisOneEnded) {
  DelayWindow w;
  w.Start(0, HistogramCounts(), HistogramCounts());
  WindowReading r;
  r.now_ns = 1000 * kMs;
  r.delay = Counts({{1 * kMs, 4}});
  r.boundaries = true;
  r.busy_total_ns = 100 * kMs;
  r.iterations = 10;
  r.delay_window_max_ns = 50 * kMs;
  DelayFinding d1;
  w.Close(r, &d1);
  r.now_ns = 2000 * kMs;
  r.delay = Counts({{1 * kMs, 6}});
  r.busy_total_ns = 400 * kMs;
  r.iterations = 15;
  r.delay_window_max_ns = 2 * kMs;
  DelayFinding d2;
  w.Close(r, &d2);
  EXPECT_EQ(d2.count, 2u);
  EXPECT_DOUBLE_EQ(d2.utilization, 0.3);
  EXPECT_EQ(d2.iterations, 5u);
  EXPECT_DOUBLE_EQ(d2.max_s, 0.002);
  EXPECT_EQ(w.max_delay_ever_ns(), static_cast<uint64_t>(50 * kMs));  // the maximum of all
}

TEST(DelayWindowTest, ABusyPeriodInProgressCountsUpToNow) {
  DelayWindow w;
  w.Start(0, HistogramCounts(), HistogramCounts());
  WindowReading r;
  r.now_ns = 1000 * kMs;
  r.boundaries = true;
  r.busy_total_ns = 100 * kMs;
  r.busy_since_ns = 800 * kMs;  // busy for the last 200 ms
  DelayFinding d;
  w.Close(r, &d);
  EXPECT_DOUBLE_EQ(d.utilization, 0.3);
  // A start stamped after `now` (read in another order) adds nothing.
  r.now_ns = 2000 * kMs;
  r.busy_total_ns = 300 * kMs;
  r.busy_since_ns = 2500 * kMs;
  w.Close(r, &d);
  EXPECT_DOUBLE_EQ(d.utilization, 0.0);  // 300 - (100 + 200) over the window: clamped at 0
}

TEST(DelayWindowTest, WithoutBoundariesUtilizationIsTheProbeEstimateAndClamped) {
  DelayWindow w;
  w.Start(0, HistogramCounts(), HistogramCounts());
  WindowReading r;
  r.now_ns = 100 * kMs;
  r.probe_busy_est_ns = 40 * kMs;
  DelayFinding d;
  w.Close(r, &d);
  EXPECT_TRUE(d.utilization_estimated);
  EXPECT_DOUBLE_EQ(d.utilization, 0.4);
  r.now_ns = 200 * kMs;
  r.probe_busy_est_ns = 400 * kMs;  // more than the window: clamped
  w.Close(r, &d);
  EXPECT_DOUBLE_EQ(d.utilization, 1.0);
}

TEST(DelayWindowTest, AnEmptyWindowHasNoDivisionByZero) {
  DelayWindow w;
  w.Start(5 * kMs, HistogramCounts(), HistogramCounts());
  WindowReading r;
  r.now_ns = 5 * kMs;
  r.probe_busy_est_ns = 1;
  DelayFinding d;
  w.Close(r, &d);
  EXPECT_DOUBLE_EQ(d.window_s, 1e-9);
  EXPECT_EQ(d.count, 0u);
  EXPECT_DOUBLE_EQ(d.utilization, 1.0);
}

}  // namespace
}  // namespace stallwatch::agent::internal
