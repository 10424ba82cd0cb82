#include "stallwatch/common/finding_json.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "distinct_findings.h"
#include "stallwatch/common/finding_fields.h"

namespace stallwatch {
namespace {

StallFinding Sample() {
  StallFinding f;
  f.service = "svc";
  f.pid = 42;
  f.loop = "main";
  f.stall_id = 7;
  f.start_ns = 1'700'000'000'000'000'000;
  f.duration_s = 0.25;
  f.ongoing = true;
  f.stall_class = StallClass::kBlocked;
  f.syscall = "read";
  f.fd_target = "pipe [123]";
  f.cpu_ratio = 0.01;
  f.hint = "use an async client";
  Stack s;
  s.samples = 3;
  s.method = "proc";
  s.frames.push_back(Frame{"read", "/lib/libc.so.6", 0x1234, "", 0});
  s.frames.push_back(Frame{"handler(int)", "/usr/bin/app", 0x99, "app.cc", 12});
  f.stacks.push_back(s);
  return f;
}

TEST(FindingJson, StallHasTheContractFields) {
  auto j = ToJson(Sample());
  for (const char* k :
       {"kind", "service", "pid", "loop", "start_ns", "duration_s", "ongoing", "class", "syscall",
        "fd_target", "cpu_ratio", "hint", "stacks", "schema_version"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(j["kind"], "stall");
  EXPECT_EQ(j["class"], "blocked");
  EXPECT_EQ(j["stacks"][0]["frames"][1]["function"], "handler(int)");
  for (const char* k : {"function", "module", "offset", "file", "line", "kind"}) {
    EXPECT_TRUE(j["stacks"][0]["frames"][0].contains(k)) << k;
  }
}

TEST(FindingJson, StallRoundTrip) {
  const StallFinding f = Sample();
  auto back = StallFromJson(nlohmann::json::parse(ToJsonLine(f)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->loop, "main");
  EXPECT_EQ(back->stall_class, StallClass::kBlocked);
  EXPECT_EQ(back->start_ns, f.start_ns);
  ASSERT_EQ(back->stacks.size(), 1u);
  EXPECT_EQ(back->stacks[0].frames[1].line, 12);
  EXPECT_EQ(back->stacks[0].frames[0].offset, 0x1234u);
}

TEST(FindingJson, FramesSayWhatTheyAre) {
  StallFinding f = Sample();
  Frame py;
  py.function = "Sleep.get";
  py.file = "/srv/app.py";
  py.line = 31;
  py.kind = "python";
  Frame jit{"busyLoopHere /srv/app.js:2:1", "[jit]", 0, "", 0};
  jit.kind = "jit";
  f.stacks[0].frames.insert(f.stacks[0].frames.begin() + 1, {py, jit});
  auto j = ToJson(f);
  EXPECT_EQ(j["stacks"][0]["frames"][0]["kind"], "native");
  EXPECT_EQ(j["stacks"][0]["frames"][1]["kind"], "python");
  EXPECT_EQ(j["stacks"][0]["frames"][2]["kind"], "jit");
  auto back = StallFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->stacks[0].frames.size(), 4u);
  EXPECT_EQ(back->stacks[0].frames[1].kind, "python");
  EXPECT_EQ(back->stacks[0].frames[1].function, "Sleep.get");
  EXPECT_EQ(back->stacks[0].frames[1].line, 31);
  EXPECT_EQ(back->stacks[0].frames[2].kind, "jit");
  EXPECT_EQ(back->stacks[0].frames[3].kind, "native");
  // Schema 1 frames have no kind: native.
  j["stacks"][0]["frames"][1].erase("kind");
  back = StallFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->stacks[0].frames[1].kind, "native");
  // Anything else is refused, naming the accepted values.
  j["stacks"][0]["frames"][1]["kind"] = "ruby";
  back = StallFromJson(j);
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("\"native\", \"python\" or \"jit\""), std::string::npos)
      << back.status().message();
  j["stacks"][0]["frames"][1]["kind"] = 7;
  EXPECT_FALSE(StallFromJson(j).ok());
}

TEST(FindingJson, DelayRoundTripWithBuckets) {
  DelayFinding d;
  d.loop = "l";
  d.count = 10;
  d.p99_s = 0.002;
  d.delay_buckets = {{3, 5}, {400, 5}};
  auto j = ToJson(d, {.include_buckets = true});
  for (const char* k :
       {"window_s", "count", "p50_s", "p90_s", "p99_s", "p999_s", "max_s", "utilization"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  auto back = DelayFromJson(j);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->delay_buckets, d.delay_buckets);
  EXPECT_FALSE(ToJson(d).contains("delay_buckets"));
}

TEST(FindingJson, RejectsWrongTypesWithAReason) {
  auto j = ToJson(Sample());
  j["pid"] = "not a number";
  auto r = StallFromJson(j);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("pid"), std::string::npos);
  j = ToJson(Sample());
  j["class"] = "sleepy";
  EXPECT_FALSE(StallFromJson(j).ok());
  EXPECT_FALSE(StallFromJson(nlohmann::json::array()).ok());
  auto d = ToJson(DelayFinding{}, {.include_buckets = true});
  d["delay_buckets"] = nlohmann::json::array({nlohmann::json::array({1})});
  EXPECT_FALSE(DelayFromJson(d).ok());
}

// The renderings of every table field's value of f, in table order.
template <typename Table, typename Struct>
std::vector<std::string> Rendered(const Table& table, const Struct& f) {
  std::vector<std::string> out;
  ForEachField(table, [&](const auto& field) {
    using T = typename std::decay_t<decltype(field)>::Type;
    if constexpr (std::is_same_v<T, StallClass>) {
      out.push_back(StallClassName(f.*field.member));
    } else {
      out.push_back(nlohmann::json(f.*field.member).dump());
    }
  });
  return out;
}

// The test findings hold what they promise: no two fields alike, none at its default (booleans:
// different from each other in each phase, each non-default in one of the two phases).
TEST(FindingSchema, TestFindingsSetEveryFieldToADistinctValue) {
  auto check = [](const auto& table, const auto& distinct, const auto& defaults, bool phase1) {
    const auto v = Rendered(table, distinct), d = Rendered(table, defaults);
    std::set<std::string> seen;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == "true" || v[i] == "false") {
        continue;
      }
      EXPECT_NE(v[i], d[i]) << "field " << i << " is at its default";
      EXPECT_TRUE(seen.insert(v[i]).second) << "field " << i << " repeats " << v[i];
    }
    std::vector<std::string> bools;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == "true" || v[i] == "false") {
        bools.push_back(v[i]);
      }
    }
    for (size_t k = 1; k < bools.size(); ++k) {
      EXPECT_NE(bools[k], bools[k - 1]);
    }
    if (!bools.empty()) {
      EXPECT_EQ(bools[0], phase1 ? "false" : "true");
    }
  };
  check(kDelayFields, testing::DistinctDelay(), DelayFinding{}, false);
  check(kStallFields, testing::DistinctStall(0), StallFinding{}, false);
  check(kStallFields, testing::DistinctStall(1), StallFinding{}, true);
  EXPECT_EQ(testing::DistinctDelay().utilization_estimated, true);
  EXPECT_NE(testing::DistinctStall(0).ongoing, testing::DistinctStall(1).ongoing);
  EXPECT_NE(testing::DistinctStall(0).estimated, testing::DistinctStall(1).estimated);
}

nlohmann::json Pairs(const SparseHistogram& h) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& [i, n] : h) {
    a.push_back(nlohmann::json::array({i, n}));
  }
  return a;
}

// Written by hand, not from the table: each member under its documented name (docs/findings.md).
// A table entry that pairs a name with the wrong member fails here.
TEST(FindingSchema, DelayJsonNamesEachMemberAsDocumented) {
  const DelayFinding d = testing::DistinctDelay();
  const nlohmann::json j = ToJson(d, {.include_buckets = true});
  EXPECT_EQ(j["kind"], "delay");
  EXPECT_EQ(j["schema_version"], kFindingSchemaVersion);
  EXPECT_EQ(j["service"], d.service);
  EXPECT_EQ(j["pid"], d.pid);
  EXPECT_EQ(j["loop"], d.loop);
  EXPECT_EQ(j["end_ns"], d.end_ns);
  EXPECT_EQ(j["window_s"], d.window_s);
  EXPECT_EQ(j["count"], d.count);
  EXPECT_EQ(j["p50_s"], d.p50_s);
  EXPECT_EQ(j["p90_s"], d.p90_s);
  EXPECT_EQ(j["p99_s"], d.p99_s);
  EXPECT_EQ(j["p999_s"], d.p999_s);
  EXPECT_EQ(j["max_s"], d.max_s);
  EXPECT_EQ(j["sum_s"], d.sum_s);
  EXPECT_EQ(j["utilization"], d.utilization);
  EXPECT_EQ(j["utilization_estimated"], d.utilization_estimated);
  EXPECT_EQ(j["boundary_source"], d.boundary_source);
  EXPECT_EQ(j["loop_kind"], d.loop_kind);
  EXPECT_EQ(j["runtime"], d.runtime);
  EXPECT_EQ(j["iterations"], d.iterations);
  EXPECT_EQ(j["iteration_sum_s"], d.iteration_sum_s);
  EXPECT_EQ(j["stalls_total"], d.stalls_total);
  EXPECT_EQ(j["stack_samples_total"], d.stack_samples_total);
  EXPECT_EQ(j["reports_suppressed_total"], d.reports_suppressed_total);
  EXPECT_EQ(j["findings_dropped_total"], d.findings_dropped_total);
  EXPECT_EQ(j["delay_buckets"], Pairs(d.delay_buckets));
  EXPECT_EQ(j["iteration_buckets"], Pairs(d.iteration_buckets));
  EXPECT_EQ(j.size(), 27u) << j.dump();  // the 25 members + kind + schema_version
  const nlohmann::json plain = ToJson(d);
  EXPECT_FALSE(plain.contains("delay_buckets"));
  EXPECT_FALSE(plain.contains("iteration_buckets"));
  EXPECT_EQ(plain.size(), 25u);
}

TEST(FindingSchema, StallJsonNamesEachMemberAsDocumented) {
  for (int phase : {0, 1}) {
    StallFinding s = testing::DistinctStall(phase);
    s.stacks.push_back(Stack{2, "proc", {Frame{"f", "m", 3, "x.c", 4}}});
    const nlohmann::json j = ToJson(s);
    EXPECT_EQ(j["kind"], "stall");
    EXPECT_EQ(j["schema_version"], kFindingSchemaVersion);
    EXPECT_EQ(j["service"], s.service);
    EXPECT_EQ(j["pid"], s.pid);
    EXPECT_EQ(j["loop"], s.loop);
    EXPECT_EQ(j["stall_id"], s.stall_id);
    EXPECT_EQ(j["start_ns"], s.start_ns);
    EXPECT_EQ(j["duration_s"], s.duration_s);
    EXPECT_EQ(j["ongoing"], s.ongoing);
    EXPECT_EQ(j["estimated"], s.estimated);
    EXPECT_EQ(j["class"], "starved");
    EXPECT_EQ(j["syscall"], s.syscall);
    EXPECT_EQ(j["fd_target"], s.fd_target);
    EXPECT_EQ(j["cpu_ratio"], s.cpu_ratio);
    EXPECT_EQ(j["wait_ratio"], s.wait_ratio);
    EXPECT_EQ(j["hint"], s.hint);
    EXPECT_EQ(j["samples_failed"], s.samples_failed);
    EXPECT_EQ(j["reports_suppressed"], s.reports_suppressed);
    EXPECT_EQ(j["sampling_note"], s.sampling_note);
    EXPECT_EQ(j["stacks"][0]["frames"][0]["line"], 4);
    EXPECT_EQ(j.size(), 20u) << j.dump();  // the 18 members + kind + schema_version
  }
}

// Decoding reads every member back from its own name.
TEST(FindingSchema, EveryFieldRoundTrips) {
  const DelayFinding d = testing::DistinctDelay();
  auto back = DelayFromJson(nlohmann::json::parse(ToJsonLine(d, {.include_buckets = true})));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(Rendered(kDelayFields, *back), Rendered(kDelayFields, d));
  for (int phase : {0, 1}) {
    const StallFinding s = testing::DistinctStall(phase);
    auto sb = StallFromJson(nlohmann::json::parse(ToJsonLine(s)));
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    EXPECT_EQ(Rendered(kStallFields, *sb), Rendered(kStallFields, s));
  }
}

// Keys the decoder does not know are ignored, whatever their value (a newer agent's fields).
TEST(FindingSchema, UnknownKeysAreIgnored) {
  const DelayFinding d = testing::DistinctDelay();
  for (const char* v : {"\"x\"", "1", "-1", "1.5", "true", "null", "[1]", "{\"a\":1}"}) {
    nlohmann::json j = ToJson(d, {.include_buckets = true});
    j["a_future_field"] = nlohmann::json::parse(v);
    auto back = DelayFromJson(j);
    ASSERT_TRUE(back.ok()) << v;
    EXPECT_EQ(Rendered(kDelayFields, *back), Rendered(kDelayFields, d)) << v;
  }
}

// The ledger's kind (docs/findings.md "calls"): its documented names, nested sites, and a round
// trip through the decoder.
TEST(FindingJson, CallsHaveTheDocumentedFieldsAndRoundTrip) {
  CallsFinding c;
  c.service = "svc";
  c.pid = 42;
  c.loop = "main";
  c.end_ns = 1'700'000'000'000'000'000;
  c.window_s = 10.0;
  c.overflow = 3;
  c.calls.push_back({.call = "getaddrinfo",
                     .site = Frame{"resolve_backend", "/usr/bin/app", 0x1234, "app.c", 20},
                     .count = 100,
                     .total_s = 0.012,
                     .max_s = 0.0004,
                     .p99_s = 0.0003});
  const nlohmann::json j = ToJson(c);
  EXPECT_EQ(j["kind"], "calls");
  EXPECT_EQ(j["schema_version"], kFindingSchemaVersion);
  for (const char* k : {"service", "pid", "loop", "end_ns", "window_s", "overflow", "calls"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(j["overflow"], 3);
  const auto& e = j["calls"][0];
  EXPECT_EQ(e["call"], "getaddrinfo");
  EXPECT_EQ(e["count"], 100);
  EXPECT_DOUBLE_EQ(e["total_s"].get<double>(), 0.012);
  EXPECT_DOUBLE_EQ(e["max_s"].get<double>(), 0.0004);
  EXPECT_DOUBLE_EQ(e["p99_s"].get<double>(), 0.0003);
  EXPECT_EQ(e["site"]["function"], "resolve_backend");
  EXPECT_EQ(e["site"]["file"], "app.c");
  EXPECT_EQ(e["site"]["line"], 20);
  EXPECT_EQ(e["site"]["offset"], 0x1234);

  auto back = CallsFromJson(nlohmann::json::parse(ToJsonLine(c)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(ToJsonLine(*back), ToJsonLine(c));

  nlohmann::json bad = j;
  bad["calls"][0]["count"] = "many";
  EXPECT_NE(CallsFromJson(bad).status().message().find("'count'"), std::string::npos);
  bad = j;
  bad["calls"] = 1;
  EXPECT_FALSE(CallsFromJson(bad).ok());
}

TEST(FindingSchema, ClassMustBeAKnownName) {
  nlohmann::json j = ToJson(testing::DistinctStall());
  j["class"] = "sleepy";
  auto r = StallFromJson(j);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cpu, blocked, starved, suspended or unknown"),
            std::string::npos);
  j["class"] = 3;
  EXPECT_NE(StallFromJson(j).status().message().find("'class' has the wrong type"),
            std::string::npos);
}

}  // namespace
}  // namespace stallwatch
