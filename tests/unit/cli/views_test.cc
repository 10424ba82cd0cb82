#include "views.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace stallwatch::cli {
namespace {

std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(SW_CLI_FIXTURES) + "/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ParseStallsBody, DaemonObjectAndBareArray) {
  auto stalls = ParseStallsBody(Fixture("stalls.json"));
  ASSERT_TRUE(stalls.ok()) << stalls.status().message();
  ASSERT_EQ(stalls->size(), 3u);
  EXPECT_TRUE((*stalls)[0].ongoing);
  EXPECT_EQ((*stalls)[1].syscall, "recvfrom");
  auto bare = ParseStallsBody("[]");
  ASSERT_TRUE(bare.ok());
  EXPECT_TRUE(bare->empty());
}

TEST(ParseStallsBody, ErrorsAreOneLine) {
  for (const char* bad : {"not json", "{\"loops\":[]}", "{\"stalls\":[{\"kind\":\"delay\"}]}"}) {
    auto s = ParseStallsBody(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().message().find('\n'), std::string::npos) << s.status().message();
  }
}

TEST(FilterStalls, ServiceLoopSinceOngoing) {
  auto stalls = *ParseStallsBody(Fixture("stalls.json"));
  EXPECT_EQ(FilterStalls(stalls, {.service = "demo"}).size(), 3u);
  EXPECT_EQ(FilterStalls(stalls, {.service = "other"}).size(), 0u);
  EXPECT_EQ(FilterStalls(stalls, {.loop = "main"}).size(), 3u);
  EXPECT_EQ(FilterStalls(stalls, {.ongoing = true}).size(), 1u);
  EXPECT_EQ(FilterStalls(stalls, {.ongoing = false}).size(), 2u);
  // The blocked stall started first; since its start + 1 ns leaves the two later ones.
  EXPECT_EQ(FilterStalls(stalls, {.since_ns = stalls[2].start_ns + 1}).size(), 2u);
}

TEST(FormatStalls, ClassSyscallTargetHintAndStack) {
  auto stalls = *ParseStallsBody(Fixture("stalls.json"));
  const std::string text = FormatStalls(stalls);
  EXPECT_NE(text.find("demo pid 4242 loop main  ONGOING for 89.3ms  cpu"), std::string::npos)
      << text;
  EXPECT_NE(text.find("stalled 101ms  blocked"), std::string::npos) << text;
  EXPECT_NE(text.find("in recvfrom() on socket 127.0.0.1:5432"), std::string::npos) << text;
  EXPECT_NE(text.find("hint: The loop thread slept in clock_nanosleep()"), std::string::npos)
      << text;
  EXPECT_NE(text.find("    stallwatch::cli::BlockingSleepOnLoop(int)  (stallwatch+0x"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("server.cc:"), std::string::npos) << text;
  const std::string bare = FormatStalls(stalls, {.stacks = false});
  EXPECT_EQ(bare.find("stack ("), std::string::npos);
  EXPECT_EQ(FormatStalls({}), "no stalls\n");
}

TEST(FormatStacksBody, MostSamplesFirstWithTopFrame) {
  auto text = FormatStacksBody(Fixture("stacks.json"));
  ASSERT_TRUE(text.ok()) << text.status().message();
  EXPECT_EQ(text->rfind("7 samples (70.0%)  demo  top: stallwatch::cli::BlockingSleepOnLoop\n", 0),
            0u)
      << *text;
  EXPECT_NE(text->find("3 samples (30.0%)  demo  top: stallwatch::cli::BurnCpuOnLoop"),
            std::string::npos);
  EXPECT_FALSE(FormatStacksBody("{").ok());
  EXPECT_EQ(*FormatStacksBody("{\"stacks\":[]}"), "no stacks\n");
}

TEST(Top, RowsFromLoopsAndStalls) {
  auto stalls = *ParseStallsBody(Fixture("stalls.json"));
  std::map<LoopKey, uint64_t> previous{{{"demo", 4242, "main"}, 3}};
  auto rows = ParseLoopsBody(Fixture("loops.json"), stalls, previous, 2.0);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  ASSERT_EQ(rows->size(), 3u);
  const LoopRow& main = (*rows)[0];  // stalled now: first
  EXPECT_EQ(main.loop, "main");
  EXPECT_NEAR(main.ongoing_s, 0.0893, 0.0001);
  EXPECT_EQ(main.ongoing_class, "cpu");
  EXPECT_EQ(main.top_frame, "stallwatch::cli::BurnCpuOnLoop");
  EXPECT_DOUBLE_EQ(main.stalls_per_s, 1.0);  // (5 - 3) / 2 s
  EXPECT_TRUE(main.has_window);
  const LoopRow& worker = (*rows)[1];  // then by p99
  EXPECT_EQ(worker.loop, "worker-1");
  EXPECT_DOUBLE_EQ(worker.p99_s, 0.0011);
  EXPECT_EQ(worker.top_frame, "");
  EXPECT_FALSE((*rows)[2].has_window);

  const std::string screen = FormatTop(*rows, "http://127.0.0.1:9466", 200);
  EXPECT_EQ(screen.rfind("stallwatch top — http://127.0.0.1:9466 — 3 loops, 1 stalled now\n", 0),
            0u)
      << screen;
  EXPECT_NE(screen.find("SERVICE"), std::string::npos);
  EXPECT_NE(screen.find("89.3ms cpu  stallwatch::cli::BurnCpuOnLoop"), std::string::npos) << screen;
  EXPECT_NE(screen.find("1.10ms"), std::string::npos) << screen;
  // Narrow terminals: every line is cut to the width.
  const std::string narrow = FormatTop(*rows, "x", 40);
  size_t pos = 0;
  while (pos < narrow.size()) {
    const size_t eol = narrow.find('\n', pos);
    EXPECT_LE(eol - pos, 42u) << narrow;  // "—" is 3 bytes
    pos = eol + 1;
  }
}

TEST(Top, EmptyAndBad) {
  auto rows = ParseLoopsBody("{\"loops\":[]}", {}, {}, 0);
  ASSERT_TRUE(rows.ok());
  EXPECT_NE(FormatTop(*rows, "d").find("(no loops reported yet)"), std::string::npos);
  EXPECT_FALSE(ParseLoopsBody("[1,2]", {}, {}, 0).ok());
  EXPECT_FALSE(ParseLoopsBody("nope", {}, {}, 0).ok());
}

}  // namespace
}  // namespace stallwatch::cli
