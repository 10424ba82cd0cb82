#include "classifier.h"

#include <gtest/gtest.h>

namespace stallwatch::agent::internal {
namespace {

constexpr int64_t kMs = 1'000'000;

TEST(Classify, BurningCpuIsCpu) {
  auto c = Classify({.wall_ns = 100 * kMs, .cpu_ns = 97 * kMs, .run_delay_ns = 1 * kMs});
  EXPECT_EQ(c.stall_class, StallClass::kCpu);
  EXPECT_NEAR(c.cpu_ratio, 0.97, 1e-9);
  EXPECT_NE(c.hint.find("worker"), std::string::npos);
}

TEST(Classify, WaitingInASyscallIsBlockedWithItsTarget) {
  auto c = Classify({.wall_ns = 100 * kMs,
                     .cpu_ns = 0,
                     .run_delay_ns = 0,
                     .syscall = "read",
                     .fd_target = "socket tcp 127.0.0.1:4000 -> 127.0.0.1:5432"});
  EXPECT_EQ(c.stall_class, StallClass::kBlocked);
  EXPECT_NE(c.hint.find("read() on socket tcp"), std::string::npos);
  EXPECT_NE(c.hint.find("thread pool"), std::string::npos);
}

TEST(Classify, SleepGetsATimerHint) {
  auto c = Classify(
      {.wall_ns = 100 * kMs, .cpu_ns = 0, .run_delay_ns = 0, .syscall = "clock_nanosleep"});
  EXPECT_EQ(c.stall_class, StallClass::kBlocked);
  EXPECT_NE(c.hint.find("timer"), std::string::npos);
}

TEST(Classify, RunnableButNotRunningIsStarved) {
  auto c = Classify(
      {.wall_ns = 100 * kMs, .cpu_ns = 30 * kMs, .run_delay_ns = 65 * kMs, .seen_running = true});
  EXPECT_EQ(c.stall_class, StallClass::kStarved);
  EXPECT_NEAR(c.wait_ratio, 0.65, 1e-9);
}

TEST(Classify, PausedProcessIsSuspendedEvenIfItWasComputing) {
  auto c = Classify({.wall_ns = 100 * kMs, .cpu_ns = 40 * kMs, .suspended_ns = 60 * kMs});
  EXPECT_EQ(c.stall_class, StallClass::kSuspended);
  EXPECT_NE(c.hint.find("paused"), std::string::npos);
}

TEST(Classify, MutexWaitIsBlockedOnALock) {
  auto c = Classify({.wall_ns = 100 * kMs, .cpu_ns = 0, .run_delay_ns = 0, .syscall = "futex"});
  EXPECT_EQ(c.stall_class, StallClass::kBlocked);
  EXPECT_NE(c.hint.find("lock"), std::string::npos);
}

TEST(Classify, NothingKnownIsUnknownNotAGuess) {
  auto c = Classify({.wall_ns = 100 * kMs});
  EXPECT_EQ(c.stall_class, StallClass::kUnknown);
  EXPECT_FALSE(c.hint.empty());
}

}  // namespace
}  // namespace stallwatch::agent::internal
