#include "stallwatch/common/log_text.h"

#include <gtest/gtest.h>

namespace stallwatch {
namespace {

TEST(EscapeForLog, EscapesControlCharactersAndBackslash) {
  EXPECT_EQ(EscapeForLog("web"), "web");
  EXPECT_EQ(EscapeForLog("a\nb"), "a\\x0ab");
  EXPECT_EQ(EscapeForLog(std::string_view("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(EscapeForLog("x\x7f"), "x\\x7f");
  EXPECT_EQ(EscapeForLog("c:\\dir"), "c:\\\\dir");
  EXPECT_EQ(EscapeForLog("\x1b[31mred"), "\\x1b[31mred");
}

TEST(EscapeForLog, CutsAtACharacterBoundary) {
  EXPECT_EQ(EscapeForLog("abcdef", 4), "abcd...");
  EXPECT_EQ(EscapeForLog("abcd", 4), "abcd");
  // "é" is two bytes: a cut inside it moves back before it.
  EXPECT_EQ(EscapeForLog("ab\xc3\xa9z", 3), "ab...");
  EXPECT_EQ(EscapeForLog("ab\xc3\xa9z", 4), "ab\xc3\xa9...");
}

TEST(LogRateLimit, AllowsOneLinePerIntervalAndCountsTheRest) {
  LogRateLimit limit(10);
  EXPECT_TRUE(limit.Allow(100));
  EXPECT_FALSE(limit.Allow(101));
  EXPECT_FALSE(limit.Allow(109));
  EXPECT_EQ(limit.TakeSuppressed(), 2u);
  EXPECT_EQ(limit.TakeSuppressed(), 0u);
  EXPECT_TRUE(limit.Allow(110));
  EXPECT_FALSE(limit.Allow(115));
  EXPECT_TRUE(limit.Allow(200));
  EXPECT_EQ(limit.TakeSuppressed(), 1u);
}

TEST(LogRateLimit, FirstCallIsAllowedAtAnyTime) {
  LogRateLimit limit(1'000'000'000);
  EXPECT_TRUE(limit.Allow(0));
  LogRateLimit negative(5);
  EXPECT_TRUE(negative.Allow(-100));
}

TEST(LogRateLimit, BurstAllowsThatManyLinesPerWindow) {
  LogRateLimit limit(10, 3);
  EXPECT_TRUE(limit.Allow(100));
  EXPECT_TRUE(limit.Allow(101));
  EXPECT_TRUE(limit.Allow(102));
  EXPECT_FALSE(limit.Allow(103));
  EXPECT_FALSE(limit.Allow(109));
  // The window opened at 100: a new one opens at 110 with the full budget again.
  EXPECT_TRUE(limit.Allow(110));
  EXPECT_EQ(limit.TakeSuppressed(), 2u);
  EXPECT_TRUE(limit.Allow(111));
  EXPECT_TRUE(limit.Allow(112));
  EXPECT_FALSE(limit.Allow(113));
  EXPECT_EQ(limit.TakeSuppressed(), 1u);
}

TEST(LogRateLimit, BurstBelowOneMeansOne) {
  LogRateLimit limit(10, 0);
  EXPECT_TRUE(limit.Allow(0));
  EXPECT_FALSE(limit.Allow(1));
}

}  // namespace
}  // namespace stallwatch
