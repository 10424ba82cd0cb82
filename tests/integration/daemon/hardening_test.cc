// stallwatchd under hostile or broken clients (docs/security.md): every case is refused or
// bounded, counted, and leaves other agents unaffected. The daemon's core runs in-process on its
// own loop thread; clients use real Unix and TCP sockets on loopback.
#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ingest.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/histogram.h"
#include "test_util.h"

namespace stallwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::DaemonOptionsIn;
using testing::DaemonThread;
using testing::HttpGet;
using testing::LoopThread;
using testing::MetricValue;
using testing::RawClient;
using testing::TempDir;
using testing::WaitFor;
using Clock = std::chrono::steady_clock;

wire::Hello Hi(const std::string& service, int64_t pid, std::vector<std::string> loops = {"main"}) {
  wire::Hello h;
  h.service = service;
  h.pid = pid;
  h.loops = std::move(loops);
  return h;
}

DelayFinding Window(const std::string& service, int64_t pid, const std::string& loop = "main") {
  DelayFinding d;
  d.service = service;
  d.pid = pid;
  d.loop = loop;
  d.window_s = 1;
  d.count = 1;
  d.sum_s = 0.0001;
  d.delay_buckets = {{static_cast<uint32_t>(HistBucketIndex(100'000)), 1}};
  return d;
}

double Rejected(const DaemonThread& d, const std::string& reason) {
  return MetricValue(d.Metrics(), "stallwatch_daemon_frames_rejected_total",
                     {"reason=\"" + reason + "\""})
      .value_or(-1);
}

double DelayCount(const DaemonThread& d, const std::string& service,
                  const std::string& loop = "main") {
  return MetricValue(d.Metrics(), "stallwatch_loop_delay_seconds_count",
                     {"service=\"" + service + "\"", "loop=\"" + loop + "\""})
      .value_or(0);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

TEST(Hardening, HandshakeThatNeverComesIsClosedAfterTheTimeout) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.handshake_timeout = 500ms;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient good(o.agent_socket);
  ASSERT_TRUE(good.Send(Hi("good", 2001)));

  const auto start = Clock::now();
  RawClient mute(o.agent_socket);  // connects and says nothing
  RawClient half(o.agent_socket);  // starts a hello and never finishes it
  const std::string hello = wire::EncodeFrame(Hi("half", 2002));
  ASSERT_TRUE(half.Write(hello.substr(0, hello.size() / 2)));
  ASSERT_TRUE(mute.ClosedByPeer(10s));
  ASSERT_TRUE(half.ClosedByPeer(10s));
  EXPECT_GE(Seconds(Clock::now() - start), 0.4) << "not before the timeout";
  ASSERT_TRUE(WaitFor([&] { return Rejected(d, "handshake_timeout") == 2; })) << d.Metrics();

  // The agent that said hello in time is kept past the timeout and still heard.
  EXPECT_FALSE(good.ClosedByPeer(700ms));
  ASSERT_TRUE(good.Send(Window("good", 2001)));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "good") == 1; }));
}

TEST(Hardening, SlowLorisFrameIsClosedAfterTheFrameTimeout) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.frame_timeout = 1s;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();

  RawClient loris(o.agent_socket);
  ASSERT_TRUE(loris.Send(Hi("loris", 3001)));
  const std::string frame = wire::EncodeFrame(Window("loris", 3001));
  RawClient busy(o.agent_socket);  // a healthy agent beside it
  ASSERT_TRUE(busy.Send(Hi("busy", 3002)));

  // One byte of a frame every 50 ms: the frame would need >10 s, the timeout is 1 s.
  const auto start = Clock::now();
  size_t sent = 0;
  int busy_frames = 0;
  bool closed = false;
  while (!closed && sent < frame.size() && Clock::now() - start < 8s) {
    closed = !loris.Write(frame.substr(sent, 1)) || loris.ClosedByPeer(0ms);
    if (!closed) {
      ++sent;
    }
    ASSERT_TRUE(busy.Send(Window("busy", 3002)));
    ++busy_frames;
    std::this_thread::sleep_for(50ms);
  }
  const double elapsed = Seconds(Clock::now() - start);
  EXPECT_TRUE(closed || loris.ClosedByPeer(5s)) << "the trickled frame is cut off";
  EXPECT_LT(sent, frame.size()) << "closed before the frame completed";
  EXPECT_GE(elapsed, 0.9) << "not before the timeout";
  EXPECT_LT(elapsed, 6.0) << "soon after it";
  ASSERT_TRUE(WaitFor([&] { return Rejected(d, "frame_timeout") == 1; })) << d.Metrics();
  EXPECT_EQ(DelayCount(d, "loris"), 0);
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "busy") == busy_frames; }))
      << "every frame of the healthy agent arrived";
  EXPECT_FALSE(busy.ClosedByPeer(100ms));
  std::printf("loris: %zu of %zu bytes sent, closed after %.2f s\n", sent, frame.size(), elapsed);
}

// A healthy stream whose reads all end in the middle of a frame, for longer than the frame
// timeout in total: each frame completes promptly, so none is mistaken for a slow-loris.
TEST(Hardening, FramesSplitAcrossReadsAreNotMistakenForSlowLoris) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.frame_timeout = 500ms;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient c(o.agent_socket);
  ASSERT_TRUE(c.Send(Hi("split", 3101)));
  const std::string f = wire::EncodeFrame(Window("split", 3101));
  std::string pending;
  size_t frames = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < 1500ms) {
    pending += f;
    ++frames;
    // Write all but the last third of a frame; the rest goes with the next write.
    const size_t keep = f.size() / 3;
    ASSERT_TRUE(c.Write(pending.substr(0, pending.size() - keep)));
    pending = pending.substr(pending.size() - keep);
    std::this_thread::sleep_for(40ms);
  }
  ASSERT_TRUE(c.Write(pending));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "split") == static_cast<double>(frames); }))
      << DelayCount(d, "split") << " of " << frames;
  EXPECT_EQ(Rejected(d, "frame_timeout"), 0);
  EXPECT_FALSE(c.ClosedByPeer(100ms));
}

TEST(Hardening, ConnectionFloodIsRefusedAndCounted) {
  constexpr int kMax = 2000, kFlood = 2500;
  // The test holds both ends of every connection.
  ASSERT_GE(testing::RaiseFileLimit(2 * kFlood + 256), 2u * kFlood + 256)
      << "RLIMIT_NOFILE's hard limit is too low for this test";
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.max_agents = kMax;
  o.max_agents_per_uid = kFlood;  // the flood comes from one uid: the global limit is tested
  o.handshake_timeout = 120s;     // the flood below stays mute for the whole test
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient good(o.agent_socket);
  ASSERT_TRUE(good.Send(Hi("good", 4001)));
  ASSERT_TRUE(
      WaitFor([&] { return MetricValue(d.Metrics(), "stallwatch_agents_connected") == 1; }));

  const auto start = Clock::now();
  std::vector<std::unique_ptr<RawClient>> flood;
  for (int i = 0; i < kFlood; ++i) {
    flood.push_back(std::make_unique<RawClient>(o.agent_socket));
    ASSERT_TRUE(flood.back()->connected()) << i;
  }
  const double refused = kFlood - (kMax - 1);
  ASSERT_TRUE(WaitFor([&] { return Rejected(d, "limit") == refused; }, 30s))
      << Rejected(d, "limit") << " refused, expected " << refused;
  EXPECT_EQ(MetricValue(d.Metrics(), "stallwatch_agents_connected"), kMax);
  // Exactly the refused ones see their connection closed.
  int closed = 0;
  ASSERT_TRUE(WaitFor([&] {
    closed = 0;
    for (auto& c : flood) {
      closed += c->ClosedByPeer(0ms) ? 1 : 0;
    }
    return closed == static_cast<int>(refused);
  })) << closed;
  std::printf("%d connections in %.2f s: %d refused\n", kFlood, Seconds(Clock::now() - start),
              closed);

  // The agent that was there first is unaffected, and the API still answers.
  ASSERT_TRUE(good.Send(Window("good", 4001)));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "good") == 1; }));
  EXPECT_EQ(HttpGet(d.http_port(), "/api/v1/loops").status, 200);

  // Once the flood is gone, new agents are admitted again.
  flood.clear();
  ASSERT_TRUE(
      WaitFor([&] { return MetricValue(d.Metrics(), "stallwatch_agents_connected") == 1; }));
  RawClient late(o.agent_socket);
  ASSERT_TRUE(late.Send(Hi("late", 4002)));
  ASSERT_TRUE(late.Send(Window("late", 4002)));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "late") == 1; }));
  EXPECT_EQ(Rejected(d, "limit"), refused);
}

TEST(Hardening, AgentReportingThousandsOfLoopsIsBounded) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient many(o.agent_socket);
  ASSERT_TRUE(many.Send(Hi("many", 5001, {})));
  constexpr int kLoops = 3000;
  std::string batch;
  for (int i = 0; i < kLoops; ++i) {
    batch += wire::EncodeFrame(Window("many", 5001, "loop-" + std::to_string(i)));
  }
  ASSERT_TRUE(many.Write(batch));
  const double limit = static_cast<double>(o.registry.max_loops_per_process);
  ASSERT_TRUE(WaitFor([&] { return Rejected(d, "limit") == kLoops - limit; })) << d.Metrics();
  EXPECT_EQ(json::parse(HttpGet(d.http_port(), "/api/v1/loops").body)["loops"].size(), limit);
  EXPECT_FALSE(many.ClosedByPeer(100ms)) << "loops within the limit keep reporting";

  RawClient other(o.agent_socket);
  ASSERT_TRUE(other.Send(Hi("other", 5002)));
  ASSERT_TRUE(other.Send(Window("other", 5002)));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "other") == 1; }));
}

TEST(Hardening, ProcessAndLoopTablesAreBoundedAndGoneProcessesMakeRoom) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.trust_hello_pid_for_test = true;  // many processes played from this one
  o.registry.max_processes = 10;
  o.registry.max_loops = 40;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient keeper(o.agent_socket);
  ASSERT_TRUE(keeper.Send(Hi("keeper", 6000, {"a", "b", "c", "d"})));

  // A churn of short-lived agents with new pids, 4 loops each: the gone ones make room. Each
  // of its own service: a new process of one service would take the slot of the one gone
  // before it (docs/daemon.md, "Process slots"), which needs no room.
  for (int i = 1; i <= 50; ++i) {
    const std::string service = "churn" + std::to_string(i);
    RawClient c(o.agent_socket);
    ASSERT_TRUE(c.Send(Hi(service, 6000 + i, {"a", "b", "c", "d"})));
    ASSERT_TRUE(c.Send(Window(service, 6000 + i, "a")));
    ASSERT_TRUE(WaitFor([&] {
      return MetricValue(d.Metrics(), "stallwatch_loop_delay_seconds_count",
                         {"service=\"" + service + "\"", "loop=\"a\""}) == 1.0;
    })) << i;
  }
  ASSERT_TRUE(
      WaitFor([&] { return MetricValue(d.Metrics(), "stallwatch_agents_connected") == 1; }));
  auto loops = json::parse(HttpGet(d.http_port(), "/api/v1/loops").body)["loops"];
  EXPECT_LE(loops.size(), 40u);
  const double evicted =
      MetricValue(d.Metrics(), "stallwatch_daemon_processes_evicted_total").value_or(-1);
  EXPECT_GE(evicted, 40) << "most of the 50 gone processes were removed early";
  std::set<std::string> services;
  for (const auto& l : loops) {
    services.insert(l["service"].get<std::string>());
  }
  EXPECT_TRUE(services.count("keeper")) << "a connected process is never evicted";

  // With every slot held by a connected process, a newcomer is refused, counted, closed.
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 9; ++i) {
    held.push_back(std::make_unique<RawClient>(o.agent_socket));
    ASSERT_TRUE(held.back()->Send(Hi("held", 7000 + i, {})));
  }
  const double limit_before = Rejected(d, "limit");
  RawClient refused(o.agent_socket);
  ASSERT_TRUE(refused.Send(Hi("refused", 7999)));
  EXPECT_TRUE(refused.ClosedByPeer(5s));
  ASSERT_TRUE(WaitFor([&] { return Rejected(d, "limit") == limit_before + 1; }));
  ASSERT_TRUE(keeper.Send(Window("keeper", 6000, "a")));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "keeper", "a") == 1; }));
}

StallFinding StallWithStacks(const std::string& service, int64_t pid, uint64_t id, int first,
                             int n) {
  StallFinding f;
  f.service = service;
  f.pid = pid;
  f.loop = "main";
  f.stall_id = id;
  f.start_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(id);
  f.duration_s = 0.1;
  f.stall_class = StallClass::kCpu;
  for (int i = first; i < first + n; ++i) {
    Stack s;
    s.samples = 1;
    s.method = "signal";
    s.frames.push_back(Frame{"fn_" + std::to_string(i), "/bin/x", 16, "", 0});
    s.frames.push_back(Frame{"main", "/bin/x", 8, "", 0});
    f.stacks.push_back(std::move(s));
  }
  return f;
}

TEST(Hardening, ThousandsOfDistinctStacksAreBoundedPerServiceAndInAll) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.registry.max_stacks = 300;
  o.registry.max_stacks_per_service = 100;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient quiet(o.agent_socket);
  ASSERT_TRUE(quiet.Send(Hi("quiet", 8001)));
  ASSERT_TRUE(quiet.Send(StallWithStacks("quiet", 8001, 1, 0, 10)));

  RawClient noisy(o.agent_socket);
  ASSERT_TRUE(noisy.Send(Hi("noisy", 8002)));
  constexpr int kStalls = 100;  // × 64 distinct stacks = 6400
  std::string batch;
  for (int i = 0; i < kStalls; ++i) {
    batch += wire::EncodeFrame(StallWithStacks("noisy", 8002, i + 1, i * 64, 64));
  }
  ASSERT_TRUE(noisy.Write(batch));
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(d.Metrics(), "stallwatch_stalls_total",
                       {"service=\"noisy\"", "class=\"cpu\""}) == kStalls;
  }));
  const json stacks = json::parse(HttpGet(d.http_port(), "/api/v1/stacks").body);
  size_t noisy_kept = 0, quiet_kept = 0;
  std::set<std::string> noisy_fns;
  for (const auto& s : stacks["stacks"]) {
    if (s["service"] == "noisy") {
      ++noisy_kept;
      noisy_fns.insert(s["frames"][0]["function"].get<std::string>());
    }
    quiet_kept += s["service"] == "quiet" ? 1 : 0;
  }
  EXPECT_EQ(noisy_kept, 100u) << "the service's share";
  EXPECT_EQ(quiet_kept, 10u) << "another service's stacks survive the churn";
  EXPECT_TRUE(noisy_fns.count("fn_" + std::to_string(kStalls * 64 - 1)))
      << "the most recent stacks are the ones kept";
  EXPECT_FALSE(noisy_fns.count("fn_0"));
  EXPECT_EQ(stacks["samples_not_kept"].get<uint64_t>(), kStalls * 64u - 100u);
  EXPECT_EQ(MetricValue(d.Metrics(), "stallwatch_daemon_stacks_evicted_total"),
            kStalls * 64.0 - 100.0);

  // Several services together: the table as a whole stays within max_stacks.
  for (int s = 0; s < 5; ++s) {
    RawClient c(o.agent_socket);
    const std::string name = "svc" + std::to_string(s);
    ASSERT_TRUE(c.Send(Hi(name, 8100 + s)));
    ASSERT_TRUE(c.Send(StallWithStacks(name, 8100 + s, 1, 0, 64)));
    ASSERT_TRUE(c.Send(StallWithStacks(name, 8100 + s, 2, 64, 36)));
    ASSERT_TRUE(WaitFor([&] {
      return MetricValue(d.Metrics(), "stallwatch_stalls_total",
                         {"service=\"" + name + "\"", "class=\"cpu\""}) == 2;
    }));
  }
  EXPECT_EQ(json::parse(HttpGet(d.http_port(), "/api/v1/stacks").body)["stacks"].size(), 300u);
}

TEST(Hardening, HugeLimitIsCappedAndBadParametersGet400) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.registry.max_recent_stalls = 2000;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient c(o.agent_socket);
  ASSERT_TRUE(c.Send(Hi("many-stalls", 9001)));
  std::string batch;
  for (int i = 1; i <= 1100; ++i) {
    batch +=
        wire::EncodeFrame(StallWithStacks("many-stalls", 9001, static_cast<uint64_t>(i), 0, 1));
  }
  ASSERT_TRUE(c.Write(batch));
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(d.Metrics(), "stallwatch_stalls_total",
                       {"service=\"many-stalls\"", "class=\"cpu\""}) == 1100;
  }));
  for (const char* q : {"/api/v1/stalls?limit=5000", "/api/v1/stalls?limit=99999999999999999999999",
                        "/api/v1/stalls?limit=1000"}) {
    auto r = HttpGet(d.http_port(), q);
    ASSERT_EQ(r.status, 200) << q << ": " << r.body;
    EXPECT_EQ(json::parse(r.body)["stalls"].size(), 1000u) << q;
  }
  EXPECT_EQ(json::parse(HttpGet(d.http_port(), "/api/v1/stalls?limit=007").body)["stalls"].size(),
            7u);
  EXPECT_EQ(json::parse(HttpGet(d.http_port(), "/api/v1/stalls").body)["stalls"].size(), 100u);
  for (const char* q :
       {"/api/v1/stalls?limit=0", "/api/v1/stalls?limit=-1", "/api/v1/stalls?limit=1e9",
        "/api/v1/stalls?limit=", "/api/v1/stalls?ongoing=%0Aevil", "/api/v1/stalls?x%0Ay=1"}) {
    auto r = HttpGet(d.http_port(), q);
    EXPECT_EQ(r.status, 400) << q;
    EXPECT_EQ(r.body.find('\n'), r.body.size() - 1) << q << ": one line: " << r.body;
  }
}

TEST(Hardening, SlowHttpClientsTimeOut) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.http_timeout = 1s;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  const auto start = Clock::now();
  RawClient mute(d.http_port());     // connects and sends nothing
  RawClient partial(d.http_port());  // a request that stops half-way
  ASSERT_TRUE(mute.connected() && partial.connected());
  ASSERT_TRUE(partial.Write("GET /metrics HTTP/1.1\r\nHost: 127"));
  // Meanwhile other clients are served.
  EXPECT_EQ(HttpGet(d.http_port(), "/healthz").status, 200);
  EXPECT_TRUE(mute.ClosedByPeer(10s));
  EXPECT_TRUE(partial.ClosedByPeer(10s));
  const double t = Seconds(Clock::now() - start);
  EXPECT_GE(t, 0.9);
  EXPECT_LT(t, 8.0);
  EXPECT_EQ(HttpGet(d.http_port(), "/healthz").status, 200);
}

// --- the agent token over TCP ---------------------------------------------------------------

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& content,
                      mode_t mode) {
  std::string path = dir.path() + "/" + name;
  std::ofstream(path) << content;
  ::chmod(path.c_str(), mode);
  return path;
}

TEST(AgentToken, ComparisonIsExact) {
  using internal::TokenEquals;
  EXPECT_TRUE(TokenEquals("s3cret-token", "s3cret-token"));
  EXPECT_FALSE(TokenEquals("s3cret-tokeN", "s3cret-token"));
  EXPECT_FALSE(TokenEquals("s3cret-toke", "s3cret-token"));
  EXPECT_FALSE(TokenEquals("s3cret-token-", "s3cret-token"));
  EXPECT_FALSE(TokenEquals("", "s3cret-token"));
  EXPECT_FALSE(TokenEquals("s3cret-tokens3cret-token", "s3cret-token"));
  EXPECT_FALSE(TokenEquals("", "")) << "an empty expected token admits nobody";
}

TEST(AgentToken, DaemonRefusesAMissingEmptyOrSharedTokenFile) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.agent_listen = "127.0.0.1:0";
  struct Case {
    std::string path, expect;
  };
  const std::vector<Case> cases = {
      {dir.path() + "/missing", "No such file"},
      {WriteFile(dir, "empty", "\n", 0600), "is empty"},
      {WriteFile(dir, "shared", "s3cret\n", 0640), "group or others"},
      {WriteFile(dir, "world", "s3cret\n", 0604), "group or others"},
      {dir.path(), "not a regular file"},
  };
  for (const auto& c : cases) {
    o.agent_token_file = c.path;
    auto d = Daemon::Create(o);
    ASSERT_FALSE(d.ok()) << c.path;
    const std::string m = d.status().message();
    EXPECT_NE(m.find("--agent-token-file"), std::string::npos) << m;
    EXPECT_NE(m.find(c.expect), std::string::npos) << m;
    EXPECT_NE(m.find("0600"), std::string::npos) << "names the accepted form: " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  o.agent_token_file = WriteFile(dir, "good", "s3cret\n", 0600);
  EXPECT_TRUE(Daemon::Create(o).ok());
}

TEST(AgentToken, TcpAgentsMustPresentTheTokenUnixAgentsNeedNone) {
  TempDir dir;
  const std::string token = "tok-4f9a1c2e8b7d6a5f";
  DaemonOptions o = DaemonOptionsIn(dir);
  o.agent_listen = "127.0.0.1:0";
  o.agent_token_file = WriteFile(dir, "token", token + "\n", 0600);
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  const int port = d.agent_tcp_port();
  ASSERT_GT(port, 0);

  // The real agent over TCP with the token file: admitted.
  LoopThread loop;
  stallwatch::Options ao;
  ao.service = "tcp-ok";
  ao.loop_name = "main";
  ao.endpoint = "tcp:127.0.0.1:" + std::to_string(port);
  ao.token_file = o.agent_token_file;
  ao.report_interval = 200ms;
  ao.sampling = SamplingMode::kOff;
  auto agent = Agent::Attach(loop.base(), ao);
  ASSERT_TRUE(agent.ok()) << agent.status().message();
  loop.Start();
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "tcp-ok") > 0; })) << d.Metrics();

  // Missing, wrong, and a finding before any hello: each closed and counted.
  RawClient missing(port);
  ASSERT_TRUE(missing.Send(Hi("tcp-missing", 10001)));
  EXPECT_TRUE(missing.ClosedByPeer());
  RawClient wrong(port);
  wire::Hello h = Hi("tcp-wrong", 10002);
  h.token = token.substr(0, token.size() - 1) + "x";
  ASSERT_TRUE(wrong.Send(h));
  EXPECT_TRUE(wrong.ClosedByPeer());
  RawClient prefix(port);
  h.token = token.substr(0, 4);
  ASSERT_TRUE(prefix.Send(h));
  EXPECT_TRUE(prefix.ClosedByPeer());
  RawClient early(port);
  ASSERT_TRUE(early.Send(Window("tcp-early", 10003)));
  EXPECT_TRUE(early.ClosedByPeer());
  ASSERT_TRUE(WaitFor([&] { return Rejected(d, "auth") == 4; })) << d.Metrics();

  // A Unix-socket agent needs no token.
  RawClient local(o.agent_socket);
  ASSERT_TRUE(local.Send(Hi("unix-ok", 10004)));
  ASSERT_TRUE(local.Send(Window("unix-ok", 10004)));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "unix-ok") == 1; }));
  EXPECT_FALSE(local.ClosedByPeer(100ms));

  // None of the refused identities got in, and the token is shown nowhere.
  const std::string loops = HttpGet(d.http_port(), "/api/v1/loops").body;
  for (const char* s : {"tcp-missing", "tcp-wrong", "tcp-early"}) {
    EXPECT_EQ(loops.find(s), std::string::npos) << s;
  }
  EXPECT_NE(loops.find("tcp-ok"), std::string::npos);
  for (const char* path : {"/metrics", "/api/v1/loops", "/api/v1/stalls", "/api/v1/stacks"}) {
    EXPECT_EQ(HttpGet(d.http_port(), path).body.find(token), std::string::npos) << path;
  }
  loop.Stop();
  agent->reset();
}

TEST(AgentToken, TcpWithoutATokenFileAdmitsAgentsAsBefore) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.agent_listen = "127.0.0.1:0";
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient c(d.agent_tcp_port());
  wire::Hello h = Hi("tcp-open", 11001);
  h.token = "whatever";  // a token the daemon does not ask for is ignored
  ASSERT_TRUE(c.Send(h));
  ASSERT_TRUE(c.Send(Window("tcp-open", 11001)));
  ASSERT_TRUE(WaitFor([&] { return DelayCount(d, "tcp-open") == 1; }));
  EXPECT_EQ(HttpGet(d.http_port(), "/api/v1/loops").body.find("whatever"), std::string::npos);
}

// --- what the API exposes of monitored programs ----------------------------------------------

// A monitored program with a secret in its environment and on its command line: neither may
// appear in anything the daemon serves (docs/security.md lists what is exposed).
TEST(ApiExposure, NoEnvironmentOrCommandLineOfMonitoredPrograms) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  const std::string env_secret = "env-secret-7c1d0e5a", argv_secret = "argv-secret-93b2f4d1";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("STALLWATCH_ENDPOINT", ("unix:" + o.agent_socket).c_str(), 1);
    ::setenv("DATABASE_PASSWORD", env_secret.c_str(), 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", env_secret.c_str(), 1);
    ::unsetenv("STALLWATCH_SERVICE");
    const std::string arg = "--password=" + argv_secret;
    ::execl(SW_STALL_DEMO, SW_STALL_DEMO, arg.c_str(), argv_secret.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Its two stalls, with stacks, reached the daemon.
  ASSERT_TRUE(WaitFor([&] {
    const std::string m = d.Metrics();
    auto v = MetricValue(m, "stallwatch_stalls_total", {"class=\"blocked\""});
    return MetricValue(m, "stallwatch_process_info", {"pid=\"" + std::to_string(pid) + "\""}) &&
           v && *v >= 1;
  })) << d.Metrics();

  std::string all;
  for (const char* path : {"/metrics", "/api/v1/loops", "/api/v1/stalls?limit=1000",
                           "/api/v1/stacks", "/api/v1/stacks?format=folded", "/healthz"}) {
    auto r = HttpGet(d.http_port(), path);
    ASSERT_EQ(r.status, 200) << path;
    EXPECT_EQ(r.body.find(env_secret), std::string::npos) << path << ":\n" << r.body;
    EXPECT_EQ(r.body.find(argv_secret), std::string::npos) << path << ":\n" << r.body;
    EXPECT_EQ(r.body.find("DATABASE_PASSWORD"), std::string::npos) << path;
    all += r.body;
  }
  EXPECT_NE(all.find("stall_demo"), std::string::npos) << "the program was seen";
  // The loop entry holds the documented fields and no others.
  const json loops = json::parse(HttpGet(d.http_port(), "/api/v1/loops").body)["loops"];
  ASSERT_FALSE(loops.empty());
  const std::set<std::string> documented = {"service", "pid",          "process",       "loop",
                                            "host",    "executable",   "agent_version", "connected",
                                            "silent",  "stalls_total", "last_seen_ns",  "kind",
                                            "runtime", "last_window",  "ongoing"};
  for (const auto& l : loops) {
    for (const auto& [k, v] : l.items()) {
      EXPECT_TRUE(documented.count(k)) << "undocumented " << k;
    }
  }
}

// The daemon's log, as its thread writes it, read by the test's thread under the sink's lock.
class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::string str() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return text_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    text_.append(line.data(), line.size());
  }
  void flush_() override {}

 private:
  std::string text_;
};

// Names an agent chooses reach the daemon's log escaped: a service name carrying a newline (and
// an escape sequence) cannot forge a log line or drive a terminal.
TEST(Hardening, AgentChosenNamesAreEscapedInTheLog) {
  auto captured = std::make_shared<CaptureSink>();
  struct RestoreLogger {
    std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
    ~RestoreLogger() { spdlog::set_default_logger(previous); }
  } restore;
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", captured));
  spdlog::set_level(spdlog::level::info);
  {
    TempDir dir;
    DaemonOptions o = DaemonOptionsIn(dir);
    DaemonThread d(o);
    ASSERT_TRUE(d.ok()) << d.error();
    const std::string evil = "evil\n[error] FORGED line\x1b[2J";
    RawClient c(o.agent_socket);
    ASSERT_TRUE(c.Send(Hi(evil, 12001)));
    ASSERT_TRUE(c.Send(Window(evil, 12001)));
    ASSERT_TRUE(WaitFor([&] {
      return captured->str().find("connected from") != std::string::npos;
    })) << captured->str();
    c.Close();
    ASSERT_TRUE(WaitFor([&] { return captured->str().find("disconnected") != std::string::npos; }))
        << captured->str();
  }
  const std::string log = captured->str();
  size_t lines_naming_it = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    EXPECT_NE(line.find("evil"), 0u) << "a line begins with the agent's text:\n" << log;
    EXPECT_EQ(line.rfind("[error] FORGED", 0), std::string::npos) << log;
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << "raw escape in the log:\n" << log;
    lines_naming_it += line.find("evil\\x0a[error] FORGED line") != std::string::npos;
  }
  EXPECT_GE(lines_naming_it, 2u) << "connected and disconnected, each on one line:\n" << log;
}

}  // namespace
}  // namespace stallwatch::daemon
