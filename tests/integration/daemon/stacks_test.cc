// /api/v1/stacks with filters and formats, from a real daemon fed findings over its real agent
// socket: each filter (service, loop, class, since, until) narrows the stacks; the pprof profile
// decodes with the schema and carries samples, stall time, files, lines and modules; the records
// behind filtered queries stay within their bound; and Go's own pprof reads what the daemon
// serves for a real agent's stall (PprofGoTool.*: `go` must be installed, scripts/install-deps.sh).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "pprof.h"
#include "profile.pb.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"
#include "test_support.h"
#include "test_util.h"

namespace stallwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::DaemonOptionsIn;
using testing::DaemonThread;
using testing::HttpGet;
using testing::LoopThread;
using testing::RawClient;
using testing::TempDir;
using testing::WaitFor;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMinute = 60 * kSecond;

wire::Hello HelloOf(const std::string& service, const std::vector<std::string>& loops) {
  wire::Hello h;
  h.service = service;
  h.pid = ::getpid();
  h.loops = loops;
  return h;
}

// A stall whose one stack is `fn` ← event_base_loop ← main.
StallFinding StallOf(const std::string& service, const std::string& loop, uint64_t id,
                     StallClass cls, int64_t start_ns, double duration_s, const std::string& fn,
                     uint64_t samples, bool ongoing = false) {
  StallFinding f;
  f.service = service;
  f.pid = ::getpid();
  f.loop = loop;
  f.stall_id = id;
  f.start_ns = start_ns;
  f.duration_s = duration_s;
  f.ongoing = ongoing;
  f.stall_class = cls;
  Stack s;
  s.samples = samples;
  s.method = "signal";
  s.frames = {
      Frame{fn, "/opt/app/bin/server", 0x1234, "src/handler.cc", 42},
      Frame{"event_base_loop", "/usr/lib/x86_64-linux-gnu/libevent-2.1.so.7", 0x2000, "", 0},
      Frame{"main", "/opt/app/bin/server", 0x100, "src/main.cc", 10}};
  f.stacks.push_back(std::move(s));
  return f;
}

// Innermost function → samples, from a folded reply ("service;outer;…;inner COUNT" lines).
std::map<std::string, uint64_t> Leaves(const std::string& folded) {
  std::map<std::string, uint64_t> out;
  size_t pos = 0;
  while (pos < folded.size()) {
    const size_t nl = folded.find('\n', pos);
    const std::string line = folded.substr(pos, nl - pos);
    pos = nl == std::string::npos ? folded.size() : nl + 1;
    const size_t sp = line.rfind(' '), semi = line.rfind(';');
    if (sp == std::string::npos || semi == std::string::npos) {
      continue;
    }
    out[line.substr(semi + 1, sp - semi - 1)] += std::stoull(line.substr(sp + 1));
  }
  return out;
}

std::string Rfc3339(int64_t unix_ns) {
  const time_t t = static_cast<time_t>(unix_ns / kSecond);
  tm utc{};
  ::gmtime_r(&t, &utc);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

// A daemon fed five stalls of two services, two loops, four classes, half an hour apart.
class StacksApi : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(d_.ok()) << d_.error();
    now_ = RealtimeNanos();
    alpha_ = std::make_unique<RawClient>(options_.agent_socket);
    beta_ = std::make_unique<RawClient>(options_.agent_socket);
    ASSERT_TRUE(alpha_->Send(HelloOf("alpha", {"main", "worker"})));
    ASSERT_TRUE(alpha_->Send(StallOf("alpha", "main", 1, StallClass::kCpu, now_ - 30 * kMinute, 0.5,
                                     "alpha_old_cpu", 5)));
    ASSERT_TRUE(alpha_->Send(StallOf("alpha", "main", 2, StallClass::kCpu, now_ - 2 * kSecond, 0.3,
                                     "alpha_recent_cpu", 3)));
    ASSERT_TRUE(alpha_->Send(StallOf("alpha", "worker", 1, StallClass::kBlocked, now_ - 1 * kSecond,
                                     0.2, "alpha_worker_blocked", 4)));
    ASSERT_TRUE(beta_->Send(HelloOf("beta", {"main"})));
    ASSERT_TRUE(beta_->Send(
        StallOf("beta", "main", 1, StallClass::kStarved, now_ - kSecond, 0.1, "beta_starved", 2)));
    // An ongoing stall's update, then its closing report with no new sample: 0.2 s of stall
    // time with its 2 samples, then 0.8 s more for the same stack.
    ASSERT_TRUE(beta_->Send(StallOf("beta", "main", 2, StallClass::kBlocked, now_ - 3 * kSecond,
                                    0.2, "beta_blocked", 2, true)));
    ASSERT_TRUE(beta_->Send(StallOf("beta", "main", 2, StallClass::kBlocked, now_ - 3 * kSecond,
                                    1.0, "beta_blocked", 2)));
    ASSERT_TRUE(WaitFor([&] {
      auto r = HttpGet(d_.http_port(), "/api/v1/stalls?ongoing=false");
      return r.status == 200 && json::parse(r.body)["stalls"].size() == 5;
    }));
  }

  std::map<std::string, uint64_t> LeavesOf(const std::string& query) {
    auto r = HttpGet(d_.http_port(), "/api/v1/stacks?format=folded" + query);
    EXPECT_EQ(r.status, 200) << query << ": " << r.body;
    return Leaves(r.body);
  }

  TempDir dir_;
  DaemonOptions options_ = DaemonOptionsIn(dir_);
  DaemonThread d_{options_};
  std::unique_ptr<RawClient> alpha_, beta_;
  int64_t now_ = 0;
};

using Leaf = std::map<std::string, uint64_t>;

TEST_F(StacksApi, EachFilterNarrowsTheStacks) {
  const Leaf all = {{"alpha_old_cpu", 5},
                    {"alpha_recent_cpu", 3},
                    {"alpha_worker_blocked", 4},
                    {"beta_starved", 2},
                    {"beta_blocked", 2}};
  EXPECT_EQ(LeavesOf(""), all) << "no filter: the merged table";
  EXPECT_EQ(LeavesOf("&since=0"), all) << "every record: the same stacks";
  EXPECT_EQ(LeavesOf("&service=alpha"),
            (Leaf{{"alpha_old_cpu", 5}, {"alpha_recent_cpu", 3}, {"alpha_worker_blocked", 4}}));
  EXPECT_EQ(LeavesOf("&loop=worker"), (Leaf{{"alpha_worker_blocked", 4}}));
  EXPECT_EQ(LeavesOf("&loop=main&service=beta"), (Leaf{{"beta_starved", 2}, {"beta_blocked", 2}}));
  EXPECT_EQ(LeavesOf("&class=blocked"), (Leaf{{"alpha_worker_blocked", 4}, {"beta_blocked", 2}}));
  EXPECT_EQ(LeavesOf("&class=starved"), (Leaf{{"beta_starved", 2}}));
  EXPECT_EQ(LeavesOf("&class=suspended"), Leaf{});
  EXPECT_EQ(LeavesOf("&service=nobody"), Leaf{});
  // Time: relative, RFC 3339 and Unix ns bounds.
  EXPECT_EQ(LeavesOf("&since=10m&service=alpha&class=cpu"), (Leaf{{"alpha_recent_cpu", 3}}));
  EXPECT_EQ(LeavesOf("&until=" + Rfc3339(now_ - 20 * kMinute)), (Leaf{{"alpha_old_cpu", 5}}));
  EXPECT_EQ(LeavesOf("&since=" + std::to_string(now_ - 40 * kMinute) +
                     "&until=" + std::to_string(now_ - 20 * kMinute)),
            (Leaf{{"alpha_old_cpu", 5}}));
  EXPECT_EQ(LeavesOf("&since=" + Rfc3339(now_ - 20 * kMinute)).count("alpha_old_cpu"), 0u);
  EXPECT_EQ(LeavesOf("&since=" + Rfc3339(now_ - 20 * kMinute)).size(), 4u);
  EXPECT_EQ(LeavesOf("&since=40m&until=20m"), (Leaf{{"alpha_old_cpu", 5}}));
  EXPECT_EQ(LeavesOf("&since=1h&until=50m"), Leaf{});

  // JSON: the unfiltered document is as it always was; a filtered one says what it covers.
  const json plain = json::parse(HttpGet(d_.http_port(), "/api/v1/stacks").body);
  EXPECT_EQ(plain.size(), 2u) << plain.dump();
  EXPECT_EQ(plain["stacks"].size(), 5u);
  EXPECT_EQ(plain["stacks"][0]["frames"][0]["function"], "alpha_old_cpu") << "most sampled first";
  const json filtered =
      json::parse(HttpGet(d_.http_port(), "/api/v1/stacks?class=blocked&format=json").body);
  ASSERT_EQ(filtered["stacks"].size(), 2u) << filtered.dump();
  EXPECT_EQ(filtered["stacks"][0]["frames"][0]["function"], "alpha_worker_blocked");
  EXPECT_EQ(filtered["stacks"][0]["samples"], 4);
  EXPECT_EQ(filtered["stacks"][0]["service"], "alpha");
  EXPECT_EQ(filtered["stacks"][0]["frames"][0]["file"], "src/handler.cc");
  EXPECT_EQ(filtered["stacks"][1]["samples"], 2) << "an update's samples are not counted twice";
  EXPECT_EQ(filtered["samples_not_kept"], 0);
  EXPECT_EQ(filtered["complete_since_ns"], 0);
}

TEST_F(StacksApi, BadFiltersGet400WithOneLineNamingTheForm) {
  for (const char* q : {"since=yesterday", "until=2026-13-01T00:00:00Z", "class=sleepy",
                        "loop=", "since=5m&until=10m", "format=pprof&pid=1"}) {
    auto r = HttpGet(d_.http_port(), std::string("/api/v1/stacks?") + q);
    EXPECT_EQ(r.status, 400) << q;
    EXPECT_EQ(r.body.find('\n'), r.body.size() - 1) << "one line: " << r.body;
  }
  const auto r = HttpGet(d_.http_port(), "/api/v1/stacks?since=yesterday");
  EXPECT_NE(r.body.find("expected Unix nanoseconds (1765119845000000000), RFC 3339 "
                        "(2026-12-07T15:04:05Z) or a duration ago (90s, 10m, 2h, 1d)"),
            std::string::npos)
      << r.body;
  EXPECT_EQ(HttpGet(d_.http_port(), "/api/v1/stackz").status, 404);
  // Every refusal is counted: the 7 bad queries above, and the unknown path.
  const std::string metrics = HttpGet(d_.http_port(), "/metrics").body;
  EXPECT_NE(metrics.find("stallwatch_daemon_http_requests_rejected_total{reason=\"bad_query\"} 7"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("stallwatch_daemon_http_requests_rejected_total{reason=\"not_found\"} 1"),
            std::string::npos)
      << metrics;
}

perftools::profiles::Profile Decode(const std::string& body) {
  perftools::profiles::Profile p;
  auto raw = GunzipForTest(body);
  EXPECT_TRUE(raw.ok()) << raw.status().message();
  if (raw.ok()) {
    EXPECT_TRUE(p.ParseFromString(*raw));
  }
  return p;
}

// Leaf function → (samples, stall ns) of a profile, with the labels of its samples.
struct LeafValues {
  int64_t samples = 0, stall_ns = 0;
  std::map<std::string, std::string> labels;
};
std::map<std::string, LeafValues> ProfileLeaves(const perftools::profiles::Profile& p) {
  std::map<std::string, LeafValues> out;
  auto str = [&](int64_t i) { return p.string_table(static_cast<int>(i)); };
  for (const auto& s : p.sample()) {
    const auto& loc = p.location(static_cast<int>(s.location_id(0) - 1));
    const auto& fn = p.function(static_cast<int>(loc.line(0).function_id() - 1));
    LeafValues& v = out[str(fn.name())];
    v.samples += s.value(0);
    v.stall_ns += s.value(1);
    for (const auto& l : s.label()) {
      v.labels[str(l.key())] = str(l.str());
    }
  }
  return out;
}

TEST_F(StacksApi, PprofCarriesSamplesStallTimeFilesLinesAndModules) {
  auto r = HttpGet(d_.http_port(), "/api/v1/stacks?format=pprof&service=beta");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_GE(r.body.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(r.body[0]), 0x1f) << "gzip";
  EXPECT_EQ(static_cast<unsigned char>(r.body[1]), 0x8b) << "gzip";
  const auto p = Decode(r.body);
  auto str = [&](int64_t i) { return p.string_table(static_cast<int>(i)); };
  ASSERT_EQ(p.sample_type_size(), 2);
  EXPECT_EQ(str(p.sample_type(0).type()), "samples");
  EXPECT_EQ(str(p.sample_type(0).unit()), "count");
  EXPECT_EQ(str(p.sample_type(1).type()), "stall_time");
  EXPECT_EQ(str(p.sample_type(1).unit()), "nanoseconds");
  EXPECT_EQ(str(p.default_sample_type()), "stall_time");
  const auto leaves = ProfileLeaves(p);
  ASSERT_EQ(leaves.size(), 2u);
  // The blocked stall's 1 s: 0.2 s with its samples, 0.8 s from its closing report.
  EXPECT_EQ(leaves.at("beta_blocked").samples, 2);
  EXPECT_EQ(leaves.at("beta_blocked").stall_ns, kSecond);
  EXPECT_EQ(leaves.at("beta_blocked").labels.at("class"), "blocked");
  EXPECT_EQ(leaves.at("beta_blocked").labels.at("loop"), "main");
  EXPECT_EQ(leaves.at("beta_blocked").labels.at("service"), "beta");
  EXPECT_EQ(leaves.at("beta_starved").samples, 2);
  EXPECT_EQ(leaves.at("beta_starved").stall_ns, kSecond / 10);
  // Functions carry their file; locations their line; mappings their module.
  bool handler_file = false, line_42 = false;
  for (const auto& f : p.function()) {
    handler_file |= str(f.name()) == "beta_blocked" && str(f.filename()) == "src/handler.cc";
  }
  for (const auto& l : p.location()) {
    line_42 |= l.line(0).line() == 42 && l.mapping_id() != 0;
  }
  EXPECT_TRUE(handler_file);
  EXPECT_TRUE(line_42);
  std::set<std::string> modules;
  for (const auto& m : p.mapping()) {
    modules.insert(str(m.filename()));
    EXPECT_TRUE(m.has_functions());
  }
  EXPECT_EQ(modules, (std::set<std::string>{"/opt/app/bin/server",
                                            "/usr/lib/x86_64-linux-gnu/libevent-2.1.so.7"}));

  // Unfiltered: the merged table, with its stall time too.
  const auto all =
      ProfileLeaves(Decode(HttpGet(d_.http_port(), "/api/v1/stacks?format=pprof").body));
  EXPECT_EQ(all.size(), 5u);
  EXPECT_EQ(all.at("beta_blocked").stall_ns, kSecond);
  EXPECT_EQ(all.at("alpha_old_cpu").stall_ns, kSecond / 2);
  EXPECT_EQ(all.at("alpha_old_cpu").samples, 5);
}

// Names are proto3 strings in the profile: bytes that are not UTF-8 become U+FFFD, the rest stays.
TEST(Pprof, NamesThatAreNotUtf8AreMendedNotDropped) {
  Stack s;
  s.frames = {
      Frame{"caf\xc3\xa9_\xff\xfe_\xe2\x82", "/bin/\xc0\xafx", 1, "a\xed\xa0\x80.py", 3, "native"},
      Frame{"main", "/bin/x", 2, "", 0, "native"}};
  auto gz = EncodePprof({StackTotal{"svc", "", "", &s, 1, 5}}, {});
  ASSERT_TRUE(gz.ok()) << gz.status().message();
  const auto p = Decode(*gz);
  std::set<std::string> strings(p.string_table().begin(), p.string_table().end());
  // One U+FFFD per byte that is not part of a well-formed sequence (a cut-short one: two).
  EXPECT_TRUE(strings.count("caf\xc3\xa9_\xef\xbf\xbd\xef\xbf\xbd_\xef\xbf\xbd\xef\xbf\xbd"))
      << ::testing::PrintToString(strings);
  EXPECT_TRUE(strings.count("/bin/\xef\xbf\xbd\xef\xbf\xbdx"));
  EXPECT_TRUE(strings.count("a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd.py"));
  EXPECT_TRUE(strings.count("main"));
}

TEST(StackRecords, FilteredQueriesReachBackAsFarAsTheBoundedRecords) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.registry.max_stack_records = 40;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  RawClient c(o.agent_socket);
  ASSERT_TRUE(c.Send(HelloOf("many", {"main"})));
  const int64_t now = RealtimeNanos();
  std::string batch;
  for (int i = 0; i < 100; ++i) {
    batch +=
        wire::EncodeFrame(StallOf("many", "main", i + 1, StallClass::kCpu,
                                  now - (100 - i) * kSecond, 0.1, "fn_" + std::to_string(i), 1));
  }
  ASSERT_TRUE(c.Write(batch));
  ASSERT_TRUE(WaitFor([&] {
    return Leaves(HttpGet(d.http_port(), "/api/v1/stacks?format=folded").body).size() == 100;
  }));
  const json j = json::parse(HttpGet(d.http_port(), "/api/v1/stacks?service=many").body);
  EXPECT_EQ(j["stacks"].size(), 40u) << "the newest 40 records";
  EXPECT_EQ(j["samples_not_kept"], 60);
  // The newest dropped record ended 41 s before `now` (+0.1 s).
  EXPECT_EQ(j["complete_since_ns"], now - 41 * kSecond + kSecond / 10);
  const auto leaves =
      Leaves(HttpGet(d.http_port(), "/api/v1/stacks?format=folded&service=many").body);
  EXPECT_EQ(leaves.count("fn_99"), 1u);
  EXPECT_EQ(leaves.count("fn_60"), 1u);
  EXPECT_EQ(leaves.count("fn_59"), 0u);
}

// A function the test's loop stalls in, named in the agent's stacks and so in pprof's output.
__attribute__((noinline)) void StallwatchPprofTestSpin(std::chrono::milliseconds how_long) {
  const int64_t end = MonotonicNanos() + std::chrono::nanoseconds(how_long).count();
  volatile uint64_t work = 0;
  while (MonotonicNanos() < end) {
    for (int i = 0; i < 1000; ++i) {
      work = work + static_cast<uint64_t>(i);
    }
  }
}

// The `go` command: on PATH or Debian's golang-go. "" when missing.
std::string GoCommand() {
  for (const char* candidate : {"/usr/lib/go/bin/go", "/usr/bin/go", "/usr/local/go/bin/go"}) {
    if (::access(candidate, X_OK) == 0) {
      return candidate;
    }
  }
  auto which = stallwatch::testing::RunCommand("command -v go", 10s);
  std::string out = which.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) {
    out.pop_back();
  }
  return which.code == 0 ? out : "";
}

TEST(PprofGoTool, TopNamesTheFunctionARealLoopStalledIn) {
  const std::string go = GoCommand();
  ASSERT_FALSE(go.empty()) << "`go` not found (Debian: golang-go, see scripts/install-deps.sh); "
                              "this test runs Go's pprof on the daemon's profile";
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  LoopThread loop;
  stallwatch::Options ao;
  ao.service = "pproftest";
  ao.loop_name = "main";
  ao.endpoint = "unix:" + o.agent_socket;
  ao.stall_threshold = 50ms;
  ao.report_interval = 200ms;
  auto agent = Agent::Attach(loop.base(), ao);
  ASSERT_TRUE(agent.ok()) << agent.status().message();
  loop.Start();
  loop.Post([] { StallwatchPprofTestSpin(600ms); });
  const std::string query = "/api/v1/stacks?format=pprof&service=pproftest&since=10m";
  ASSERT_TRUE(WaitFor([&] {
    const auto j = json::parse(HttpGet(d.http_port(), "/api/v1/stacks?service=pproftest").body);
    for (const auto& s : j["stacks"]) {
      for (const auto& f : s["frames"]) {
        if (f["function"].get<std::string>().find("StallwatchPprofTestSpin") != std::string::npos) {
          return true;
        }
      }
    }
    return false;
  })) << HttpGet(d.http_port(), "/api/v1/stacks").body;
  loop.Stop();
  agent->reset();

  const auto r = HttpGet(d.http_port(), query);
  ASSERT_EQ(r.status, 200);
  const std::string file = dir.path() + "/stacks.pb.gz";
  std::ofstream(file, std::ios::binary) << r.body;
  // Go's pprof needs no network; its caches and home go to the test's directory.
  const std::string env = "HOME=" + dir.path() + " GOCACHE=" + dir.path() +
                          "/gocache GOFLAGS=-mod=mod GOPATH=" + dir.path() +
                          "/gopath PPROF_TMPDIR=" + dir.path() +
                          " PPROF_BINARY_PATH=" + dir.path() + " ";
  const auto top = stallwatch::testing::RunCommand(env + go + " tool pprof -top " + file, 60s);
  EXPECT_EQ(top.code, 0) << top.out;
  EXPECT_NE(top.out.find("StallwatchPprofTestSpin"), std::string::npos) << top.out;
  EXPECT_NE(top.out.find("Type: stall_time"), std::string::npos) << top.out;
  EXPECT_NE(top.out.find("File: daemon_integration_test"), std::string::npos)
      << "the program's own module is the main binary: " << top.out;
  // The samples view, source lines, and the daemon's URL read directly.
  const auto lines = stallwatch::testing::RunCommand(
      env + go + " tool pprof -top -lines -sample_index=samples " + file, 60s);
  EXPECT_EQ(lines.code, 0) << lines.out;
  EXPECT_NE(lines.out.find("stacks_test.cc:"), std::string::npos) << lines.out;
  const auto url = stallwatch::testing::RunCommand(
      env + go + " tool pprof -top 'http://127.0.0.1:" + std::to_string(d.http_port()) + query +
          "'",
      60s);
  EXPECT_EQ(url.code, 0) << url.out;
  EXPECT_NE(url.out.find("StallwatchPprofTestSpin"), std::string::npos) << url.out;
}

}  // namespace
}  // namespace stallwatch::daemon
