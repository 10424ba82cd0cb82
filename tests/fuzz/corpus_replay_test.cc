// Replays each fuzz target's seed corpus (tests/fuzz/corpus/<target>/, regression inputs of
// fixed crashes included) through the same entry function libFuzzer calls, in every build. A
// broken invariant aborts the test with the target's message and the input's name.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_check.h"

extern "C" int SwFuzzWireCodec(const uint8_t* data, size_t size);
extern "C" int SwFuzzDuration(const uint8_t* data, size_t size);
extern "C" int SwFuzzEnv(const uint8_t* data, size_t size);
extern "C" int SwFuzzProc(const uint8_t* data, size_t size);
extern "C" int SwFuzzHttpQuery(const uint8_t* data, size_t size);
extern "C" int SwFuzzDaemonFrames(const uint8_t* data, size_t size);

namespace stallwatch::fuzz {
namespace {

struct Target {
  const char* name;
  int (*entry)(const uint8_t*, size_t);
};

class FuzzCorpus : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzCorpus, ReplaysEverySeed) {
  const Target t = GetParam();
  const std::filesystem::path dir = std::filesystem::path(SW_FUZZ_CORPUS_DIR) / t.name;
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 5u) << "a seed corpus has valid and invalid examples";
  stats = {};
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string name = f.string();
    current_input = name.c_str();
    EXPECT_EQ(t.entry(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0) << name;
    current_input = nullptr;
  }
  // Both sides of the parser are exercised: a parser that refuses (or takes) everything fails.
  EXPECT_GT(stats.accepted, 0u) << "no seed of " << t.name << " was accepted";
  EXPECT_GT(stats.rejected, 0u) << "no seed of " << t.name << " was refused";
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpus,
                         ::testing::Values(Target{"wire_codec", &SwFuzzWireCodec},
                                           Target{"duration", &SwFuzzDuration},
                                           Target{"env", &SwFuzzEnv}, Target{"proc", &SwFuzzProc},
                                           Target{"http_query", &SwFuzzHttpQuery},
                                           Target{"daemon_frames", &SwFuzzDaemonFrames}),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(FuzzCheck, BrokenInvariantAbortsNamingIt) {
  EXPECT_DEATH(SW_FUZZ_CHECK(1 + 1 == 3), "fuzz invariant failed: 1 \\+ 1 == 3");
}

}  // namespace
}  // namespace stallwatch::fuzz
