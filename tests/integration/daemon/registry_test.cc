// The daemon's registry as pure logic: messages in, metrics and JSON out, time passed in.
#include "registry.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "stallwatch/common/histogram.h"
#include "test_util.h"

namespace stallwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::MetricValue;

Now At(int64_t seconds) {
  Now n;
  n.mono_ns = seconds * 1'000'000'000;
  n.unix_ns = 1'700'000'000'000'000'000 + n.mono_ns;
  return n;
}

wire::Hello Hello(const std::string& service = "svc", int64_t pid = 42) {
  wire::Hello h;
  h.service = service;
  h.pid = pid;
  h.loops = {"main"};
  return h;
}

StallFinding Stall(uint64_t id, bool ongoing, double duration_s, uint64_t samples = 1,
                   StallClass cls = StallClass::kCpu) {
  StallFinding f;
  f.service = "svc";
  f.pid = 42;
  f.loop = "main";
  f.stall_id = id;
  f.start_ns = At(10).unix_ns;
  f.duration_s = duration_s;
  f.ongoing = ongoing;
  f.stall_class = cls;
  Stack s;
  s.samples = samples;
  s.method = "signal";
  s.frames = {Frame{"spin", "/app", 1, "", 0}, Frame{"main", "/app", 2, "", 0}};
  f.stacks.push_back(s);
  return f;
}

DelayFinding Window(uint64_t stalls_total, uint64_t dropped = 0) {
  DelayFinding d;
  d.service = "svc";
  d.pid = 42;
  d.loop = "main";
  d.stalls_total = stalls_total;
  d.findings_dropped_total = dropped;
  d.delay_buckets = {{static_cast<uint32_t>(HistBucketIndex(1'000'000)), 5}};
  d.sum_s = 0.005;
  return d;
}

const std::vector<std::string> kLoop = {"service=\"svc\"", "pid=\"42\"", "loop=\"main\""};

std::vector<std::string> With(std::string label) {
  auto v = kLoop;
  v.push_back(std::move(label));
  return v;
}

TEST(Registry, FindingsBeforeHelloAndOfAnotherProcessAreRejected) {
  Registry r;
  auto c = r.Connect("test", At(0));
  auto e = r.Apply(c, Window(0), At(1));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->reason, wire::RejectReason::kNoHello);
  EXPECT_FALSE(r.Apply(c, Hello(), At(1)).has_value());
  DelayFinding other = Window(0);
  other.pid = 43;
  e = r.Apply(c, other, At(2));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->reason, wire::RejectReason::kIdentityMismatch);
  EXPECT_FALSE(r.Apply(c, Window(0), At(2)).has_value());
}

TEST(Registry, ClosedStallCountedOnceAndOngoingAgeMoves) {
  Registry r;
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  ASSERT_FALSE(r.Apply(c, Stall(1, true, 0.1), At(10)).has_value());
  // The gauge is the stall's age at scrape time, whatever the agent last said.
  EXPECT_NEAR(*MetricValue(r.MetricsText(At(12)), "stallwatch_stall_ongoing_seconds", kLoop), 2.0,
              1e-6);
  EXPECT_NEAR(*MetricValue(r.MetricsText(At(15)), "stallwatch_stall_ongoing_seconds", kLoop), 5.0,
              1e-6);
  ASSERT_FALSE(r.Apply(c, Stall(1, false, 5.5), At(16)).has_value());
  ASSERT_FALSE(r.Apply(c, Stall(1, false, 5.5), At(16)).has_value());  // a repeat
  const std::string m = r.MetricsText(At(17));
  EXPECT_EQ(MetricValue(m, "stallwatch_stalls_total", With("class=\"cpu\"")), 1.0);
  EXPECT_EQ(MetricValue(m, "stallwatch_stalls_total", With("class=\"blocked\"")), 0.0);
  EXPECT_EQ(MetricValue(m, "stallwatch_stall_ongoing_seconds", kLoop), 0.0);
  EXPECT_EQ(MetricValue(m, "stallwatch_stall_duration_seconds_count", kLoop), 1.0);
  EXPECT_EQ(MetricValue(m, "stallwatch_stall_duration_seconds_bucket", With("le=\"5\"")), 0.0);
  EXPECT_EQ(MetricValue(m, "stallwatch_stall_duration_seconds_bucket", With("le=\"10\"")), 1.0);
}

TEST(Registry, StallsTheAgentCountedButTheDaemonNeverSawAreUnknown) {
  Registry r;
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  ASSERT_FALSE(r.Apply(c, Stall(1, false, 0.2), At(1)).has_value());
  ASSERT_FALSE(r.Apply(c, Window(4, 7), At(2)).has_value());  // 3 closings were dropped
  const std::string m = r.MetricsText(At(3));
  EXPECT_EQ(MetricValue(m, "stallwatch_stalls_total", With("class=\"cpu\"")), 1.0);
  EXPECT_EQ(MetricValue(m, "stallwatch_stalls_total", With("class=\"unknown\"")), 3.0);
  EXPECT_EQ(MetricValue(m, "stallwatch_agent_findings_dropped_total", {"service=\"svc\""}), 7.0);
  ASSERT_FALSE(r.Apply(c, Window(4, 7), At(4)).has_value());  // cumulative: no double count
  EXPECT_EQ(MetricValue(r.MetricsText(At(5)), "stallwatch_stalls_total", With("class=\"unknown\"")),
            3.0);
}

TEST(Registry, StackSamplesOfStallUpdatesMergeWithoutDoubleCounting) {
  Registry r;
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  ASSERT_FALSE(r.Apply(c, Stall(1, true, 0.1, 2), At(1)).has_value());
  ASSERT_FALSE(r.Apply(c, Stall(1, true, 0.4, 5), At(2)).has_value());
  ASSERT_FALSE(r.Apply(c, Stall(1, false, 0.6, 6), At(3)).has_value());
  EXPECT_EQ(r.StacksFolded(), "svc;main;spin 6\n");
  json j = r.StacksJson();
  ASSERT_EQ(j["stacks"].size(), 1u);
  EXPECT_EQ(j["stacks"][0]["samples"], 6);
  EXPECT_EQ(j["stacks"][0]["frames"][0]["function"], "spin");
}

TEST(Registry, StallsQueryFiltersAndLimits) {
  Registry r;
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  for (uint64_t id = 1; id <= 5; ++id) {
    StallFinding f = Stall(id, false, 0.1);
    f.start_ns += static_cast<int64_t>(id);
    ASSERT_FALSE(r.Apply(c, f, At(1)).has_value());
  }
  ASSERT_FALSE(r.Apply(c, Stall(6, true, 0.1), At(2)).has_value());
  StallQuery q;
  q.limit = 3;
  json all = r.StallsJson(q, At(3))["stalls"];
  ASSERT_EQ(all.size(), 3u);
  EXPECT_TRUE(all[0]["ongoing"].get<bool>());
  EXPECT_EQ(all[1]["stall_id"], 5);  // then the newest closed
  q.limit = 100;
  q.ongoing = false;
  EXPECT_EQ(r.StallsJson(q, At(3))["stalls"].size(), 5u);
  q.ongoing = true;
  EXPECT_EQ(r.StallsJson(q, At(3))["stalls"].size(), 1u);
  q.ongoing.reset();
  q.service = "other";
  EXPECT_EQ(r.StallsJson(q, At(3))["stalls"].size(), 0u);
}

TEST(Registry, LoopLimitPerProcess) {
  RegistryOptions o;
  o.max_loops_per_process = 2;
  Registry r(o);
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  DelayFinding d = Window(0);
  d.loop = "second";
  EXPECT_FALSE(r.Apply(c, d, At(1)).has_value());
  d.loop = "third";
  auto e = r.Apply(c, d, At(1));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->reason, wire::RejectReason::kLimit);
  EXPECT_EQ(r.loops(), 2u);
}

TEST(Registry, GoneProcessExpiresAndReconnectKeepsIt) {
  RegistryOptions o;
  o.expire_after = 10s;
  o.silent_after = 100s;
  Registry r(o);
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  ASSERT_FALSE(r.Apply(c, Window(0), At(0)).has_value());
  r.Disconnect(c, At(1));
  r.Sweep(At(5));
  EXPECT_EQ(r.loops(), 1u);
  auto c2 = r.Connect("test", At(6));  // the agent is back before the expiry
  ASSERT_FALSE(r.Apply(c2, Hello(), At(6)).has_value());
  r.Sweep(At(30));
  EXPECT_EQ(r.loops(), 1u);
  r.Disconnect(c2, At(31));
  r.Sweep(At(40));
  EXPECT_EQ(r.loops(), 1u);
  r.Sweep(At(41));
  EXPECT_EQ(r.loops(), 0u);
  EXPECT_EQ(r.MetricsText(At(42)).find("service=\"svc\""), std::string::npos);
}

TEST(Registry, SilentAgentNoticedAndCleared) {
  RegistryOptions o;
  o.silent_after = 30s;
  Registry r(o);
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  r.Sweep(At(29));
  EXPECT_EQ(r.silent_agents(), 0u);
  r.Sweep(At(31));
  EXPECT_EQ(r.silent_agents(), 1u);
  EXPECT_TRUE(r.LoopsJson(At(31))["loops"][0]["silent"].get<bool>());
  ASSERT_FALSE(r.Apply(c, Window(0), At(32)).has_value());
  EXPECT_EQ(r.silent_agents(), 0u);
}

TEST(Registry, LoopsShowTheKindAndRuntimeOfTheirLatestWindow) {
  Registry r;
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  // Before the first window a loop is known only by name.
  json loop = r.LoopsJson(At(0))["loops"][0];
  EXPECT_EQ(loop["kind"], "");
  EXPECT_EQ(loop["runtime"], "");
  DelayFinding d = Window(0);
  d.loop_kind = "epoll";
  d.runtime = "python";
  ASSERT_FALSE(r.Apply(c, d, At(1)).has_value());
  loop = r.LoopsJson(At(1))["loops"][0];
  EXPECT_EQ(loop["kind"], "epoll");
  EXPECT_EQ(loop["runtime"], "python");
}

TEST(Registry, LibeventLoopWithoutRuntimeShowsAnEmptyRuntime) {
  Registry r;
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)).has_value());
  DelayFinding d = Window(0);
  d.loop_kind = "libevent";
  ASSERT_FALSE(r.Apply(c, d, At(1)).has_value());
  const json loop = r.LoopsJson(At(1))["loops"][0];
  EXPECT_EQ(loop["kind"], "libevent");
  EXPECT_EQ(loop["runtime"], "");
}

TEST(Registry, StoredStallsAreTrimmed) {
  StallFinding f = Stall(1, false, 1);
  f.hint = std::string(10000, 'h');
  for (int i = 0; i < 40; ++i) {
    f.stacks.push_back(f.stacks[0]);
  }
  f.stacks[0].frames.resize(200, Frame{"x", "y", 0, "", 0});
  const size_t bytes = internal::TrimForStorage(&f);
  EXPECT_EQ(f.hint.size(), 512u);
  EXPECT_EQ(f.stacks.size(), 16u);
  for (const auto& s : f.stacks) {
    EXPECT_LE(s.frames.size(), 64u);
  }
  EXPECT_LT(bytes, 200'000u);
}

// The exposition is cached per process and family and re-serialized only where series changed:
// after any sequence of changes it must equal a fresh serialization of every series.
TEST(Registry, CachedExpositionEqualsAFreshSerialization) {
  RegistryOptions o;
  o.expire_after = 3s;
  Registry r(o);
  std::mt19937 rng(2024);
  struct Agent {
    Registry::ConnId conn = 0;
    bool connected = false;
    uint64_t stalls = 0, samples = 0, suppressed = 0, dropped = 0, next_id = 1;
  };
  std::vector<Agent> agents(6);
  const auto service = [](size_t a) { return "svc" + std::to_string(a % 3); };
  const auto loop = [](uint32_t l) { return "loop-" + std::to_string(l); };
  int64_t t = 0;
  size_t compared = 0;
  for (int step = 0; step < 600; ++step) {
    t += 1 + static_cast<int64_t>(rng() % 2);
    const size_t a = rng() % agents.size();
    Agent& ag = agents[a];
    const int64_t pid = 1000 + static_cast<int64_t>(a);
    const uint32_t op = rng() % 10;
    if (!ag.connected || op == 0) {
      if (ag.connected) {
        r.Disconnect(ag.conn, At(t));
        ag.connected = false;
        continue;
      }
      ag.conn = r.Connect("test", At(t));
      wire::Hello h = Hello(service(a), pid);
      h.loops = {loop(0), loop(1)};
      ASSERT_FALSE(r.Apply(ag.conn, std::move(h), At(t)).has_value());
      ag.connected = true;
    } else if (op <= 5) {
      DelayFinding d = Window(0);
      d.service = service(a);
      d.pid = pid;
      d.loop = loop(rng() % 3);
      d.utilization = static_cast<double>(rng() % 100) / 100;
      d.delay_buckets = {{static_cast<uint32_t>(rng() % kHistBuckets), 1 + rng() % 9}};
      d.iteration_buckets = {{static_cast<uint32_t>(rng() % kHistBuckets), 1 + rng() % 9}};
      d.sum_s = 0.001 * (rng() % 50);
      ag.stalls += rng() % 2;
      ag.samples += rng() % 3;
      ag.suppressed += rng() % 2;
      ag.dropped += rng() % 2;
      d.stalls_total = ag.stalls;
      d.stack_samples_total = ag.samples;
      d.reports_suppressed_total = ag.suppressed;
      d.findings_dropped_total = ag.dropped;
      ASSERT_FALSE(r.Apply(ag.conn, std::move(d), At(t)).has_value());
    } else if (op <= 8) {
      StallFinding f = Stall(ag.next_id, op == 6, 0.05 * (1 + rng() % 40), 1 + rng() % 3,
                             static_cast<StallClass>(rng() % 5));
      if (op != 6) {
        ++ag.next_id;
      }
      f.service = service(a);
      f.pid = pid;
      f.loop = loop(rng() % 2);
      f.start_ns = At(t - 1).unix_ns;
      ASSERT_FALSE(r.Apply(ag.conn, std::move(f), At(t)).has_value());
    } else {
      r.Sweep(At(t));
    }
    if (rng() % 4 == 0) {
      // Serialized ahead of the scrape, in full or in part.
      r.PrepareMetrics(rng() % 2 ? std::chrono::nanoseconds(0) : std::chrono::seconds(1));
    }
    if (rng() % 3 == 0) {
      const std::string cached = r.MetricsText(At(t));
      ASSERT_EQ(cached, r.MetricsTextUncachedForTest(At(t))) << "step " << step;
      ++compared;
    }
  }
  EXPECT_GT(compared, 100u);
  r.MetricsText(At(t));
  EXPECT_FALSE(r.PrepareMetrics(1s)) << "nothing left to serialize after a scrape";
  // Processes came and went: series were removed from the cache too.
  EXPECT_NE(r.MetricsText(At(t)).find("stallwatch_loop_delay_seconds_bucket"), std::string::npos);
}

}  // namespace
}  // namespace stallwatch::daemon
