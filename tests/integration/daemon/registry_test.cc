// The daemon's registry as pure logic: messages in, metrics and JSON out, time passed in.
#include "registry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "stallwatch/common/blocking_calls.h"
#include "stallwatch/common/histogram.h"
#include "test_util.h"

namespace stallwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::MetricValue;
using testing::SeriesLines;

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

struct SiteCalls {
  std::string call, function;
  uint64_t count;
  double each_s = 0.001;  // every call's duration
};
// A calls finding of svc/42/main ending at At(end_s), a window of 10 s.
CallsFinding Calls(const std::vector<SiteCalls>& sites, int64_t end_s = 10) {
  CallsFinding c;
  c.service = "svc";
  c.pid = 42;
  c.loop = "main";
  c.end_ns = At(end_s).unix_ns;
  c.window_s = 10;
  for (const auto& s : sites) {
    CallSiteStats e;
    e.call = s.call;
    e.site.function = s.function;
    e.site.file = s.function + ".c";
    e.site.line = 7;
    e.site.module = "app";
    e.count = s.count;
    e.total_s = s.each_s * static_cast<double>(s.count);
    e.max_s = s.each_s;
    e.p99_s = s.each_s;
    // The ledger's bucket of that duration.
    const auto ns = static_cast<uint64_t>(s.each_s * 1e9);
    uint32_t b = 0;
    while (b + 1 < static_cast<uint32_t>(kCallBuckets) &&
           CallBucketLowerNs(static_cast<int>(b + 1)) <= ns) {
      ++b;
    }
    e.buckets = {{b, s.count}};
    c.calls.push_back(std::move(e));
  }
  return c;
}

const std::vector<std::string> kLoop = {"service=\"svc\"", "process=\"0\"", "loop=\"main\""};

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

// /api/v1/loops is written loop by loop (LoopsJsonText): the same document as LoopsJson's.
TEST(Registry, LoopsTextIsTheLoopsDocument) {
  Registry r;
  EXPECT_EQ(r.LoopsJsonText(At(0)), r.LoopsJson(At(0)).dump() + "\n");
  auto c = r.Connect("test", At(0));
  wire::Hello h = Hello();
  h.loops = {"main", "second"};
  ASSERT_FALSE(r.Apply(c, std::move(h), At(0)).has_value());
  ASSERT_FALSE(r.Apply(c, Window(2), At(1)).has_value());
  ASSERT_FALSE(r.Apply(c, Stall(3, true, 0.4), At(2)).has_value());
  auto c2 = r.Connect("test", At(2));
  ASSERT_FALSE(r.Apply(c2, Hello("other", 7), At(2)).has_value());
  const std::string text = r.LoopsJsonText(At(3));
  EXPECT_EQ(text, r.LoopsJson(At(3)).dump() + "\n");
  EXPECT_EQ(json::parse(text)["loops"].size(), 3u);
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
      if (rng() % 4 == 0) {
        h.loops.clear();  // an agent whose loops are found after its hello
      }
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
    } else if (rng() % 2 == 0) {
      CallsFinding c = Calls({{"getaddrinfo", "resolve", 3}, {"usleep", "nap", 1}});
      c.service = service(a);
      c.pid = pid;
      c.loop = loop(rng() % 2);
      c.calls[0].buckets = {{static_cast<uint32_t>(rng() % kCallBuckets), 3}};
      ASSERT_FALSE(r.Apply(ag.conn, std::move(c), At(t)).has_value());
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
  EXPECT_TRUE(r.text_cache_ok()) << "the cache was given up: the comparisons were of no cache";
  r.MetricsText(At(t));
  EXPECT_FALSE(r.PrepareMetrics(1s)) << "nothing left to serialize after a scrape";
  // Processes came and went: series were removed from the cache too.
  EXPECT_NE(r.MetricsText(At(t)).find("stallwatch_loop_delay_seconds_bucket"), std::string::npos);
}

// --- The blocking-call ledger: calls findings ----------------------------------------------

// Sites add up across windows, /api/v1/calls ranks them by total time with their figures, and
// each call has its counter and histogram (the histogram's buckets hold each call's duration).
TEST(RegistryCalls, SitesAddUpAcrossWindowsRankByTotalTimeAndFeedTheSeries) {
  Registry r;
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)));
  ASSERT_FALSE(r.Apply(
      c, Calls({{"getaddrinfo", "resolve_backend", 100, 0.0001}, {"usleep", "nap", 2, 0.02}}),
      At(10)));
  ASSERT_FALSE(r.Apply(c, Calls({{"getaddrinfo", "resolve_backend", 50, 0.0001}}, 20), At(20)));
  const json j = r.CallsJson(CallQuery{}, At(30));
  ASSERT_EQ(j["calls"].size(), 2u) << j.dump();
  EXPECT_EQ(j["sites"], 2);
  const json& top = j["calls"][0];
  EXPECT_EQ(top["call"], "usleep");  // 0.04 s beats 150 × 0.1 ms = 0.015 s
  EXPECT_EQ(top["family"], "sleep");
  const json& dns = j["calls"][1];
  EXPECT_EQ(dns["call"], "getaddrinfo");
  EXPECT_EQ(dns["site"]["function"], "resolve_backend");
  EXPECT_EQ(dns["site"]["file"], "resolve_backend.c");
  EXPECT_EQ(dns["count"], 150);
  EXPECT_NEAR(dns["total_s"].get<double>(), 0.015, 1e-9);
  EXPECT_NEAR(dns["max_s"].get<double>(), 0.0001, 1e-12);
  // p99 within the ledger's bucket of 100 µs ([98.3, 131) µs), at most the largest call.
  EXPECT_GT(dns["p99_s"].get<double>(), 0.00009);
  EXPECT_LE(dns["p99_s"].get<double>(), 0.0001);
  EXPECT_EQ(dns["process"], 0);
  EXPECT_EQ(dns["pid"], 42);
  EXPECT_NEAR(dns["observed_s"].get<double>(), 30.0, 1e-6);  // since the first window began

  const std::string m = r.MetricsText(At(30));
  EXPECT_EQ(MetricValue(m, "stallwatch_blocking_calls_total", With("call=\"getaddrinfo\"")), 150);
  EXPECT_EQ(MetricValue(m, "stallwatch_blocking_calls_total", With("call=\"usleep\"")), 2);
  EXPECT_EQ(MetricValue(m, "stallwatch_blocking_call_seconds_count", With("call=\"getaddrinfo\"")),
            150);
  EXPECT_NEAR(*MetricValue(m, "stallwatch_blocking_call_seconds_sum", With("call=\"usleep\"")),
              0.04, 1e-9);
  // 100 µs lies between the bounds 65.5 µs and 262 µs; 20 ms between 16.8 ms and 67.1 ms.
  auto bucket = [&](const char* call, const char* le) {
    auto l = With(std::string("call=\"") + call + "\"");
    l.push_back(std::string("le=\"") + le + "\"");
    return MetricValue(m, "stallwatch_blocking_call_seconds_bucket", l);
  };
  EXPECT_EQ(bucket("getaddrinfo", "6.5536e-05"), 0);
  EXPECT_EQ(bucket("getaddrinfo", "0.000262144"), 150);
  EXPECT_EQ(bucket("usleep", "0.016777216"), 0);
  EXPECT_EQ(bucket("usleep", "0.067108864"), 2);
  // Only the calls the loop made have series.
  EXPECT_FALSE(MetricValue(m, "stallwatch_blocking_calls_total", With("call=\"fsync\"")));

  EXPECT_EQ(dns["site"]["kind"], "native");
  // A Python caller keeps its kind.
  CallsFinding py = Calls({{"read", "load_config", 1}}, 25);
  py.calls[0].site.kind = "python";
  ASSERT_FALSE(r.Apply(c, std::move(py), At(25)));
  CallQuery read;
  read.call = "read";
  EXPECT_EQ(r.CallsJson(read, At(30))["calls"][0]["site"]["kind"], "python");

  // Filters.
  CallQuery q;
  q.call = "usleep";
  EXPECT_EQ(r.CallsJson(q, At(30))["calls"].size(), 1u);
  q = CallQuery{};
  q.family = "dns";
  EXPECT_EQ(r.CallsJson(q, At(30))["calls"][0]["call"], "getaddrinfo");
  q = CallQuery{};
  q.service = "other";
  EXPECT_TRUE(r.CallsJson(q, At(30))["calls"].empty());
  q = CallQuery{};
  q.limit = 1;
  EXPECT_EQ(r.CallsJson(q, At(30))["calls"].size(), 1u);
  EXPECT_EQ(r.CallsJson(q, At(30))["sites"], 3);
}

// Past the bounds a new site is not kept: its calls are counted as not kept (and in the
// daemon's counter) but still in the series; the agent's own overflow is reported too. Once the
// process is gone and expired, its sites make room for others.
TEST(RegistryCalls, SitesBeyondTheBoundsAreCountedAndStillInTheSeries) {
  RegistryOptions o;
  o.max_call_sites_per_loop = 2;
  o.max_call_sites = 3;
  o.expire_after = 5s;
  Registry r(o);
  auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello(), At(0)));
  CallsFinding f = Calls({{"usleep", "a", 1}, {"usleep", "b", 1}, {"usleep", "c", 4}});
  f.overflow = 9;
  ASSERT_FALSE(r.Apply(c, std::move(f), At(10)));
  json j = r.CallsJson(CallQuery{}, At(10));
  EXPECT_EQ(j["calls"].size(), 2u);
  EXPECT_EQ(j["sites_not_kept"], 4);
  EXPECT_EQ(j["overflow"], 9);
  std::string m = r.MetricsText(At(10));
  EXPECT_EQ(MetricValue(m, "stallwatch_blocking_calls_total", With("call=\"usleep\"")), 6);
  EXPECT_EQ(MetricValue(m, "stallwatch_daemon_call_sites_not_kept_total"), 4);

  // A second process: one site left in all.
  auto c2 = r.Connect("test", At(11));
  ASSERT_FALSE(r.Apply(c2, Hello("svc", 43), At(11)));
  CallsFinding g = Calls({{"fsync", "d", 1}, {"fsync", "e", 1}});
  g.pid = 43;
  ASSERT_FALSE(r.Apply(c2, CallsFinding(g), At(12)));
  CallQuery q43;
  q43.pid = 43;
  EXPECT_EQ(r.CallsJson(q43, At(12))["calls"].size(), 1u);
  EXPECT_EQ(r.CallsJson(q43, At(12))["sites_not_kept"], 1);

  // The first process goes and expires: its two sites are free for the second's.
  r.Disconnect(c, At(13));
  r.Sweep(At(20));
  EXPECT_TRUE(r.CallsJson(CallQuery{}, At(20))["calls"].size() == 1u);
  ASSERT_FALSE(r.Apply(c2, CallsFinding(g), At(21)));
  EXPECT_EQ(r.CallsJson(q43, At(21))["calls"].size(), 2u);
  m = r.MetricsText(At(21));
  EXPECT_FALSE(MetricValue(m, "stallwatch_blocking_calls_total", With("call=\"usleep\"")));
}

// --- Process slots: the `process` label ------------------------------------------------------

// The slot of (service, pid) as /api/v1/loops shows it, or -1 when the daemon holds no such
// process.
int SlotOf(const Registry& r, const std::string& service, int64_t pid, Now now) {
  const json loops = r.LoopsJson(now)["loops"];  // (not a temporary's member: range-for)
  for (const auto& l : loops) {
    if (l["service"] == service && l["pid"].get<int64_t>() == pid) {
      return l["process"].get<int>();
    }
  }
  return -1;
}

std::optional<double> Info(const std::string& m, const std::string& service, int slot,
                           int64_t pid) {
  return MetricValue(m, "stallwatch_process_info",
                     {"service=\"" + service + "\"", "process=\"" + std::to_string(slot) + "\"",
                      "pid=\"" + std::to_string(pid) + "\""});
}

TEST(RegistrySlots, TheInfoSeriesCarriesTheHelloStartTime) {
  Registry r;
  auto c = r.Connect("test", At(0));
  wire::Hello h = Hello("svc", 42);
  h.start_time_ns = 1'796'655'772'990'000'000;
  ASSERT_FALSE(r.Apply(c, h, At(0)).has_value());
  std::string m = r.MetricsText(At(1));
  EXPECT_EQ(MetricValue(m, "stallwatch_process_info",
                        {"pid=\"42\"", "start_time=\"1796655772\"", "process=\"0\""}),
            1.0)
      << m;
  // Another process without the field (an older agent): an empty label, which Prometheus drops.
  auto c2 = r.Connect("test", At(2));
  ASSERT_FALSE(r.Apply(c2, Hello("svc", 43), At(2)).has_value());
  m = r.MetricsText(At(3));
  EXPECT_EQ(MetricValue(m, "stallwatch_process_info", {"pid=\"43\"", "start_time=\"\""}), 1.0) << m;
  EXPECT_EQ(m, r.MetricsTextUncachedForTest(At(3)));
}

TEST(RegistrySlots, ANewProcessTakesTheLowestSlotNoConnectedProcessHolds) {
  RegistryOptions o;
  o.expire_after = 100s;
  Registry r(o);
  std::map<int64_t, Registry::ConnId> conn;
  auto start = [&](const std::string& service, int64_t pid, int64_t t) {
    conn[pid] = r.Connect("test", At(t));
    ASSERT_FALSE(r.Apply(conn[pid], Hello(service, pid), At(t)).has_value()) << pid;
  };
  start("svc", 101, 0);
  start("svc", 102, 0);
  start("svc", 103, 0);
  EXPECT_EQ(SlotOf(r, "svc", 101, At(0)), 0);
  EXPECT_EQ(SlotOf(r, "svc", 102, At(0)), 1);
  EXPECT_EQ(SlotOf(r, "svc", 103, At(0)), 2);
  std::string m = r.MetricsText(At(0));
  EXPECT_EQ(Info(m, "svc", 1, 102), 1.0) << m;
  EXPECT_EQ(MetricValue(m, "stallwatch_loop_utilization_ratio",
                        {"service=\"svc\"", "process=\"2\"", "loop=\"main\""}),
            0.0);
  for (const auto& line : SeriesLines(m)) {
    EXPECT_TRUE(line.find("pid=") == line.npos || line.starts_with("stallwatch_process_info{"))
        << "a pid label beyond stallwatch_process_info: " << line;
  }

  // The middle one exits; a new process takes its slot at once (its series replace the gone
  // one's), not slot 3, although the gone one's series have not expired.
  r.Disconnect(conn[102], At(5));
  start("svc", 104, 6);
  EXPECT_EQ(SlotOf(r, "svc", 104, At(6)), 1);
  EXPECT_EQ(SlotOf(r, "svc", 102, At(6)), -1) << "the gone holder of the slot is removed";
  EXPECT_EQ(r.loops(), 3u);
  m = r.MetricsText(At(6));
  EXPECT_FALSE(Info(m, "svc", 1, 102).has_value()) << m;
  EXPECT_EQ(Info(m, "svc", 1, 104), 1.0) << m;

  // Two gone (slots 0 and 2): the lowest first.
  r.Disconnect(conn[101], At(7));
  r.Disconnect(conn[103], At(7));
  start("svc", 105, 8);
  start("svc", 106, 8);
  EXPECT_EQ(SlotOf(r, "svc", 105, At(8)), 0);
  EXPECT_EQ(SlotOf(r, "svc", 106, At(8)), 2);
  // Slots are per service.
  start("other", 107, 8);
  EXPECT_EQ(SlotOf(r, "other", 107, At(8)), 0);
  // A slot whose gone process expired is free again, as is the end of the table.
  r.Disconnect(conn[106], At(9));
  r.Sweep(At(200));
  EXPECT_EQ(SlotOf(r, "svc", 106, At(200)), -1);
  start("svc", 108, 201);
  start("svc", 109, 201);
  EXPECT_EQ(SlotOf(r, "svc", 108, At(201)), 2);
  EXPECT_EQ(SlotOf(r, "svc", 109, At(201)), 3);
}

TEST(RegistrySlots, AReconnectingProcessKeepsItsSlotAndCountersUnlessItWasTaken) {
  RegistryOptions o;
  o.expire_after = 100s;
  Registry r(o);
  auto a = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(a, Hello("svc", 101), At(0)).has_value());
  auto b = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(b, Hello("svc", 42), At(0)).has_value());
  ASSERT_FALSE(r.Apply(b, Stall(1, false, 0.2), At(1)).has_value());
  const std::vector<std::string> cpu = {"service=\"svc\"", "process=\"1\"", "class=\"cpu\""};
  EXPECT_EQ(MetricValue(r.MetricsText(At(1)), "stallwatch_stalls_total", cpu), 1.0);
  // pid 42 loses its connection and comes back: its own slot, its series go on.
  r.Disconnect(b, At(2));
  b = r.Connect("test", At(3));
  ASSERT_FALSE(r.Apply(b, Hello("svc", 42), At(3)).has_value());
  EXPECT_EQ(SlotOf(r, "svc", 42, At(3)), 1);
  EXPECT_EQ(MetricValue(r.MetricsText(At(3)), "stallwatch_stalls_total", cpu), 1.0);
  // Gone again, and a new process takes slot 1: the slot's counters start again from 0 (a
  // counter reset for Prometheus), never the sum of two processes.
  r.Disconnect(b, At(4));
  auto c = r.Connect("test", At(5));
  ASSERT_FALSE(r.Apply(c, Hello("svc", 77), At(5)).has_value());
  EXPECT_EQ(SlotOf(r, "svc", 77, At(5)), 1);
  EXPECT_EQ(MetricValue(r.MetricsText(At(5)), "stallwatch_stalls_total", cpu), 0.0);
  // pid 42 is back after all: it is a new process to the daemon now, in the next free slot.
  b = r.Connect("test", At(6));
  ASSERT_FALSE(r.Apply(b, Hello("svc", 42), At(6)).has_value());
  EXPECT_EQ(SlotOf(r, "svc", 42, At(6)), 2);
  EXPECT_EQ(SlotOf(r, "svc", 77, At(6)), 1);
}

TEST(RegistrySlots, PastTheBoundANewProcessIsRefusedAndTheOthersAreKept) {
  RegistryOptions o;
  o.max_processes_per_service = 2;
  Registry r(o);
  auto a = r.Connect("test", At(0));
  auto b = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(a, Hello("svc", 101), At(0)).has_value());
  ASSERT_FALSE(r.Apply(b, Hello("svc", 102), At(0)).has_value());
  auto c = r.Connect("test", At(1));
  auto e = r.Apply(c, Hello("svc", 103), At(1));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->reason, wire::RejectReason::kLimit);
  EXPECT_TRUE(e->fatal) << "the connection is closed";
  EXPECT_NE(e->message.find("--max-processes-per-service"), std::string::npos) << e->message;
  r.Disconnect(c, At(1));
  EXPECT_EQ(r.loops(), 2u);
  EXPECT_EQ(SlotOf(r, "svc", 103, At(1)), -1);
  const auto lines = SeriesLines(r.MetricsText(At(1)));
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& l) { return l.find("process=\"2\"") != l.npos; }),
            0);
  // Another service is not affected.
  auto d = r.Connect("test", At(1));
  ASSERT_FALSE(r.Apply(d, Hello("other", 103), At(1)).has_value());
  // Once a process of the service is gone, the newcomer gets its slot.
  r.Disconnect(a, At(2));
  c = r.Connect("test", At(3));
  ASSERT_FALSE(r.Apply(c, Hello("svc", 103), At(3)).has_value());
  EXPECT_EQ(SlotOf(r, "svc", 103, At(3)), 0);
}

// Connections come and go at random (restarts, reconnects, forks, expiries): at every step no
// two connected processes of a service hold one slot, no slot is beyond the bound, a process is
// refused exactly when every slot of its service is held by a connected process, and no series
// appears twice in the exposition.
TEST(RegistrySlots, TwoConnectedProcessesNeverShareASlot) {
  RegistryOptions o;
  o.expire_after = 4s;
  o.max_processes_per_service = 4;
  Registry r(o);
  std::mt19937 rng(16);
  struct Proc {
    std::string service;
    Registry::ConnId conn = 0;
    bool connected = false;
  };
  std::map<int64_t, Proc> procs;
  for (int64_t pid = 1000; pid < 1018; ++pid) {
    procs[pid].service = "svc" + std::to_string(pid % 3);
  }
  int64_t t = 0;
  size_t refused = 0, taken_over = 0;
  for (int step = 0; step < 1500; ++step) {
    t += static_cast<int64_t>(rng() % 2);
    auto it = procs.begin();
    std::advance(it, rng() % procs.size());
    const int64_t pid = it->first;
    Proc& p = it->second;
    if (p.connected) {
      r.Disconnect(p.conn, At(t));
      p.connected = false;
    } else if (rng() % 8 == 0) {
      r.Sweep(At(t));
    } else {
      size_t connected = 0;
      for (const auto& [q, other] : procs) {
        connected += other.service == p.service && other.connected ? 1 : 0;
      }
      const bool held = SlotOf(r, p.service, pid, At(t)) >= 0;
      const int before = static_cast<int>(r.loops());
      p.conn = r.Connect("test", At(t));
      auto e = r.Apply(p.conn, Hello(p.service, pid), At(t));
      if (e) {
        EXPECT_EQ(e->reason, wire::RejectReason::kLimit);
        EXPECT_TRUE(!held && connected == o.max_processes_per_service) << "step " << step;
        r.Disconnect(p.conn, At(t));
        ++refused;
      } else {
        EXPECT_TRUE(held || connected < o.max_processes_per_service) << "step " << step;
        p.connected = true;
        taken_over += !held && static_cast<int>(r.loops()) == before ? 1 : 0;
      }
    }
    std::map<std::pair<std::string, int>, int64_t> holders;
    const json loops = r.LoopsJson(At(t))["loops"];
    for (const auto& l : loops) {
      const int slot = l["process"].get<int>();
      EXPECT_GE(slot, 0);
      EXPECT_LT(slot, static_cast<int>(o.max_processes_per_service));
      const auto [h, added] = holders.emplace(std::pair(l["service"].get<std::string>(), slot),
                                              l["pid"].get<int64_t>());
      EXPECT_TRUE(added) << "step " << step << ": slot " << slot << " of "
                         << l["service"].get<std::string>() << " held by " << h->second << " and "
                         << l["pid"].get<int64_t>();
    }
    for (const auto& [pid2, q] : procs) {
      EXPECT_EQ(SlotOf(r, q.service, pid2, At(t)) >= 0 || !q.connected, true)
          << "step " << step << ": connected pid " << pid2 << " holds no slot";
    }
    if (step % 10 == 0) {
      const auto lines = SeriesLines(r.MetricsText(At(t)));
      EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()).size(), lines.size())
          << "step " << step << ": a series appears twice";
    }
    if (HasFailure()) {
      break;
    }
  }
  EXPECT_GT(refused, 10u);
  EXPECT_GT(taken_over, 10u);
}

// What the slots are for: a service restarted 10 times (a new pid each time) keeps one set of
// series, where a pid label made ~51 new series per loop at every restart.
TEST(RegistrySlots, RestartsKeepTheNumberOfSeries) {
  Registry r;
  size_t first = 0;
  for (int64_t run = 0; run < 11; ++run) {
    const int64_t pid = 500 + run;
    auto c = r.Connect("test", At(run * 10));
    wire::Hello h = Hello("svc", pid);
    h.loops = {"main", "worker"};
    ASSERT_FALSE(r.Apply(c, std::move(h), At(run * 10)).has_value());
    DelayFinding d = Window(3, 1);
    d.pid = pid;
    ASSERT_FALSE(r.Apply(c, d, At(run * 10 + 1)).has_value());
    StallFinding s = Stall(1, false, 0.3);
    s.pid = pid;
    ASSERT_FALSE(r.Apply(c, std::move(s), At(run * 10 + 2)).has_value());
    const std::string m = r.MetricsText(At(run * 10 + 3));
    const size_t n = SeriesLines(m).size();
    if (run == 0) {
      first = n;
      EXPECT_GT(n, 100u);
    }
    EXPECT_EQ(n, first) << "after restart " << run << ":\n" << m;
    EXPECT_EQ(Info(m, "svc", 0, pid), 1.0);
    r.Disconnect(c, At(run * 10 + 4));
  }
}

}  // namespace
}  // namespace stallwatch::daemon
