#include "stallwatch/common/duration.h"

#include <gtest/gtest.h>

namespace stallwatch {
namespace {

using std::chrono::nanoseconds;

TEST(ParseDuration, AcceptsEveryUnit) {
  EXPECT_EQ(*ParseDuration("50ms"), nanoseconds(50'000'000));
  EXPECT_EQ(*ParseDuration("0.5s"), nanoseconds(500'000'000));
  EXPECT_EQ(*ParseDuration("250us"), nanoseconds(250'000));
  EXPECT_EQ(*ParseDuration("731ns"), nanoseconds(731));
  EXPECT_EQ(*ParseDuration("2m"), nanoseconds(120'000'000'000));
  EXPECT_EQ(*ParseDuration("0ms"), nanoseconds(0));
}

TEST(ParseDuration, RejectsBadValuesNamingTheForm) {
  for (const char* bad : {"", "50", "ms", "-5ms", "5 ms", "5mss", "1.2.3s", "abc", "5h", "1e3ms"}) {
    auto d = ParseDuration(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("ns, us, ms, s or m"), std::string::npos) << bad;
  }
  EXPECT_FALSE(ParseDuration("99999999999999999999s").ok());
}

TEST(FormatDuration, IsReadable) {
  EXPECT_EQ(FormatDuration(nanoseconds(50'000'000)), "50ms");
  EXPECT_EQ(FormatDuration(nanoseconds(1'500'000'000)), "1.50s");
  EXPECT_EQ(FormatDuration(nanoseconds(731)), "731ns");
  EXPECT_EQ(FormatDuration(nanoseconds(250'000)), "250us");
}

// Found by the duration fuzz target: the magnitude of nanoseconds::min() overflowed.
TEST(FormatDuration, ExtremesAndNegatives) {
  EXPECT_EQ(FormatDuration(nanoseconds(-5'000'000)), "-5ms");
  EXPECT_EQ(FormatDuration(nanoseconds(-731)), "-731ns");
  EXPECT_EQ(FormatDuration(nanoseconds::min()).rfind("-9223372036", 0), 0u);
  EXPECT_EQ(FormatDuration(nanoseconds::max()).rfind("9223372036", 0), 0u);
}

TEST(ParseBool, OnOff) {
  EXPECT_TRUE(*ParseBool("on"));
  EXPECT_FALSE(*ParseBool("OFF"));
  EXPECT_TRUE(*ParseBool("1"));
  EXPECT_FALSE(ParseBool("maybe").ok());
}

}  // namespace
}  // namespace stallwatch
