#include "stallwatch/common/finding_json.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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
  for (const char* k : {"function", "module", "offset", "file", "line"}) {
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

}  // namespace
}  // namespace stallwatch
