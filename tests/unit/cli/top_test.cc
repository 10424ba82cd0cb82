#include "top.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fixture_text.h"

namespace stallwatch::cli {
namespace {

using testing::Fixture;
using testing::Lines;

TEST(Top, RowsFromLoopsAndStalls) {
  auto stalls = *ParseStallsBody(Fixture("stalls.json"));
  // The fixture's stalls started within a minute of this "now".
  const int64_t now = stalls[0].start_ns + 5'000'000'000;
  auto rows = ParseLoopsBody(Fixture("loops.json"), stalls, now, nullptr, nullptr);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  ASSERT_EQ(rows->size(), 4u);
  const LoopRow& main = (*rows)[0];  // stalled now: first
  EXPECT_EQ(main.loop, "main");
  EXPECT_NEAR(main.ongoing_s, 0.0893, 0.0001);
  EXPECT_EQ(main.ongoing_class, "cpu");
  EXPECT_EQ(main.top_frame, "stallwatch::cli::BurnCpuOnLoop (server.cc:321)");
  ASSERT_TRUE(main.stalls_per_min.has_value());
  EXPECT_EQ(*main.stalls_per_min, 3u);  // the three recent stalls started in the last minute
  EXPECT_TRUE(main.has_window);
  const LoopRow& worker = (*rows)[1];  // then by p99
  EXPECT_EQ(worker.loop, "worker-1");
  EXPECT_DOUBLE_EQ(worker.p99_s, 0.0011);
  EXPECT_EQ(worker.top_frame, "");
  EXPECT_FALSE((*rows)[2].has_window);
  // The disconnected process is listed after the live ones, whatever its p99.
  EXPECT_EQ((*rows)[3].loop, "connection-worker-17");
  EXPECT_FALSE((*rows)[3].connected);

  const std::string screen = FormatTop(*rows, "http://127.0.0.1:9466", 200);
  EXPECT_EQ(
      screen.rfind("stallwatch top — http://127.0.0.1:9466 — 4 loops (1 gone), 1 stalled now\n", 0),
      0u)
      << screen;
  EXPECT_NE(screen.find("STALLS/MIN"), std::string::npos);
  EXPECT_NE(screen.find("89.3ms cpu  stallwatch::cli::BurnCpuOnLoop (server.cc:321)"),
            std::string::npos)
      << screen;
  EXPECT_NE(screen.find("1.10ms"), std::string::npos) << screen;
  EXPECT_NE(screen.find("connection-worker-17"), std::string::npos) << screen;
  EXPECT_NE(screen.find(" gone"), std::string::npos) << screen;
}

TEST(Top, FitsTheWidthWithoutCuttingLoopNames) {
  auto stalls = *ParseStallsBody(Fixture("stalls.json"));
  auto rows = *ParseLoopsBody(Fixture("loops.json"), stalls, 0, nullptr, nullptr);
  for (size_t width : {40u, 60u, 80u, 100u, 120u, 160u}) {
    const std::string screen = FormatTop(rows, "http://127.0.0.1:9466", width);
    for (const std::string& l : Lines(screen)) {
      EXPECT_LE(DisplayWidth(l), width) << "width " << width << ":\n" << screen;
    }
  }
  // At 80 columns every column fits: names whole, the frame on a line of its own, whole.
  const std::string at80 = FormatTop(rows, "http://127.0.0.1:9466", 80);
  EXPECT_NE(at80.find("connection-worker-17"), std::string::npos) << at80;
  EXPECT_EQ(at80.find("…"), std::string::npos) << at80;
  EXPECT_NE(at80.find("  ↳ stallwatch::cli::BurnCpuOnLoop (server.cc:321)\n"), std::string::npos)
      << at80;
  EXPECT_NE(at80.find("P50"), std::string::npos) << at80;
  // Really out of room: the names are shortened with an ellipsis, the frame from the left.
  const std::string at40 = FormatTop(rows, "x", 40);
  EXPECT_NE(at40.find("…"), std::string::npos) << at40;
  EXPECT_NE(at40.find("BurnCpuOnLoop (server.cc:321)"), std::string::npos) << at40;
}

TEST(Top, StallsPerMinuteFromCountersOverRefreshes) {
  const std::string body = R"({"loops":[{"service":"s","pid":1,"loop":"l","stalls_total":10}]})";
  StallRate rate;
  const int64_t t0 = 1'000'000'000'000;
  auto first = *ParseLoopsBody(body, {}, t0, &rate, nullptr);
  EXPECT_FALSE(first[0].stalls_per_min.has_value());  // one sample: not known yet
  EXPECT_NE(FormatTop(first, "d").find(" - "), std::string::npos);
  // One second later 2 more: 2 in the last minute, not 2 per second.
  const std::string later = R"({"loops":[{"service":"s","pid":1,"loop":"l","stalls_total":12}]})";
  auto second = *ParseLoopsBody(later, {}, t0 + 1'000'000'000, &rate, nullptr);
  ASSERT_TRUE(second[0].stalls_per_min.has_value());
  EXPECT_EQ(*second[0].stalls_per_min, 2u);
  // Two minutes later, 6 more: the window keeps one baseline a minute back.
  const std::string much_later =
      R"({"loops":[{"service":"s","pid":1,"loop":"l","stalls_total":18}]})";
  for (int i = 2; i <= 120; ++i) {
    ParseLoopsBody(i == 120 ? much_later : later, {}, t0 + i * 1'000'000'000LL, &rate, nullptr)
        .status()
        .IgnoreError();
  }
  auto last = *ParseLoopsBody(much_later, {}, t0 + 121'000'000'000LL, &rate, nullptr);
  EXPECT_EQ(*last[0].stalls_per_min, 6u);
}

TEST(Top, FallsBackToTheLoopsLastKnownTopFrame) {
  auto stalls = *ParseStallsBody(Fixture("repeated_stalls.json"));
  const std::string body =
      R"({"loops":[{"service":"api","pid":300,"loop":"main","stalls_total":6,"connected":true},)"
      R"({"service":"api","pid":300,"loop":"worker-1","stalls_total":1}]})";
  KnownTopFrames known;
  auto rows = *ParseLoopsBody(body, stalls, 0, nullptr, &known);
  ASSERT_EQ(rows.size(), 2u);
  const LoopRow& main = rows[0].loop == "main" ? rows[0] : rows[1];
  const LoopRow& worker = rows[0].loop == "main" ? rows[1] : rows[0];
  // The latest stall came without stacks: the frame of the loop's earlier stall stands in.
  EXPECT_EQ(main.top_frame, "app::Cache::Reload (cache.cc:42)");
  EXPECT_TRUE(main.top_frame_earlier);
  EXPECT_NE(FormatTop(rows, "d", 120).find("as before: app::Cache::Reload (cache.cc:42)"),
            std::string::npos)
      << FormatTop(rows, "d", 120);
  EXPECT_EQ(worker.top_frame, "");
  // Remembered across refreshes: later stalls alone still get it.
  std::vector<StallFinding> newest(stalls.begin(), stalls.begin() + 2);
  auto again = *ParseLoopsBody(body, newest, 0, nullptr, &known);
  const LoopRow& main2 = again[0].loop == "main" ? again[0] : again[1];
  EXPECT_EQ(main2.top_frame, "app::Cache::Reload (cache.cc:42)");
}

TEST(Top, EmptyAndBad) {
  auto rows = ParseLoopsBody("{\"loops\":[]}", {}, 0, nullptr, nullptr);
  ASSERT_TRUE(rows.ok());
  EXPECT_NE(FormatTop(*rows, "d").find("(no loops reported yet)"), std::string::npos);
  EXPECT_FALSE(ParseLoopsBody("[1,2]", {}, 0, nullptr, nullptr).ok());
  EXPECT_FALSE(ParseLoopsBody("nope", {}, 0, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace stallwatch::cli
