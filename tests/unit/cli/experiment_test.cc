#include "experiment.h"

#include <gtest/gtest.h>

#include "experiment_daemon.h"

namespace stallwatch::cli {
namespace {

using std::chrono::milliseconds;

TEST(ExpectedQps, FollowsTheSeeds) {
  const milliseconds work(500);
  for (int c : {5, 10, 20}) {
    EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kBlock, c, work, 5), 2.0);
    EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kCpu, c, work, 5), 2.0);
    EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kUpstreamBlocking, c, work, 5), 2.0);
    EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kAsync, c, work, 5), c / 0.5);
    EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kUpstreamAsync, c, work, 5), c / 0.5);
  }
  EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kOffload, 3, work, 5), 6.0);
  EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kOffload, 5, work, 5), 10.0);
  EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kOffload, 20, work, 5), 10.0);
  EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kOffload, 20, milliseconds(100), 8), 80.0);
  EXPECT_DOUBLE_EQ(ExpectedQps(Mode::kAsync, 5, milliseconds(0), 5), 0.0);
}

TEST(Modes, NamesRoutesRoundTrip) {
  EXPECT_EQ(AllModes().size(), 6u);
  for (Mode m : AllModes()) {
    Mode back;
    ASSERT_TRUE(ParseMode(ModeName(m), &back));
    EXPECT_EQ(back, m);
  }
  Mode m;
  EXPECT_FALSE(ParseMode("sleep", &m));
  EXPECT_EQ(ModeRoute(Mode::kUpstreamBlocking, milliseconds(500)), "/upstream-blocking?ms=500");
  EXPECT_TRUE(ModeKeepsLoopFree(Mode::kOffload));
  EXPECT_FALSE(ModeKeepsLoopFree(Mode::kCpu));
}

TEST(RunLength, EndsNextToAWaveBoundary) {
  const milliseconds work(500);
  // Loop-free: a wave per work; 10s holds 20, the run ends half a work after the last.
  EXPECT_EQ(RunLength(Mode::kAsync, 20, work, std::chrono::seconds(10)), milliseconds(10250));
  EXPECT_EQ(RunLength(Mode::kOffload, 5, work, milliseconds(100)), milliseconds(750));
  // Blocking: a wave of c answers every c × work; the run ends half a work before one.
  EXPECT_EQ(RunLength(Mode::kBlock, 5, work, std::chrono::seconds(10)), milliseconds(9750));
  EXPECT_EQ(RunLength(Mode::kCpu, 20, work, std::chrono::seconds(10)), milliseconds(9750));
  EXPECT_EQ(RunLength(Mode::kUpstreamBlocking, 20, work, std::chrono::seconds(1)),
            milliseconds(9750));
}

TEST(ValidateExperimentOptions, Rejects) {
  ExperimentOptions o;
  EXPECT_TRUE(ValidateExperimentOptions(o).ok());
  o.concurrency = {5, 0};
  EXPECT_NE(ValidateExperimentOptions(o).message().find("--concurrency"), std::string::npos);
  o.concurrency = {5};
  o.work = milliseconds(0);
  EXPECT_NE(ValidateExperimentOptions(o).message().find("--work"), std::string::npos);
  o.work = milliseconds(100);
  o.modes.clear();
  EXPECT_NE(ValidateExperimentOptions(o).message().find("--modes"), std::string::npos);
}

Stack MakeStack(uint64_t samples, const std::vector<std::pair<std::string, std::string>>& frames) {
  Stack s;
  s.samples = samples;
  for (auto& [fn, mod] : frames) {
    s.frames.push_back(Frame{fn, mod, 0x10, "", 0});
  }
  return s;
}

TEST(TopBlockingFrame, SkipsLibcLibeventAndTheAgent) {
  const Stack s =
      MakeStack(1, {{"__restore_rt", "/usr/lib/x86_64-linux-gnu/libc.so.6"},
                    {"stallwatch::agent::internal::OnSample(int)", "/opt/lib/libstallwatch.so.0"},
                    {"clock_nanosleep", "/usr/lib/x86_64-linux-gnu/libc.so.6"},
                    {"__interceptor_nanosleep", "/usr/lib/x86_64-linux-gnu/libasan.so.8"},
                    {"", "linux-vdso.so.1"},
                    {"app::LoadConfig(std::map<int, std::string> const&)", "/usr/bin/stallwatch"},
                    {"event_base_loop", "/usr/lib/x86_64-linux-gnu/libevent_core-2.1.so.7"}});
  EXPECT_EQ(TopBlockingFrame(s), "app::LoadConfig");
  const Stack anon = MakeStack(1, {{"(anonymous namespace)::Work(int)", "/usr/bin/app"}});
  EXPECT_EQ(TopBlockingFrame(anon), "(anonymous namespace)::Work");
  const Stack unnamed = MakeStack(1, {{"", "/usr/bin/app"}});
  EXPECT_EQ(TopBlockingFrame(unnamed), "app+0x10");
  const Stack plumbing = MakeStack(1, {{"epoll_wait", "/lib/libc.so.6"}});
  EXPECT_EQ(TopBlockingFrame(plumbing), "");
  // A Python loop: the interpreter and the standard library's extension modules run the loop;
  // a native extension outside lib-dynload is the code.
  const Stack python = MakeStack(
      1,
      {{"clock_nanosleep", "/usr/lib/x86_64-linux-gnu/libc.so.6"},
       {"_PyEval_EvalFrameDefault", "/usr/bin/python3.11"},
       {"__vdso_clock_gettime", "[vdso: 7418]"},
       {"", "/usr/lib/python3.11/lib-dynload/_asyncio.cpython-311-x86_64-linux-gnu.so"},
       {"lz_compress", "/usr/lib/python3/dist-packages/fastlz.cpython-311-x86_64-linux-gnu.so"}});
  EXPECT_EQ(TopBlockingFrame(python), "lz_compress");
  // Python frames: the standard library's are plumbing; the handler (or a package) is the code.
  Frame readinto{"SocketIO.readinto", "", 0, "/usr/lib/python3.11/socket.py", 706};
  readinto.kind = "python";
  Frame get{"FetchBlocking.get", "", 0, "/srv/tornado_seed.py", 70};
  get.kind = "python";
  Stack fetch = MakeStack(1, {{"poll", "/usr/lib/x86_64-linux-gnu/libc.so.6"}});
  fetch.frames.push_back(readinto);
  fetch.frames.push_back(get);
  EXPECT_EQ(TopBlockingFrame(fetch), "FetchBlocking.get");
  Frame pkg{"Client.fetch", "", 0, "/usr/lib/python3/dist-packages/requests/api.py", 59};
  pkg.kind = "python";
  fetch.frames.insert(fetch.frames.begin() + 2, pkg);
  EXPECT_EQ(TopBlockingFrame(fetch), "Client.fetch");
}

TEST(SummarizeStalls, ClassByTimeFrameBySamples) {
  StallFinding a;
  a.duration_s = 0.2;
  a.stall_class = StallClass::kCpu;
  a.stacks.push_back(MakeStack(2, {{"Hash()", "/usr/bin/app"}}));
  StallFinding b;
  b.duration_s = 0.9;
  b.stall_class = StallClass::kBlocked;
  b.syscall = "recvfrom";
  b.stacks.push_back(MakeStack(5, {{"recv", "/lib/libc.so.6"}, {"Fetch()", "/usr/bin/app"}}));
  StallFinding starved;  // busy code that also waited for a CPU: still the culprit
  starved.duration_s = 0.1;
  starved.stall_class = StallClass::kStarved;
  starved.stacks.push_back(MakeStack(1, {{"Hash()", "/usr/bin/app"}}));
  StallFinding waiting;  // caught in epoll_wait: the loop was waiting for events
  waiting.duration_s = 0.05;
  waiting.stall_class = StallClass::kBlocked;
  waiting.syscall = "epoll_wait";
  waiting.stacks.push_back(
      MakeStack(80, {{"epoll_wait", "/lib/libc.so.6"}, {"Server::Run()", "/usr/bin/app"}}));
  const RunFindings f = SummarizeStalls({a, b, starved, waiting});
  EXPECT_EQ(f.stalls, 4u);
  EXPECT_DOUBLE_EQ(f.max_stall_s, 0.9);
  EXPECT_EQ(f.stall_class, "blocked");
  EXPECT_EQ(f.top_frame, "Fetch");
  EXPECT_EQ(f.syscall, "recvfrom");
  const RunFindings none = SummarizeStalls({});
  EXPECT_EQ(none.stalls, 0u);
  EXPECT_EQ(none.stall_class, "");
  EXPECT_EQ(none.top_frame, "");
}

TEST(CountOwnStalls, CountsOnlyThisProcessSinceTheStart) {
  const std::string body = R"({"stalls":[
    {"pid":100,"start_ns":2000,"service":"experiment"},
    {"pid":100,"start_ns":1000,"service":"experiment"},
    {"pid":200,"start_ns":3000,"service":"memcached"},
    {"pid":100,"start_ns":2500,"service":"experiment"},
    {"pid":"100","start_ns":2600}
  ]})";
  auto n = CountOwnStalls(body, 100, 1500);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(*CountOwnStalls(R"({"stalls":[]})", 100, 0), 0u);
  EXPECT_FALSE(CountOwnStalls("not json", 100, 0).ok());
}

}  // namespace
}  // namespace stallwatch::cli
