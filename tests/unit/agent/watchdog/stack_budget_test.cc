#include "watchdog/stack_budget.h"

#include <gtest/gtest.h>

namespace stallwatch::agent::internal {
namespace {

constexpr int64_t kSec = 1'000'000'000;

TEST(StackBudgetTest, ANewSignatureIsAlwaysReported) {
  StackBudget b;
  b.Start(0, 0);  // no budget at all
  for (uint64_t sig = 1; sig <= 5; ++sig) {
    EXPECT_TRUE(b.Decide(sig, sig, "f", 0).stacks_allowed);
  }
  EXPECT_EQ(b.reports_suppressed_total(), 0u);
  // A repeat is not.
  auto d = b.Decide(3, 9, "f", 0);
  EXPECT_FALSE(d.stacks_allowed);
  EXPECT_EQ(b.reports_suppressed_total(), 1u);
}

TEST(StackBudgetTest, RepeatsWithinTheBudgetThenCountedWithANote) {
  StackBudget b;
  b.Start(2, 0);
  EXPECT_TRUE(b.Decide(42, 1, "compute_report", 0).stacks_allowed);  // new: uses a token
  EXPECT_TRUE(b.Decide(42, 2, "compute_report", 0).stacks_allowed);  // the last token
  auto d = b.Decide(42, 3, "compute_report", 0);
  EXPECT_FALSE(d.stacks_allowed);
  EXPECT_EQ(d.sampling_note,
            "stack repeats stall 1 (in compute_report): sampled, not re-sent (repeated stacks "
            "beyond 2/min per loop are counted; 1 so far)");
  d = b.Decide(42, 4, "compute_report", 0);
  EXPECT_EQ(d.sampling_note,
            "stack repeats stall 1 (in compute_report): sampled, not re-sent (repeated stacks "
            "beyond 2/min per loop are counted; 2 so far)");
  EXPECT_EQ(b.reports_suppressed_total(), 2u);
}

TEST(StackBudgetTest, WithoutATopFrameTheNoteNamesOnlyTheStall) {
  StackBudget b;
  b.Start(0, 0);
  (void)b.Decide(7, 5, "", 0);
  EXPECT_EQ(b.Decide(7, 6, "", 0).sampling_note,
            "stack repeats stall 5: sampled, not re-sent (repeated stacks beyond 0/min per loop "
            "are counted; 1 so far)");
}

TEST(StackBudgetTest, TokensRefillOverTheMinuteUpToTheBudget) {
  StackBudget b;
  b.Start(6, 0);  // one token every 10 s
  EXPECT_TRUE(b.Decide(1, 1, "f", 0).stacks_allowed);
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(b.Decide(1, 2, "f", 0).stacks_allowed);
  }
  EXPECT_FALSE(b.Decide(1, 3, "f", 0).stacks_allowed);
  EXPECT_FALSE(b.Decide(1, 4, "f", 9 * kSec).stacks_allowed);
  EXPECT_TRUE(b.Decide(1, 5, "f", 11 * kSec).stacks_allowed);
  // A long quiet time fills the bucket only up to the budget.
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(b.Decide(1, 6, "f", 3600 * kSec).stacks_allowed);
  }
  EXPECT_FALSE(b.Decide(1, 7, "f", 3600 * kSec).stacks_allowed);
}

TEST(StackBudgetTest, TheLeastRecentlySeenSignatureIsForgotten) {
  StackBudget b;
  b.Start(0, 0);
  (void)b.Decide(1000, 1, "old", 0);  // seen once, never again
  (void)b.Decide(2000, 2, "hot", 0);
  for (uint64_t sig = 1; sig < StackBudget::kMaxKnownStacks; ++sig) {
    (void)b.Decide(sig, 10 + sig, "f", 0);
    (void)b.Decide(2000, 3, "hot", 0);  // keeps repeating: moved to the back each time
  }
  EXPECT_EQ(b.known_stacks(), StackBudget::kMaxKnownStacks);
  // 1000 was forgotten: new again, reported. 2000 is still known: counted.
  EXPECT_TRUE(b.Decide(1000, 900, "old", 0).stacks_allowed);
  EXPECT_FALSE(b.Decide(2000, 901, "hot", 0).stacks_allowed);
  EXPECT_EQ(b.known_stacks(), StackBudget::kMaxKnownStacks);
}

}  // namespace
}  // namespace stallwatch::agent::internal
