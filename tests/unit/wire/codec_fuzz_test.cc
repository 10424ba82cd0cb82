// Fuzzing of the wire decoder. The same entry point serves libFuzzer
// (clang -fsanitize=fuzzer -DSW_LIBFUZZER) and, in every build, a deterministic mutation run
// over valid frames that checks the decoder neither crashes nor holds unbounded memory.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include "stallwatch/wire/codec.h"

extern "C" int SwWireFuzzOne(const uint8_t* data, size_t size) {
  stallwatch::wire::FrameDecoder d;
  // Feed in two pieces to exercise the incremental path.
  const size_t half = size / 2;
  d.Feed(reinterpret_cast<const char*>(data), half);
  stallwatch::wire::Message m;
  stallwatch::wire::DecodeError err;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 1000; ++i) {
      auto r = d.Next(&m, &err);
      if (r == stallwatch::wire::FrameDecoder::Result::kNeedMore) break;
      if (r == stallwatch::wire::FrameDecoder::Result::kError && err.fatal) break;
    }
    if (round == 0) d.Feed(reinterpret_cast<const char*>(data) + half, size - half);
  }
  return 0;
}

#ifdef SW_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return SwWireFuzzOne(data, size);
}
#endif

namespace stallwatch::wire {
namespace {

TEST(WireFuzz, MutatedFramesNeverCrash) {
  StallFinding s;
  s.service = "svc";
  s.pid = 9;
  s.loop = "main";
  s.stacks.push_back(Stack{1, "signal", {Frame{"f", "m", 1, "x.c", 2}}});
  DelayFinding dl;
  dl.service = "svc";
  dl.pid = 9;
  dl.loop = "main";
  dl.delay_buckets = {{10, 2}, {300, 1}};
  Hello h;
  h.service = "svc";
  h.pid = 9;
  const std::string seeds[] = {EncodeFrame(h), EncodeFrame(s), EncodeFrame(dl)};
  std::mt19937 rng(12345);
  int decoded = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string in = seeds[iter % 3];
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < mutations; ++k) {
      const size_t pos = rng() % in.size();
      switch (rng() % 4) {
        case 0:
          in[pos] = static_cast<char>(rng());
          break;
        case 1:
          in.erase(pos, 1 + rng() % 8);
          break;
        case 2:
          in.insert(pos, 1, static_cast<char>("{}[]\",:0\\"[rng() % 9]));
          break;
        case 3:
          in += seeds[rng() % 3];
          break;
      }
      if (in.empty()) in = "S";
    }
    FrameDecoder d;
    d.Feed(in.data(), in.size());
    Message m;
    DecodeError err;
    for (int i = 0; i < 100; ++i) {
      auto r = d.Next(&m, &err);
      if (r == FrameDecoder::Result::kMessage) ++decoded;
      if (r == FrameDecoder::Result::kNeedMore || (r == FrameDecoder::Result::kError && err.fatal))
        break;
    }
    EXPECT_LE(d.pending(), in.size());
    SwWireFuzzOne(reinterpret_cast<const uint8_t*>(in.data()), in.size());
  }
  EXPECT_GT(decoded, 0);  // the mutations leave some frames intact: the harness does decode
}

}  // namespace
}  // namespace stallwatch::wire
