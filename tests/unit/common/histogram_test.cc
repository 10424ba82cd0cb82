#include "stallwatch/common/histogram.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace stallwatch {
namespace {

TEST(HistogramLayout, BucketsAreContiguousAndOrdered) {
  for (size_t i = 0; i + 1 < kHistBuckets; ++i) {
    ASSERT_EQ(HistBucketUpper(i), HistBucketLower(i + 1)) << "bucket " << i;
    ASSERT_LT(HistBucketLower(i), HistBucketUpper(i));
  }
}

TEST(HistogramLayout, EveryValueLandsInItsBucket) {
  std::mt19937_64 rng(42);
  for (int n = 0; n < 200000; ++n) {
    const uint64_t v = rng() % (uint64_t{1} << (kHistMaxExp - (n % 30)));
    const size_t i = HistBucketIndex(v);
    ASSERT_LE(HistBucketLower(i), v);
    ASSERT_GT(HistBucketUpper(i), v);
  }
}

// The contract: <= 1 % relative error from 1 us to 60 s.
TEST(HistogramLayout, RelativeErrorBelowOnePercentFrom1usTo60s) {
  double worst = 0;
  for (double v = 1e3; v <= 60e9; v *= 1.0007) {
    const uint64_t x = static_cast<uint64_t>(v);
    const double mid = static_cast<double>(HistBucketMid(HistBucketIndex(x)));
    worst = std::max(worst, std::abs(mid - x) / x);
  }
  EXPECT_LT(worst, 0.01);
  EXPECT_LT(worst, 0.005);  // the layout actually gives < 0.4 %
}

TEST(HistogramCounts, QuantilesOfAUniformRange) {
  HistogramCounts h;
  for (uint64_t v = 1; v <= 100000; ++v) h.Add(v * 1000);  // 1 us .. 100 ms
  EXPECT_EQ(h.total(), 100000u);
  EXPECT_NEAR(h.ValueAtQuantile(0.5), 50e6, 50e6 * 0.01);
  EXPECT_NEAR(h.ValueAtQuantile(0.99), 99e6, 99e6 * 0.01);
  EXPECT_EQ(h.max_ns(), 100000u * 1000);
  EXPECT_LE(h.ValueAtQuantile(1.0), h.max_ns());
  EXPECT_EQ(HistogramCounts().ValueAtQuantile(0.5), 0u);
}

TEST(Histogram, SnapshotMinusGivesTheWindow) {
  Histogram h;
  h.Record(1000);
  h.Record(2000);
  HistogramCounts first;
  h.Snapshot(&first);
  h.Record(50'000'000, 3);
  HistogramCounts second;
  h.Snapshot(&second);
  HistogramCounts w = second.Minus(first);
  EXPECT_EQ(w.total(), 3u);
  EXPECT_NEAR(w.ValueAtQuantile(0.5), 50e6, 50e6 * 0.01);
  EXPECT_EQ(h.TakeWindowMax(), 50'000'000u);
  EXPECT_EQ(h.TakeWindowMax(), 0u);
}

TEST(HistogramCounts, SparseRoundTrip) {
  HistogramCounts h;
  h.Add(5);
  h.Add(123456789, 7);
  auto sparse = h.ToSparse();
  ASSERT_EQ(sparse.size(), 2u);
  auto back = HistogramCounts::FromSparse(sparse);
  EXPECT_EQ(back.total(), 8u);
  EXPECT_EQ(back.counts(), h.counts());
}

}  // namespace
}  // namespace stallwatch
