#include "watchdog/sampling_status.h"

#include <gtest/gtest.h>

namespace stallwatch::agent::internal {
namespace {

TEST(SamplingStatusTest, RendersTheStatusLine) {
  EXPECT_EQ(SamplingStatusText({}), "ok");
  EXPECT_EQ(SamplingStatusText({SamplingState::kOff, ""}), "off (STALLWATCH_SAMPLING=off)");
  EXPECT_EQ(SamplingStatusText({SamplingState::kNoHostSignal, ""}),
            "running-thread stacks unavailable: no sampling signal in the host");
  EXPECT_EQ(SamplingStatusText({SamplingState::kRunningStacksUnavailable, "signal 34 is taken"}),
            "running-thread stacks unavailable: signal 34 is taken");
  EXPECT_EQ(SamplingStatusText({SamplingState::kStacksUnavailable, "no libdw"}),
            "stacks unavailable: no libdw");
}

TEST(SamplingStatusTest, RunningStacksUnavailable) {
  EXPECT_FALSE(SamplingStatus{}.running_stacks_unavailable());
  EXPECT_TRUE(SamplingStatus{}.ok());
  EXPECT_TRUE((SamplingStatus{SamplingState::kNoHostSignal, ""}).running_stacks_unavailable());
  EXPECT_TRUE(
      (SamplingStatus{SamplingState::kRunningStacksUnavailable, "x"}).running_stacks_unavailable());
  EXPECT_FALSE(
      (SamplingStatus{SamplingState::kStacksUnavailable, "x"}).running_stacks_unavailable());
  EXPECT_FALSE((SamplingStatus{SamplingState::kOff, ""}).running_stacks_unavailable());
}

}  // namespace
}  // namespace stallwatch::agent::internal
