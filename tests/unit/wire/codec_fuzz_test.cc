// Fuzzing of the wire decoder in every build: a deterministic mutation run over valid frames
// through the libFuzzer target's entry (tests/fuzz, docs/fuzzing.md), which checks that the
// decoder neither crashes nor holds unbounded memory and that what it decodes re-encodes.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include "../common/distinct_findings.h"
#include "stallwatch/common/finding_fields.h"
#include "stallwatch/wire/codec.h"

// The fuzz target (tests/fuzz/wire_codec_fuzz.cc): checks its invariants on every input.
extern "C" int SwFuzzWireCodec(const uint8_t* data, size_t size);

namespace stallwatch::wire {
namespace {

// A sanitized Debug build runs these mutation loops 20 to 50 times slower (the delay one took
// over two minutes under ThreadSanitizer on two busy cores): it runs a fifth of them, the
// libFuzzer stage (tests/fuzz/run.sh) runs the targets at length.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kRunShare = 5;
#else
constexpr int kRunShare = 1;
#endif

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
  for (int iter = 0; iter < 20000 / kRunShare; ++iter) {
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
      if (in.empty()) {
        in = "S";
      }
    }
    FrameDecoder d;
    d.Feed(in.data(), in.size());
    Message m;
    DecodeError err;
    for (int i = 0; i < 100; ++i) {
      auto r = d.Next(&m, &err);
      if (r == FrameDecoder::Result::kMessage) {
        ++decoded;
      }
      if (r == FrameDecoder::Result::kNeedMore ||
          (r == FrameDecoder::Result::kError && err.fatal)) {
        break;
      }
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
  DelayFinding few;  // a window with few fields set, as from an idle loop
  few.service = "svc";
  few.pid = 9;
  few.loop = "main";
  few.window_s = 10;
  few.count = 3;
  few.delay_buckets = {{10, 2}, {300, 1}};
  // Every field distinct (tests/unit/common/distinct_findings.h): a key read into the wrong
  // member, or not read, changes the result.
  DelayFinding d = testing::DistinctDelay();
  d.end_ns = 1'700'000'000'123'456'789;
  d.p99_s = 0.0123456789;
  d.sum_s = 1e-7;
  d.delay_buckets = {{10, 2}, {300, 1}};
  const std::string seed = EncodeBody(d);
  std::string spaced = seed;  // whitespace between the tokens
  for (size_t i = 0; (i = spaced.find_first_of(",:[", i)) != std::string::npos; i += 2) {
    spaced.insert(i + 1, i % 3 == 0 ? " " : "\n\t");
  }
  const std::string seeds[] = {seed, spaced, EncodeBody(few)};
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
  for (int iter = 0; iter < 40000 / kRunShare; ++iter) {
    std::string body = seeds[iter % 3];
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
      if (body.empty()) {
        body = "{}";
      }
    }
    Message fast_m, slow_m;
    DecodeError fast_e, slow_e;
    const bool fast =
        internal::DecodeBodyWith(body, internal::DelayDecoding::kScanner, &fast_m, &fast_e);
    const bool slow =
        internal::DecodeBodyWith(body, internal::DelayDecoding::kJsonOnly, &slow_m, &slow_e);
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
  ASSERT_TRUE(internal::DecodeBodyWith(seed, internal::DelayDecoding::kScanner, &m, &e));
  EXPECT_EQ(EncodeBody(m), seed);
  ASSERT_TRUE(internal::DecodeBodyWith(spaced, internal::DelayDecoding::kScanner, &m, &e));
  EXPECT_EQ(EncodeBody(m), EncodeBody(d));
  DelayFinding scanned;
  EXPECT_TRUE(internal::ScanDelayForTest(seed, &scanned));
  EXPECT_TRUE(internal::ScanDelayForTest(spaced, &scanned));
  // The mutations must leave the scanner plenty to decide, or the comparison proves little.
  EXPECT_GT(scanner_took, 2000 / kRunShare) << "of " << agreed_ok << " accepted bodies";
  EXPECT_GT(agreed_ok, 100);
}

// The scanner reads every key into its own member, as the JSON decoder does: a body written by
// hand (not from the table) with every field distinct.
TEST(WireSchema, ScannerReadsEveryFieldUnderItsDocumentedName) {
  const std::string body =
      R"({"kind":"delay","schema_version":1,"service":"s1","pid":2,"loop":"l3","end_ns":4,)"
      R"("window_s":5.5,"count":6,"p50_s":0.07,"p90_s":0.08,"p99_s":0.09,"p999_s":0.1,)"
      R"("max_s":0.11,"sum_s":0.12,"utilization":0.13,"utilization_estimated":true,)"
      R"("boundary_source":"b14","loop_kind":"k14a","runtime":"r14b","iterations":15,"iteration_sum_s":0.16,"stalls_total":17,)"
      R"("stack_samples_total":18,"reports_suppressed_total":19,"findings_dropped_total":20,)"
      R"("delay_buckets":[[21,22]],"iteration_buckets":[[23,24]]})";
  DelayFinding f;
  ASSERT_TRUE(internal::ScanDelayForTest(body, &f));
  EXPECT_EQ(f.service, "s1");
  EXPECT_EQ(f.pid, 2);
  EXPECT_EQ(f.loop, "l3");
  EXPECT_EQ(f.end_ns, 4);
  EXPECT_EQ(f.window_s, 5.5);
  EXPECT_EQ(f.count, 6u);
  EXPECT_EQ(f.p50_s, 0.07);
  EXPECT_EQ(f.p90_s, 0.08);
  EXPECT_EQ(f.p99_s, 0.09);
  EXPECT_EQ(f.p999_s, 0.1);
  EXPECT_EQ(f.max_s, 0.11);
  EXPECT_EQ(f.sum_s, 0.12);
  EXPECT_EQ(f.utilization, 0.13);
  EXPECT_TRUE(f.utilization_estimated);
  EXPECT_EQ(f.boundary_source, "b14");
  EXPECT_EQ(f.loop_kind, "k14a");
  EXPECT_EQ(f.runtime, "r14b");
  EXPECT_EQ(f.iterations, 15u);
  EXPECT_EQ(f.iteration_sum_s, 0.16);
  EXPECT_EQ(f.stalls_total, 17u);
  EXPECT_EQ(f.stack_samples_total, 18u);
  EXPECT_EQ(f.reports_suppressed_total, 19u);
  EXPECT_EQ(f.findings_dropped_total, 20u);
  EXPECT_EQ(f.delay_buckets, (SparseHistogram{{21, 22}}));
  EXPECT_EQ(f.iteration_buckets, (SparseHistogram{{23, 24}}));
  Message m;
  DecodeError e;
  ASSERT_TRUE(internal::DecodeBodyWith(body, internal::DelayDecoding::kJsonOnly, &m, &e));
  EXPECT_EQ(EncodeBody(m), EncodeBody(f));
}

// An encoded window with every field distinct is taken by the scanner itself and comes back
// equal to what was sent on both paths.
TEST(WireSchema, EveryDelayFieldSurvivesBothPaths) {
  const DelayFinding d = testing::DistinctDelay();
  const std::string body = EncodeBody(d);
  DelayFinding scanned;
  ASSERT_TRUE(internal::ScanDelayForTest(body, &scanned)) << body;
  EXPECT_EQ(EncodeBody(scanned), body);
  for (auto path : {internal::DelayDecoding::kScanner, internal::DelayDecoding::kJsonOnly}) {
    Message m;
    DecodeError e;
    ASSERT_TRUE(internal::DecodeBodyWith(body, path, &m, &e)) << e.message;
    EXPECT_EQ(EncodeBody(m), body);
  }
}

// A key outside the schema is ignored by both paths, whatever its value; the scanner itself
// skips strings, numbers and booleans and leaves null, arrays, objects and negative numbers to
// the JSON decoder. Neither path counts or reports it.
TEST(WireSchema, UnknownKeysAreIgnoredAlikeOnBothPaths) {
  const std::string base = EncodeBody(testing::DistinctDelay());
  const struct {
    const char* value;
    bool scanner_takes_it;
  } kCases[] = {{"\"x\"", true},      {"12", true},          {"1.5e3", true}, {"true", true},
                {"false", true},      {"-1", false},         {"null", false}, {"[1]", false},
                {"{\"a\":1}", false}, {"\"\\u00e9\"", false}};
  for (const auto& c : kCases) {
    for (const std::string& body :
         {"{\"a_future_field\":" + std::string(c.value) + "," + base.substr(1),
          base.substr(0, base.size() - 1) + ",\"a_future_field\":" + c.value + "}"}) {
      DelayFinding scanned;
      EXPECT_EQ(internal::ScanDelayForTest(body, &scanned), c.scanner_takes_it) << body;
      for (auto path : {internal::DelayDecoding::kScanner, internal::DelayDecoding::kJsonOnly}) {
        Message m;
        DecodeError e;
        ASSERT_TRUE(internal::DecodeBodyWith(body, path, &m, &e)) << body << ": " << e.message;
        EXPECT_EQ(EncodeBody(m), base) << body;
      }
    }
  }
}

}  // namespace
}  // namespace stallwatch::wire
