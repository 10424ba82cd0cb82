#include "routes.h"

#include <gtest/gtest.h>

namespace stallwatch::cli {
namespace {

TEST(ParseMsParam, AbsentGivesFallback) {
  auto ms = ParseMsParam("", "ms", 500);
  ASSERT_TRUE(ms.ok());
  EXPECT_EQ(*ms, 500);
  EXPECT_EQ(*ParseMsParam("other=3", "ms", 7), 7);
}

TEST(ParseMsParam, ReadsMilliseconds) {
  EXPECT_EQ(*ParseMsParam("ms=250", "ms", 500), 250);
  EXPECT_EQ(*ParseMsParam("x=1&ms=0", "ms", 500), 0);
  EXPECT_EQ(*ParseMsParam("ms=60000", "ms", 500), 60000);
}

TEST(ParseMsParam, RejectsWithTheAcceptedForm) {
  for (const char* q : {"ms=abc", "ms=-5", "ms=1.5", "ms=", "ms=60001", "ms=99999999999"}) {
    auto ms = ParseMsParam(q, "ms", 500);
    ASSERT_FALSE(ms.ok()) << q;
    EXPECT_EQ(ms.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(ms.status().message().find("integer number of milliseconds"), std::string::npos)
        << ms.status().message();
    EXPECT_NE(ms.status().message().find("?ms=500"), std::string::npos);
    EXPECT_EQ(ms.status().message().find('\n'), std::string::npos);
  }
}

TEST(ParseControlQuery, Defaults) {
  auto spec = ParseControlQuery("");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->duration, std::chrono::milliseconds(200));
  EXPECT_EQ(spec->period, std::chrono::milliseconds(1000));
  EXPECT_FALSE(spec->cpu);
}

TEST(ParseControlQuery, DurationsKindAndBareMilliseconds) {
  auto spec = ParseControlQuery("duration=0.5s&period=2s&kind=cpu");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->duration, std::chrono::milliseconds(500));
  EXPECT_EQ(spec->period, std::chrono::milliseconds(2000));
  EXPECT_TRUE(spec->cpu);
  auto bare = ParseControlQuery("duration=300&period=300&kind=sleep");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->duration, std::chrono::milliseconds(300));
  EXPECT_FALSE(bare->cpu);
}

TEST(ParseControlQuery, Rejects) {
  for (const char* q :
       {"kind=gpu", "duration=abc", "duration=0", "duration=2m", "duration=500ms&period=100ms"}) {
    auto spec = ParseControlQuery(q);
    ASSERT_FALSE(spec.ok()) << q;
    EXPECT_NE(spec.status().message().find("/control/block?duration="), std::string::npos)
        << spec.status().message();
  }
}

TEST(RouteOf, EveryPathAndNothingElse) {
  EXPECT_EQ(RouteOf("/"), Route::kHello);
  EXPECT_EQ(RouteOf("/block"), Route::kBlock);
  EXPECT_EQ(RouteOf("/cpu"), Route::kCpu);
  EXPECT_EQ(RouteOf("/async"), Route::kAsync);
  EXPECT_EQ(RouteOf("/offload"), Route::kOffload);
  EXPECT_EQ(RouteOf("/upstream-blocking"), Route::kUpstreamBlocking);
  EXPECT_EQ(RouteOf("/upstream-async"), Route::kUpstreamAsync);
  EXPECT_EQ(RouteOf("/control/block"), Route::kControlBlock);
  EXPECT_EQ(RouteOf("/control/stats"), Route::kControlStats);
  EXPECT_EQ(RouteOf("/control/unblock"), Route::kControlUnblock);
  for (const char* path : {"", "/block/", "/Block", "/control", "/control/", "/blockx", "//"}) {
    EXPECT_EQ(RouteOf(path), Route::kUnknown) << path;
  }
}

}  // namespace
}  // namespace stallwatch::cli
