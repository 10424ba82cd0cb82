// Fuzzing of the wire decoder in every build: a deterministic mutation run over valid frames
// through the libFuzzer target's entry (tests/fuzz, docs/fuzzing.md), which checks that the
// decoder neither crashes nor holds unbounded memory and that what it decodes re-encodes.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include "stallwatch/wire/codec.h"

// The fuzz target (tests/fuzz/wire_codec_fuzz.cc): checks its invariants on every input.
extern "C" int SwFuzzWireCodec(const uint8_t* data, size_t size);

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
    SwFuzzWireCodec(reinterpret_cast<const uint8_t*>(in.data()), in.size());
  }
  EXPECT_GT(decoded, 0);  // the mutations leave some frames intact: the harness does decode
}

}  // namespace
}  // namespace stallwatch::wire

namespace stallwatch::wire {
namespace {

// The scanner (fast path) for delay windows and the DOM path accept and reject the same bodies.
TEST(WireFuzz, DelayFastPathAgreesWithDomPath) {
  DelayFinding d;
  d.service = "svc";
  d.pid = 9;
  d.loop = "main";
  d.window_s = 10;
  d.count = 3;
  d.utilization = 0.5;
  d.delay_buckets = {{10, 2}, {300, 1}};
  d.iteration_buckets = {{5, 7}};
  d.stalls_total = 4;
  const std::string seed = EncodeBody(d);
  d.boundary_source = "epoll_wait";
  d.utilization_estimated = true;
  d.end_ns = 1'700'000'000'123'456'789;
  d.p99_s = 0.0123456789;
  d.sum_s = 1e-7;
  std::string spaced = EncodeBody(d);  // every field, and whitespace between the tokens
  for (size_t i = 0; (i = spaced.find_first_of(",:[", i)) != std::string::npos; i += 2) {
    spaced.insert(i + 1, i % 3 == 0 ? " " : "\n\t");
  }
  const std::string seeds[] = {seed, spaced};
  const char* kInserts[] = {"-1",
                            "null",
                            "true",
                            "\"x\"",
                            "[1,2]",
                            "{}",
                            "1.5",
                            "[[1,2,3]]",
                            "4294967296",
                            "0",
                            ",",
                            "\"kind\":\"stall\",",
                            " ",
                            "1e-400",
                            "2.5E+3",
                            "1e400",
                            "18446744073709551615",
                            "18446744073709551616",
                            "9223372036854775808",
                            "\"\\u0064\"",
                            "\"\xc3\xa9\"",
                            "\"p50_s\":0.25,",
                            "\"delay_buckets\":[[1,1]],"};
  std::mt19937 rng(777);
  int agreed_ok = 0, scanner_took = 0;
  for (int iter = 0; iter < 40000; ++iter) {
    std::string body = seeds[iter % 2];
    const int mutations = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < mutations; ++k) {
      const size_t pos = rng() % body.size();
      switch (rng() % 3) {
        case 0:
          body[pos] = "0123456789,:[]{}\"-.eE \\"[rng() % 23];
          break;
        case 1:
          body.erase(pos, 1 + rng() % 6);
          break;
        case 2:
          body.insert(pos, kInserts[rng() % std::size(kInserts)]);
          break;
      }
      if (body.empty()) body = "{}";
    }
    Message fast_m, slow_m;
    DecodeError fast_e, slow_e;
    const bool fast = internal::DecodeBodyForTest(body, &fast_m, &fast_e, true);
    const bool slow = internal::DecodeBodyForTest(body, &slow_m, &slow_e, false);
    DelayFinding scanned;
    scanner_took += internal::ScanDelayForTest(body, &scanned) ? 1 : 0;
    ASSERT_EQ(fast, slow) << body;
    if (fast) {
      ++agreed_ok;
      ASSERT_EQ(EncodeBody(fast_m), EncodeBody(slow_m)) << body;
    } else {
      ASSERT_EQ(fast_e.reason, slow_e.reason) << body;
    }
  }
  Message m;
  DecodeError e;
  ASSERT_TRUE(internal::DecodeBodyForTest(seed, &m, &e, true));
  EXPECT_EQ(EncodeBody(m), seed);
  ASSERT_TRUE(internal::DecodeBodyForTest(spaced, &m, &e, true));
  EXPECT_EQ(EncodeBody(m), EncodeBody(d));
  DelayFinding scanned;
  EXPECT_TRUE(internal::ScanDelayForTest(seed, &scanned));
  EXPECT_TRUE(internal::ScanDelayForTest(spaced, &scanned));
  // The mutations must leave the scanner plenty to decide, or the comparison proves little.
  EXPECT_GT(scanner_took, 2000) << "of " << agreed_ok << " accepted bodies";
  EXPECT_GT(agreed_ok, 100);
}

}  // namespace
}  // namespace stallwatch::wire
