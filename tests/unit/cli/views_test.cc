#include "views.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "fixture_text.h"

namespace stallwatch::cli {
namespace {

using testing::Fixture;
using testing::Lines;

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
  EXPECT_NE(text.find("demo pid 4242 loop main  ONGOING for 89.3ms  cpu  in "
                      "stallwatch::cli::BurnCpuOnLoop (server.cc:321)\n"),
            std::string::npos)
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

Stack StackOf(std::vector<Frame> frames, uint64_t samples = 1) {
  Stack s;
  s.samples = samples;
  s.frames = std::move(frames);
  return s;
}

const char* const kLibc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const char* const kEvent = "/usr/lib/x86_64-linux-gnu/libevent_core-2.1.so.7";
const char* const kApp = "/srv/app/bin/app";

TEST(MergeStacksForDisplay, OneEntryPerFunctionAndLine) {
  const Stack a = StackOf({{"spin()", kApp, 0x100, "/src/spin.cc", 7}, {"main", kApp, 0x50}}, 3);
  const Stack b = StackOf({{"spin()", kApp, 0x104, "/src/spin.cc", 7}, {"main", kApp, 0x50}}, 2);
  const Stack c = StackOf({{"spin()", kApp, 0x108, "/src/spin.cc", 8}, {"main", kApp, 0x50}}, 4);
  const Stack d = StackOf({{"", kApp, 0x200}, {"main", kApp, 0x50}}, 1);
  const Stack e = StackOf({{"", kApp, 0x204}, {"main", kApp, 0x50}}, 1);
  const auto merged = MergeStacksForDisplay({a, b, c, d, e});
  ASSERT_EQ(merged.size(), 4u);  // a and b are one; unnamed frames keep their exact pc
  EXPECT_EQ(merged[0].samples, 5u);
  EXPECT_EQ(merged[0].frames[0].line, 7);
  EXPECT_EQ(merged[1].samples, 4u);
  EXPECT_EQ(merged[1].frames[0].line, 8);
}

TEST(UserTopFrame, FirstFrameOfTheProgramsOwnCode) {
  // Through libc, into the program, above the dispatch.
  EXPECT_EQ(
      UserTopFrame(StackOf({{"clock_nanosleep@GLIBC_2.2.5", kLibc, 1, "x.c", 48},
                            {"usleep", kLibc, 2},
                            {"app::Cache::Reload(std::string const&)", kApp, 3, "/s/cache.cc", 42},
                            {"", kEvent, 4},
                            {"event_base_loop", kEvent, 5},
                            {"main", kApp, 6, "/s/main.cc", 9}})),
      "app::Cache::Reload (cache.cc:42)");
  // A system library called by the program: the program's caller names the culprit.
  EXPECT_EQ(UserTopFrame(StackOf({{"PQexec", "/usr/lib/x86_64-linux-gnu/libpq.so.5", 1},
                                  {"app::Db::Query(char const*)", kApp, 2, "/s/db.cc", 88},
                                  {"event_base_loop", kEvent, 5}})),
            "app::Db::Query (db.cc:88)");
  // Only system libraries above the dispatch: the first outside libc/libevent.
  EXPECT_EQ(UserTopFrame(StackOf({{"read", kLibc, 1},
                                  {"PQexec", "/usr/lib/x86_64-linux-gnu/libpq.so.5", 2},
                                  {"event_base_loop", kEvent, 5},
                                  {"main", kApp, 6}})),
            "PQexec");
  // Waiting in the loop itself: main (below the dispatch) is not the culprit.
  EXPECT_EQ(UserTopFrame(StackOf({{"epoll_wait", kLibc, 1},
                                  {"", kEvent, 2},
                                  {"event_base_loop", kEvent, 3},
                                  {"main", kApp, 4, "/s/main.cc", 9}})),
            "epoll_wait");
  // No names at all.
  EXPECT_EQ(UserTopFrame(StackOf({{"", kApp, 0x1f0}})), "app+0x1f0");
  EXPECT_EQ(UserTopFrame(Stack{}), "");
}

TEST(FormatStalls, HeadlineGroupsRepeatsAndFoldsBelowTheDispatch) {
  auto stalls = *ParseStallsBody(Fixture("repeated_stalls.json"));
  ASSERT_EQ(stalls.size(), 7u);
  const std::string text = FormatStalls(stalls);
  // The four repeats without stacks and the stall with the stack are one entry.
  EXPECT_NE(text.find("api pid 300 loop main  stalled 201ms  blocked  in app::Cache::Reload "
                      "(cache.cc:42)\n  ×5, same stack: from "),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(", 200ms–204ms each\n"), std::string::npos) << text;
  // Its two stacks differ only by pc within Reload's line 42: one entry.
  EXPECT_NE(text.find("  stack (5 samples, proc):\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("stack (3 samples"), std::string::npos) << text;
  // The callers of event_base_loop are folded.
  EXPECT_NE(text.find("    event_base_loop  (libevent_core-2.1.so.7.0.1+0x1d42f)\n"
                      "    … 4 frames below event_base_loop folded (--full shows them)\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("__libc_start_main"), std::string::npos) << text;
  // The cpu stall is an entry of its own, named by the program's caller of libpq.
  EXPECT_NE(text.find("stalled 120ms  cpu  in app::Db::Query (db.cc:88)\n"), std::string::npos)
      << text;
  // Nothing known for worker-1: its note, no invented frame.
  EXPECT_NE(text.find("loop worker-1  stalled 300ms  blocked\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  no stacks: stack report suppressed by the rate limit\n"),
            std::string::npos)
      << text;
  size_t entries = 0;
  for (const std::string& l : Lines(text)) {
    entries += l.rfind("20", 0) == 0 ? 1 : 0;
  }
  EXPECT_EQ(entries, 3u) << text;

  const std::string full = FormatStalls(stalls, {.full = true});
  EXPECT_NE(full.find("__libc_start_main_impl  (libc.so.6+0x"), std::string::npos) << full;
  EXPECT_NE(full.find("    main  (api+0x1000)  main.cc:57\n"), std::string::npos) << full;
  EXPECT_EQ(full.find("folded"), std::string::npos) << full;
}

TEST(FormatStalls, StallsWithoutStacksNameTheLoopsEarlierFrame) {
  auto stalls = *ParseStallsBody(Fixture("repeated_stalls.json"));
  KnownTopFrames known;
  LearnTopFrames(stalls, &known);
  // Only the newest repeat, with what an earlier listing learnt.
  const std::string text = FormatStalls({stalls[0]}, {}, known);
  EXPECT_NE(text.find("  no stacks: stack not sent again"), std::string::npos) << text;
  EXPECT_NE(text.find("  same stack as before: app::Cache::Reload (cache.cc:42)\n"),
            std::string::npos)
      << text;
  // Without that knowledge: no frame is made up.
  const std::string alone = FormatStalls({stalls[0]});
  EXPECT_EQ(alone.find("same stack as before"), std::string::npos) << alone;
  EXPECT_EQ(alone.find(" in app::"), std::string::npos) << alone;
  // A stall older than the known stack does not borrow it.
  StallFinding older = stalls[0];
  older.start_ns = stalls[4].start_ns - 1;
  EXPECT_EQ(EarlierTopFrame(older, known), "");
}

TEST(StallFollower, PrintsWhatIsNewOnceAndRepeatsShort) {
  auto stalls = *ParseStallsBody(Fixture("repeated_stalls.json"));
  // At start the listing showed everything but the two newest.
  StallFollower follower;
  follower.Seen({stalls.begin() + 2, stalls.end()});
  std::string out = follower.Update(stalls);
  // stall 9 is new (full entry, frame from the earlier stack), stall 10 repeats it (one line).
  EXPECT_NE(out.find("stalled 202ms  blocked  in app::Cache::Reload (cache.cc:42) (as before)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\n  ×2 same stack: "), std::string::npos) << out;
  EXPECT_NE(out.find(" stalled 201ms\n"), std::string::npos) << out;
  EXPECT_EQ(follower.Update(stalls), "");  // nothing new
  // An ongoing stall is printed when it appears and once more when it closes.
  StallFinding ongoing = stalls[5];
  ongoing.stall_id = 11;
  ongoing.start_ns = stalls[0].start_ns + 1'000'000'000;
  ongoing.ongoing = true;
  EXPECT_NE(follower.Update({ongoing}).find("ONGOING for"), std::string::npos);
  ongoing.duration_s = 0.5;
  EXPECT_EQ(follower.Update({ongoing}), "");  // a later update of the same stall
  ongoing.ongoing = false;
  EXPECT_NE(follower.Update({ongoing}).find("stalled 500ms  cpu  in app::Db::Query"),
            std::string::npos);
  // JSON Lines when asked.
  StallFollower json_follower({}, true);
  const std::string lines = json_follower.Update({stalls[0]});
  EXPECT_EQ(lines.rfind("{\"", 0), 0u) << lines;
  EXPECT_EQ(lines.back(), '\n');
}

TEST(ParseStallsJsonLines, LatestReportPerStallAndMalformedLinesCounted) {
  const JsonLinesStalls parsed = ParseStallsJsonLines(Fixture("findings.jsonl"));
  EXPECT_EQ(parsed.lines, 7u);
  EXPECT_EQ(parsed.malformed, 2u);
  EXPECT_EQ(parsed.first_malformed, 3u);
  ASSERT_EQ(parsed.stalls.size(), 3u);
  // Ongoing first, then newest first.
  EXPECT_TRUE(parsed.stalls[0].ongoing);
  EXPECT_EQ(parsed.stalls[0].service, "batch");
  EXPECT_EQ(parsed.stalls[1].stall_id, 7u);
  // Stall 6: the closing report, with the stack of its ongoing report.
  EXPECT_EQ(parsed.stalls[2].stall_id, 6u);
  EXPECT_FALSE(parsed.stalls[2].ongoing);
  EXPECT_DOUBLE_EQ(parsed.stalls[2].duration_s, 0.2);
  ASSERT_EQ(parsed.stalls[2].stacks.size(), 1u);
  ASSERT_EQ(parsed.loops.size(), 2u);
  EXPECT_EQ(std::get<2>(parsed.loops[0]), "main");
  // The same rendering as the daemon's stalls; 7 repeats 6.
  const std::string text = FormatStalls(parsed.stalls);
  EXPECT_NE(text.find("×2, same stack"), std::string::npos) << text;
  EXPECT_NE(text.find("in app::Cache::Reload (cache.cc:42)"), std::string::npos) << text;
  EXPECT_EQ(ParseStallsJsonLines("").stalls.size(), 0u);
}

TEST(NoMatchMessage, NamesTheKnownServicesAndLoops) {
  const std::vector<LoopKey> known = {
      {"api", 300, "main"}, {"api", 300, "worker-1"}, {"db", 5, "main"}};
  EXPECT_EQ(NoMatchMessage({.service = "apj"}, known, "the daemon's stalls"),
            "no service 'apj' in the daemon's stalls; known services: api, db");
  EXPECT_EQ(NoMatchMessage({.loop = "mian"}, known, "f.jsonl"),
            "no loop 'mian' in f.jsonl; known loops: main (api), main (db), worker-1 (api)");
  EXPECT_EQ(NoMatchMessage({.service = "db", .loop = "worker-1"}, known, "x"),
            "no loop 'worker-1' of service 'db' in x; known loops: main");
  EXPECT_EQ(NoMatchMessage({.service = "api", .loop = "main"}, known, "x"), "");
  EXPECT_EQ(NoMatchMessage({.loop = "x"}, {}, "x"), "no loop 'x' in x; known loops: none");
}

TEST(FormatStacksBody, MostSamplesFirstWithTopFrame) {
  auto text = FormatStacksBody(Fixture("stacks.json"));
  ASSERT_TRUE(text.ok()) << text.status().message();
  EXPECT_EQ(
      text->rfind(
          "7 samples (70.0%)  demo  top: stallwatch::cli::BlockingSleepOnLoop (server.cc:313)\n",
          0),
      0u)
      << *text;
  EXPECT_NE(
      text->find("3 samples (30.0%)  demo  top: stallwatch::cli::BurnCpuOnLoop (server.cc:321)"),
      std::string::npos);
  // Callers of event_base_loop are folded unless full.
  EXPECT_NE(text->find("    event_base_loop  (libevent_core-2.1.so.7.0.1+0x1d42f)\n"
                       "    … 5 frames below event_base_loop folded (--full shows them)\n"),
            std::string::npos)
      << *text;
  EXPECT_EQ(text->find("Server::Run()"), std::string::npos) << *text;
  auto full = FormatStacksBody(Fixture("stacks.json"), true);
  EXPECT_NE(full->find("stallwatch::cli::Server::Run()  (stallwatch+0x"), std::string::npos)
      << *full;
  EXPECT_FALSE(FormatStacksBody("{").ok());
  EXPECT_EQ(*FormatStacksBody("{\"stacks\":[]}"), "no stacks\n");
}

TEST(FormatStacksBody, OneEntryPerFunctionAndLine) {
  // The daemon merges by exact pc: two pcs of spin()'s line 7 come as two stacks.
  const std::string body = R"js({"stacks":[
    {"service":"s","samples":3,"frames":[{"function":"spin()","module":"/a/app","offset":256,
      "file":"/s/spin.cc","line":7}]},
    {"service":"s","samples":2,"frames":[{"function":"spin()","module":"/a/app","offset":260,
      "file":"/s/spin.cc","line":7}]},
    {"service":"s","samples":1,"frames":[{"function":"spin()","module":"/a/app","offset":300,
      "file":"/s/spin.cc","line":8}]}]})js";
  auto text = FormatStacksBody(body);
  ASSERT_TRUE(text.ok()) << text.status().message();
  EXPECT_EQ(text->rfind("5 samples (83.3%)  s  top: spin (spin.cc:7)\n", 0), 0u) << *text;
  EXPECT_NE(text->find("1 samples (16.7%)  s  top: spin (spin.cc:8)\n"), std::string::npos)
      << *text;
  EXPECT_EQ(text->find("3 samples"), std::string::npos) << *text;
}

}  // namespace
}  // namespace stallwatch::cli
