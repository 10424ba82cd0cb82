#include "stall_detector.h"

#include <gtest/gtest.h>

#include <vector>

namespace stallwatch::agent::internal {
namespace {

constexpr int64_t kMs = 1'000'000;

// A fake loop driven by the test: time only moves when the test says so.
class FakeLoop {
 public:
  FakeLoop() : det_(Config()) {}
  static DetectorConfig Config() {
    DetectorConfig c;
    c.threshold_ns = 50 * kMs;
    c.first_resample_ns = 25 * kMs;
    c.max_resample_ns = 200 * kMs;
    return c;
  }
  // Watchdog tick at time t.
  std::vector<DetectorEvent> At(int64_t t) {
    o_.now_ns = t;
    auto ev = det_.Observe(o_);
    o_.long_count = 0;  // periods are reported once, as new since the previous look
    return {ev.items.begin(), ev.items.begin() + ev.size};
  }
  LoopObservation& o() { return o_; }
  StallDetector& det() { return det_; }

 private:
  StallDetector det_;
  LoopObservation o_;
};

std::vector<DetectorAction> Actions(const std::vector<DetectorEvent>& ev) {
  std::vector<DetectorAction> a;
  for (const auto& e : ev) a.push_back(e.action);
  return a;
}

TEST(StallDetector, BusyLoopBecomesCandidateThenStallThenEndsExactly) {
  FakeLoop f;
  f.o().boundaries = true;
  f.o().busy_since_ns = 1000 * kMs;
  EXPECT_TRUE(f.At(1010 * kMs).empty());  // 10 ms busy: nothing
  EXPECT_EQ(Actions(f.At(1030 * kMs)), std::vector{DetectorAction::kBaseline});
  auto started = f.At(1052 * kMs);
  ASSERT_EQ(Actions(started), std::vector{DetectorAction::kStarted});
  EXPECT_EQ(started[0].start_ns, 1000 * kMs);
  EXPECT_FALSE(started[0].estimated);
  EXPECT_TRUE(f.At(1060 * kMs).empty());
  EXPECT_EQ(Actions(f.At(1078 * kMs)), std::vector{DetectorAction::kResample});
  // Next resample after a doubled interval (50 ms).
  EXPECT_TRUE(f.At(1120 * kMs).empty());
  EXPECT_EQ(Actions(f.At(1129 * kMs)), std::vector{DetectorAction::kResample});
  // The loop goes back to wait at 1137 ms: the mailbox has the exact end.
  f.o().busy_since_ns = 0;
  f.o().AddLongPeriod(1000 * kMs, 1137 * kMs);
  auto ended = f.At(1140 * kMs);
  ASSERT_EQ(Actions(ended), std::vector{DetectorAction::kEnded});
  EXPECT_EQ(ended[0].end_ns - ended[0].start_ns, 137 * kMs);
  EXPECT_FALSE(ended[0].estimated);
  EXPECT_FALSE(f.det().active());
}

TEST(StallDetector, ResampleIntervalBacksOffToTheCap) {
  FakeLoop f;
  f.o().boundaries = true;
  f.o().busy_since_ns = 1;
  std::vector<int64_t> resamples;
  for (int64_t t = 0; t < 2000 * kMs; t += kMs) {
    for (const auto& e : f.At(t)) {
      if (e.action == DetectorAction::kResample) resamples.push_back(t);
    }
  }
  ASSERT_GE(resamples.size(), 6u);
  for (size_t i = 2; i < resamples.size(); ++i) {
    const int64_t gap = resamples[i] - resamples[i - 1];
    EXPECT_GE(gap, resamples[i - 1] - resamples[i - 2]);
    EXPECT_LE(gap, 201 * kMs);
  }
  EXPECT_TRUE(f.det().reported());  // never-ending stall stays visible
}

TEST(StallDetector, ShortBusyPeriodIsForgotten) {
  FakeLoop f;
  f.o().boundaries = true;
  f.o().busy_since_ns = 100 * kMs;
  EXPECT_EQ(Actions(f.At(130 * kMs)), std::vector{DetectorAction::kBaseline});
  f.o().busy_since_ns = 0;  // back to wait at 140 ms: below the threshold
  EXPECT_EQ(Actions(f.At(140 * kMs)), std::vector{DetectorAction::kCandidateGone});
  EXPECT_FALSE(f.det().active());
}

TEST(StallDetector, StallEndingBetweenTicksIsReportedClosed) {
  FakeLoop f;
  f.o().boundaries = true;
  f.o().busy_since_ns = 100 * kMs;
  f.At(140 * kMs);  // candidate
  f.o().busy_since_ns = 0;
  f.o().AddLongPeriod(100 * kMs, 155 * kMs);  // 55 ms: crossed the threshold after the last tick
  auto ev = f.At(160 * kMs);
  ASSERT_EQ(Actions(ev), std::vector{DetectorAction::kEndedShort});
  EXPECT_EQ(ev[0].end_ns - ev[0].start_ns, 55 * kMs);
}

TEST(StallDetector, SameBusyPeriodIsNotReportedTwice) {
  FakeLoop f;
  f.o().boundaries = true;
  f.o().busy_since_ns = 100 * kMs;
  f.At(160 * kMs);
  f.o().running = false;  // dispatch returned: ends the stall
  f.o().AddLongPeriod(100 * kMs, 170 * kMs);
  EXPECT_EQ(Actions(f.At(175 * kMs)), std::vector{DetectorAction::kEnded});
  f.o().running = true;
  EXPECT_TRUE(f.At(300 * kMs).empty());
}

TEST(StallDetector, ProbeOnlyModeUsesTheMissedTickAndIsEstimated) {
  FakeLoop f;
  f.o().boundaries = false;
  f.o().probe_due_ns = 500 * kMs;
  f.o().probe_runs = 7;
  EXPECT_TRUE(f.At(510 * kMs).empty());
  EXPECT_EQ(Actions(f.At(530 * kMs)), std::vector{DetectorAction::kBaseline});
  auto s = f.At(551 * kMs);
  ASSERT_EQ(Actions(s), std::vector{DetectorAction::kStarted});
  EXPECT_TRUE(s[0].estimated);
  f.o().probe_runs = 8;
  f.o().probe_last_run_ns = 620 * kMs;
  f.o().probe_due_ns = 630 * kMs;
  auto e = f.At(625 * kMs);
  ASSERT_EQ(Actions(e), std::vector{DetectorAction::kEnded});
  EXPECT_EQ(e[0].end_ns - e[0].start_ns, 120 * kMs);
  EXPECT_TRUE(e[0].estimated);
}

TEST(StallDetector, NothingBeforeTheLoopRuns) {
  FakeLoop f;
  f.o().running = false;  // attached before dispatch: probe ticks pile up, not a stall
  f.o().probe_due_ns = 10 * kMs;
  EXPECT_TRUE(f.At(5000 * kMs).empty());
}

TEST(StallDetector, IdleLoopWithLateProbeIsAStallWhenNotBusy) {
  // Boundaries on, the loop is not busy, but its probe is late: the thread is not getting to
  // run (starved or suspended) — still a stall.
  FakeLoop f;
  f.o().boundaries = true;
  f.o().busy_since_ns = 0;
  f.o().probe_due_ns = 100 * kMs;
  f.At(130 * kMs);
  auto s = f.At(151 * kMs);
  ASSERT_EQ(Actions(s), std::vector{DetectorAction::kStarted});
  EXPECT_TRUE(s[0].estimated);
}

}  // namespace
}  // namespace stallwatch::agent::internal

namespace stallwatch::agent::internal {
namespace {

TEST(StallDetectorMissed, ABusyPeriodNeverSeenIsReportedFromTheMailbox) {
  DetectorConfig c;
  c.threshold_ns = 50 * kMs;
  StallDetector d(c);
  LoopObservation o;
  o.boundaries = true;
  o.now_ns = 100 * kMs;
  EXPECT_EQ(d.Observe(o).size, 0);
  // The watchdog was stopped; meanwhile the loop was busy from 120 to 600 ms.
  o.now_ns = 610 * kMs;
  o.AddLongPeriod(120 * kMs, 600 * kMs);
  auto ev = d.Observe(o);
  ASSERT_EQ(ev.size, 1);
  EXPECT_EQ(ev.items[0].action, DetectorAction::kMissed);
  EXPECT_EQ(ev.items[0].end_ns - ev.items[0].start_ns, 480 * kMs);
  o.now_ns = 700 * kMs;
  EXPECT_EQ(d.Observe(o).size, 0);  // even if shown again, reported once
  o.long_count = 0;
  // Several missed while the watchdog was away: each reported, short ones ignored.
  o.AddLongPeriod(800 * kMs, 860 * kMs);
  o.AddLongPeriod(870 * kMs, 880 * kMs);
  o.AddLongPeriod(900 * kMs, 1000 * kMs);
  o.now_ns = 1010 * kMs;
  ev = d.Observe(o);
  ASSERT_EQ(ev.size, 2);
  EXPECT_EQ(ev.items[0].start_ns, 800 * kMs);
  EXPECT_EQ(ev.items[1].start_ns, 900 * kMs);
}

TEST(StallDetectorMissed, ATrackedStallIsNotReportedAgainFromTheMailbox) {
  DetectorConfig c;
  c.threshold_ns = 50 * kMs;
  StallDetector d(c);
  LoopObservation o;
  o.boundaries = true;
  o.busy_since_ns = 100 * kMs;
  o.now_ns = 160 * kMs;
  d.Observe(o);  // baseline + started
  o.busy_since_ns = 0;
  o.AddLongPeriod(100 * kMs, 170 * kMs);
  o.now_ns = 175 * kMs;
  auto ev = d.Observe(o);
  ASSERT_EQ(ev.size, 1);
  EXPECT_EQ(ev.items[0].action, DetectorAction::kEnded);
}

// The watchdog sleeps until NextLookNs; looking exactly then detects a stall as early as
// looking all the time would: the baseline at half the threshold, the start at the threshold.
TEST(StallDetector, NextLookIsWhenSomethingCanHappenAndLookingThenDetectsOnTime) {
  constexpr int64_t kTick = 10 * kMs;
  FakeLoop f;
  f.o().boundaries = true;
  f.o().busy_since_ns = 0;  // idle: whatever starts now is a candidate at +25 ms at the earliest
  EXPECT_TRUE(f.At(1000 * kMs).empty());
  EXPECT_EQ(f.det().NextLookNs(f.o(), kTick), 1025 * kMs);
  // A busy period began at 1003 ms: look at its half-threshold mark, not a whole idle wait.
  f.o().busy_since_ns = 1003 * kMs;
  EXPECT_TRUE(f.At(1010 * kMs).empty());
  int64_t next = f.det().NextLookNs(f.o(), kTick);
  EXPECT_EQ(next, 1028 * kMs);
  EXPECT_EQ(Actions(f.At(next)), std::vector{DetectorAction::kBaseline});
  // Candidate: next look no later than the tick (to see a prompt end), and the crossing itself.
  next = f.det().NextLookNs(f.o(), kTick);
  EXPECT_EQ(next, 1038 * kMs);
  EXPECT_TRUE(f.At(next).empty());
  EXPECT_EQ(f.det().NextLookNs(f.o(), kTick), 1048 * kMs);
  EXPECT_TRUE(f.At(1048 * kMs).empty());
  next = f.det().NextLookNs(f.o(), kTick);
  EXPECT_EQ(next, 1053 * kMs);  // start + threshold, exactly
  auto started = f.At(next);
  ASSERT_EQ(Actions(started), std::vector{DetectorAction::kStarted});
  EXPECT_EQ(started[0].end_ns - started[0].start_ns, 50 * kMs);  // detected at the crossing
  // Stall: within a tick, or at the re-sample time if sooner.
  EXPECT_EQ(f.det().NextLookNs(f.o(), kTick), 1063 * kMs);
  EXPECT_EQ(f.det().NextLookNs(f.o(), 100 * kMs), 1078 * kMs);  // first re-sample at +25 ms
  // A late probe while the loop waits (thread starved): candidate at due + half.
  FakeLoop g;
  g.o().boundaries = true;
  g.o().busy_since_ns = 0;
  g.o().probe_due_ns = 2010 * kMs;
  EXPECT_TRUE(g.At(2000 * kMs).empty());
  EXPECT_EQ(g.det().NextLookNs(g.o(), kTick), 2025 * kMs);
  EXPECT_TRUE(g.At(2025 * kMs).empty());
  next = g.det().NextLookNs(g.o(), kTick);
  EXPECT_EQ(next, 2035 * kMs);
  EXPECT_EQ(Actions(g.At(next)), std::vector{DetectorAction::kBaseline});
}

}  // namespace
}  // namespace stallwatch::agent::internal
