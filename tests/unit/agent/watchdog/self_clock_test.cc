#include "watchdog/self_clock.h"

#include <gtest/gtest.h>

namespace stallwatch::agent::internal {
namespace {

constexpr int64_t kMs = 1'000'000;

OwnClocks At(int64_t mono_ms, int64_t cpu_ms = 0, int64_t run_delay_ms = 0) {
  return {mono_ms * kMs, cpu_ms * kMs, run_delay_ms * kMs};
}

TEST(SelfClockTest, ASleepItChoseIsNotASuspension) {
  SelfClock c;
  c.Account(At(0), At(500), 500 * kMs);
  c.AccountWait(At(1000), At(1300), 300 * kMs);
  c.AddIntendedSleep(100 * kMs);
  c.AccountProcessing(At(2000), At(2100));
  EXPECT_TRUE(c.windows().empty());
  EXPECT_EQ(c.Overlap(0, 3000 * kMs), 0);
}

// The watchdog leaves its thread clocks unread over a span MayHoldPause says no to: that must
// be exactly the spans in which Account could find no pause, whatever the other clocks say.
TEST(SelfClockTest, ASpanMayHoldAPauseOnlyWhenAccountCouldFindOne) {
  const int64_t least = SelfClock::kSuspendedAtLeast.count();
  for (const int64_t intended : {int64_t{0}, 25 * kMs, 500 * kMs}) {
    for (const int64_t over : {-5 * kMs, int64_t{0}, least - 1, least, least + 1, 60 * kMs}) {
      const int64_t span = intended + over;
      if (span < 0) {
        continue;
      }
      SelfClock c;  // the other clocks idle: as much of the span as can ever be unaccounted
      c.Account(OwnClocks{0, 0, 0}, OwnClocks{span, 0, 0}, intended);
      EXPECT_EQ(SelfClock::MayHoldPause(span, intended), !c.windows().empty())
          << "span " << span << " ns, intended " << intended << " ns";
    }
  }
  SelfClock c;
  c.AddIntendedSleep(30 * kMs);
  EXPECT_EQ(c.processing_sleep_ns(), 30 * kMs);
  c.SkipProcessing();
  EXPECT_EQ(c.processing_sleep_ns(), 0);
}

TEST(SelfClockTest, RunningOrQueuedTimeIsNotASuspension) {
  SelfClock c;
  c.Account(At(0, 0, 0), At(100, 60, 40), 0);  // 60 ms on a CPU, 40 ms queued
  EXPECT_TRUE(c.windows().empty());
}

TEST(SelfClockTest, ProcessingInWhichTheWatchdogBlockedIsNotASuspension) {
  // 300 ms unaccounted while the watchdog blocked of its own accord (a lock, reading a large
  // binary's symbols): its own doing, not a pause of the process.
  OwnClocks from = At(0, 0, 0);
  OwnClocks to = At(400, 100, 0);
  from.voluntary_switches = 10;
  to.voluntary_switches = 14;
  SelfClock c;
  c.AccountProcessing(from, to);
  EXPECT_TRUE(c.windows().empty());
  // The same gap without a switch of its own is a pause; so is one whose counts are unknown.
  to.voluntary_switches = 10;
  c.AccountProcessing(from, to);
  EXPECT_EQ(c.windows().size(), 1u);
  from.voluntary_switches = -1;
  to.voluntary_switches = 14;
  c.AccountProcessing(from, to);
  EXPECT_EQ(c.windows().size(), 2u);
  // A wait is a switch of its own by nature: its overrun counts whatever the counts say.
  from.voluntary_switches = 10;
  c.AccountWait(from, to, 25 * kMs);
  EXPECT_EQ(c.windows().size(), 3u);
}

TEST(SelfClockTest, AGapWithNeitherCpuNorRunQueueWaitIsASuspension) {
  SelfClock c;
  // 100 ms: 10 ms running, 5 ms queued, 10 ms chosen sleep: 75 ms unaccounted.
  c.Account(At(1000, 0, 0), At(1100, 10, 5), 10 * kMs);
  ASSERT_EQ(c.windows().size(), 1u);
  EXPECT_EQ(c.windows()[0].first, 1025 * kMs);
  EXPECT_EQ(c.windows()[0].second, 1100 * kMs);
}

// A virtual CPU that ran another guest (hypervisor steal) leaves a gap in the watchdog's clocks
// and run queue: that time was spent waiting for a CPU, not paused. The reader is asked only
// when a gap is found, and at most once a second otherwise.
TEST(SelfClockTest, HypervisorStealIsNotASuspension) {
  int64_t steal = 0;
  int reads = 0;
  SelfClock c;
  c.SetStealReader([&] {
    ++reads;
    return steal;
  });
  c.Account(At(0), At(10, 10), 0);  // nothing unaccounted: the first reading (no earlier one)
  EXPECT_EQ(reads, 1);
  c.Account(At(10), At(20, 10), 0);  // within the second, nothing unaccounted: not read
  EXPECT_EQ(reads, 1);
  steal = 90 * kMs;  // 90 ms of steal while the watchdog woke 100 ms late
  c.Account(At(20), At(120, 10), 0);
  EXPECT_EQ(reads, 2);
  EXPECT_TRUE(c.windows().empty());
  // A gap with no steal behind it is a pause, as before.
  c.Account(At(120), At(220, 10), 0);
  ASSERT_EQ(c.windows().size(), 1u);
  EXPECT_EQ(c.windows()[0], std::make_pair(130 * kMs, 220 * kMs));
  // Steal covering only part of a gap leaves the rest a pause; an unknown reading takes nothing.
  steal += 30 * kMs;
  c.Account(At(220), At(320, 10), 0);
  ASSERT_EQ(c.windows().size(), 2u);
  EXPECT_EQ(c.windows()[1], std::make_pair(260 * kMs, 320 * kMs));
  steal = -1;
  c.Account(At(320), At(420, 10), 0);
  EXPECT_EQ(c.windows().size(), 3u);
}

TEST(SelfClockTest, TwentyMillisecondsIsTheThreshold) {
  SelfClock c;
  c.Account(At(0), At(20), 0);  // exactly 20 ms: not above
  EXPECT_TRUE(c.windows().empty());
  c.Account(At(100), OwnClocks{121 * kMs, 0, 0}, 0);
  EXPECT_EQ(c.windows().size(), 1u);
}

TEST(SelfClockTest, AWaitLongerThanItsTickIsASuspension) {
  SelfClock c;
  // A 10 ms wait that lasted 200 ms: 190 ms the watchdog should have been awake.
  c.AccountWait(At(0), At(200), 10 * kMs);
  ASSERT_EQ(c.windows().size(), 1u);
  EXPECT_EQ(c.windows()[0].first, 10 * kMs);
  EXPECT_EQ(c.windows()[0].second, 200 * kMs);
}

TEST(SelfClockTest, IntendedSleepIsUsedOnce) {
  SelfClock c;
  c.AddIntendedSleep(80 * kMs);
  c.AccountProcessing(At(0), At(100));  // 20 ms left: not a suspension
  EXPECT_TRUE(c.windows().empty());
  c.AccountProcessing(At(200), At(300));  // the sleep was already used
  EXPECT_EQ(c.windows().size(), 1u);
}

TEST(SelfClockTest, OverlapArithmetic) {
  SelfClock c;
  c.AddSuspension(100 * kMs, 200 * kMs);
  c.AddSuspension(300 * kMs, 400 * kMs);
  EXPECT_EQ(c.Overlap(0, 1000 * kMs), 200 * kMs);
  EXPECT_EQ(c.Overlap(150 * kMs, 350 * kMs), 100 * kMs);
  EXPECT_EQ(c.Overlap(200 * kMs, 300 * kMs), 0);  // half-open windows
  EXPECT_EQ(c.Overlap(120 * kMs, 130 * kMs), 10 * kMs);
  EXPECT_EQ(c.Overlap(500 * kMs, 600 * kMs), 0);
  EXPECT_EQ(c.Overlap(400 * kMs, 100 * kMs), 0);  // empty range
}

TEST(SelfClockTest, TheWindowListIsBounded) {
  SelfClock c;
  for (int64_t i = 0; i < 100; ++i) {
    c.AddSuspension(i * 10 * kMs, i * 10 * kMs + kMs);
  }
  ASSERT_EQ(c.windows().size(), SelfClock::kMaxWindows);
  // The oldest were forgotten, the newest kept.
  EXPECT_EQ(c.windows().front().first, int64_t{100 - 32} * 10 * kMs);
  EXPECT_EQ(c.windows().back().first, 990 * kMs);
  EXPECT_EQ(c.Overlap(0, int64_t{100} * 10 * kMs), 32 * kMs);
}

}  // namespace
}  // namespace stallwatch::agent::internal
