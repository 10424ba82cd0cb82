// JIT names from perf map files (agent/src/perf_map.h), on the format node --perf-basic-prof
// writes.
#include "perf_map.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace stallwatch::agent::internal {
namespace {

constexpr const char* kNodeMap =
    "18c4000 300 Builtin:DeoptimizationEntry_Eager\n"
    "7f5b86f45ac0 1bc JS:^busyLoopHere [eval]:1:22\n"
    "2409bd254bee 39 JS:~busyLoopHere [eval]:1:22\n"
    "7f5b86f462c0 44c JS:*busyLoopHere [eval]:1:22\n"
    "not a line\n"
    "zz 10 bad start\n"
    "100 0 empty size\n"
    "200 10\n";

TEST(PerfMap, ParsesNodesLinesAndSkipsTheMalformedOnes) {
  size_t bad = 0;
  const auto e = ParsePerfMap(kNodeMap, &bad);
  EXPECT_EQ(bad, 4u);
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].start, 0x18c4000u);
  EXPECT_EQ(e[0].size, 0x300u);
  EXPECT_EQ(e[0].name, "Builtin:DeoptimizationEntry_Eager");
  for (size_t i = 1; i < e.size(); ++i) {
    EXPECT_LT(e[i - 1].start, e[i].start);
  }
}

TEST(PerfMap, FindsThePcInsideARangeOnly) {
  const auto e = ParsePerfMap(kNodeMap);
  const PerfMapEntry* hit = FindPerfMapEntry(e, 0x7f5b86f462c0 + 0x44b);
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(hit->name, "JS:*busyLoopHere [eval]:1:22");
  EXPECT_EQ(FindPerfMapEntry(e, 0x7f5b86f462c0 + 0x44c), nullptr);  // one past the end
  EXPECT_EQ(FindPerfMapEntry(e, 0x1000), nullptr);                  // below every entry
  EXPECT_EQ(FindPerfMapEntry({}, 0x1000), nullptr);
}

TEST(PerfMap, ARecompiledFunctionAtTheSameAddressReplacesTheOldName) {
  const auto e = ParsePerfMap("1000 20 JS:~old\n1000 40 JS:*new\n");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].name, "JS:*new");
  EXPECT_NE(FindPerfMapEntry(e, 0x1030), nullptr);
}

TEST(PerfMap, V8TierPrefixesAreDroppedFromNames) {
  EXPECT_EQ(JitFunctionName("JS:*busyLoopHere [eval]:1:22"), "busyLoopHere [eval]:1:22");
  EXPECT_EQ(JitFunctionName("LazyCompile:~handler /srv/app.js:10:3"), "handler /srv/app.js:10:3");
  EXPECT_EQ(JitFunctionName("Builtin:ArrayMap"), "Builtin:ArrayMap");
  EXPECT_EQ(JitFunctionName("py::main:/srv/app.py"), "py::main:/srv/app.py");
}

TEST(PerfMap, AFileThatGrowsIsReadAgain) {
  const pid_t fake = 999999;  // no such process: its map path is free
  const std::string path = "/tmp/perf-" + std::to_string(fake) + ".map";
  {
    std::ofstream f(path);
    f << "1000 10 JS:*first\n";
  }
  PerfMap m(fake, /*min_reload_ns=*/0);
  EXPECT_EQ(m.Lookup(0x1005, 1), "first");
  EXPECT_EQ(m.Lookup(0x2005, 2), "");
  {
    std::ofstream f(path, std::ios::app);
    f << "2000 10 JS:*second\n";
  }
  EXPECT_EQ(m.Lookup(0x2005, 3), "second");
  unlink(path.c_str());
  EXPECT_EQ(m.Lookup(0x3005, 4), "");
}

}  // namespace
}  // namespace stallwatch::agent::internal
