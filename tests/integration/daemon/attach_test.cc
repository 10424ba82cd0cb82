// Attaching: who may connect to the agent socket, under which pid a connection reports, the
// per-uid connection limit, and a loop visible in the daemon right after attach. Real daemon,
// real agent, real Unix sockets.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "stallwatch/agent.h"
#include "test_util.h"

using namespace std::chrono_literals;

namespace stallwatch::daemon {
namespace {

using testing::DaemonOptionsIn;
using testing::DaemonThread;
using testing::HttpGet;
using testing::LoopThread;
using testing::MetricValue;
using testing::RawClient;
using testing::TempDir;
using testing::WaitFor;

wire::Hello HelloOf(const std::string& service, int64_t pid, const std::string& loop) {
  wire::Hello h;
  h.service = service;
  h.pid = pid;
  h.host = "test";
  h.agent_version = "test";
  h.loops = {loop};
  return h;
}

nlohmann::json Loops(const DaemonThread& d) {
  auto r = HttpGet(d.http_port(), "/api/v1/loops");
  if (r.status != 200) return nlohmann::json::array();
  return nlohmann::json::parse(r.body)["loops"];
}

// The pid the daemon shows for the loop `loop` of `service`, 0 while it has none.
int64_t PidOf(const DaemonThread& d, const std::string& service, const std::string& loop) {
  for (const auto& l : Loops(d)) {
    if (l["service"] == service && l["loop"] == loop) return l["pid"].get<int64_t>();
  }
  return 0;
}

TEST(AgentSocket, OpenToLocalUsersByDefaultWithASearchableDirectory) {
  TempDir dir;
  DaemonThread d(DaemonOptionsIn(dir));
  ASSERT_TRUE(d.ok()) << d.error();
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((dir.path() + "/run/agent.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u);
}

// A directory left by an earlier run in group mode (0750) is opened to the socket's users: other
// users must reach a socket that is open to them.
TEST(AgentSocket, AnOwnDirectoryLeftPrivateIsMadeSearchableForAnOpenSocket) {
  TempDir dir;
  const std::string run = dir.path() + "/run";
  ASSERT_EQ(::mkdir(run.c_str(), 0750), 0);
  ASSERT_EQ(::chmod(run.c_str(), 0750), 0);
  DaemonThread d(DaemonOptionsIn(dir));
  ASSERT_TRUE(d.ok()) << d.error();
  struct stat st {};
  ASSERT_EQ(::stat(run.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0751u);
}

TEST(AgentSocket, GroupModeKeepsTheDirectoryPrivate) {
  TempDir dir;
  auto o = DaemonOptionsIn(dir);
  o.agent_socket_mode = 0660;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(::stat((dir.path() + "/run/agent.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

TEST(AgentSocket, AHelloClaimingAnotherProcessReportsUnderTheConnectingPid) {
  TempDir dir;
  DaemonThread d(DaemonOptionsIn(dir));
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient c(dir.path() + "/run/agent.sock");
  ASSERT_TRUE(c.connected());
  // pid 1 is init: nobody but init may report for it.
  ASSERT_TRUE(c.Send(HelloOf("forger", 1, "main")));
  DelayFinding w;
  w.service = "forger";
  w.pid = 1;
  w.loop = "main";
  w.window_s = 1;
  ASSERT_TRUE(c.Send(w));
  ASSERT_TRUE(WaitFor([&] { return PidOf(d, "forger", "main") != 0; }, 5s));
  EXPECT_EQ(PidOf(d, "forger", "main"), ::getpid());
  const std::string m = d.Metrics();
  EXPECT_FALSE(MetricValue(m, "stallwatch_process_info", {"pid=\"1\""}).has_value()) << m;
  // The window was taken (rewritten to the connection's pid), not refused.
  EXPECT_EQ(
      MetricValue(m, "stallwatch_daemon_frames_rejected_total", {"reason=\"identity_mismatch\""}),
      0.0);
}

TEST(AgentSocket, AChildMayReportForItsParentAsTheWatchdogProcessDoes) {
  TempDir dir;
  DaemonThread d(DaemonOptionsIn(dir));
  ASSERT_TRUE(d.ok()) << d.error();
  const std::string sock = dir.path() + "/run/agent.sock";
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) {
    RawClient c(sock);
    const bool ok = c.connected() && c.Send(HelloOf("child-reports", parent, "main"));
    ::usleep(3'000'000);  // stay connected while the parent looks
    ::_exit(ok ? 0 : 1);
  }
  ASSERT_GT(child, 0);
  const bool seen = WaitFor([&] { return PidOf(d, "child-reports", "main") != 0; }, 2500ms);
  const int64_t pid = PidOf(d, "child-reports", "main");
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(seen);
  EXPECT_EQ(pid, parent);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(AgentSocket, ConnectionsOfOneUidAreLimitedAndCounted) {
  TempDir dir;
  auto o = DaemonOptionsIn(dir);
  o.max_agents_per_uid = 2;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  const std::string sock = dir.path() + "/run/agent.sock";
  RawClient a(sock), b(sock);
  ASSERT_TRUE(a.Send(HelloOf("a", ::getpid(), "main")));
  ASSERT_TRUE(b.Send(HelloOf("b", ::getpid(), "main")));
  ASSERT_TRUE(WaitFor([&] { return Loops(d).size() == 2; }, 5s));
  RawClient third(sock);
  EXPECT_TRUE(third.ClosedByPeer(5s));
  EXPECT_EQ(
      MetricValue(d.Metrics(), "stallwatch_daemon_frames_rejected_total", {"reason=\"limit\""}),
      1.0);
  EXPECT_FALSE(a.ClosedByPeer(100ms));
  // A slot freed is a slot again.
  a.Close();
  ASSERT_TRUE(WaitFor(
      [&] {
        RawClient again(sock);
        return again.Send(HelloOf("again", ::getpid(), "main")) && !again.ClosedByPeer(300ms);
      },
      5s));
}

TEST(AgentAttach, ALoopIsVisibleInTheDaemonWithinASecondLongBeforeItsFirstWindow) {
  TempDir dir;
  DaemonThread d(DaemonOptionsIn(dir));
  ASSERT_TRUE(d.ok()) << d.error();
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    LoopThread loop;
    Options o;
    o.service = "announce";
    o.loop_name = "early-" + std::to_string(i);
    o.endpoint = "unix:" + dir.path() + "/run/agent.sock";
    o.report_interval = 60s;  // only the announcement can make it appear in time
    const auto t0 = std::chrono::steady_clock::now();
    auto agent = Agent::Attach(loop.base(), o);
    ASSERT_TRUE(agent.ok()) << agent.status().message();
    loop.Start();
    const bool seen = WaitFor([&] { return PidOf(d, "announce", o.loop_name) != 0; }, 3s);
    const auto t1 = std::chrono::steady_clock::now();
    ASSERT_TRUE(seen) << "loop " << o.loop_name << " not in /api/v1/loops after 3 s";
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    for (const auto& l : Loops(d)) {
      if (l["loop"] == o.loop_name) {
        EXPECT_TRUE(l["last_window"].is_null()) << l.dump();
      }
    }
    loop.Stop();
  }
  std::sort(ms.begin(), ms.end());
  std::printf("attach -> visible in /api/v1/loops: median %.0f ms, max %.0f ms (50 ms polling)\n",
              ms[ms.size() / 2], ms.back());
  EXPECT_LT(ms[ms.size() / 2], 1500.0);
}

}  // namespace
}  // namespace stallwatch::daemon
