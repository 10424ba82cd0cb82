#pragma once
// A log-linear (HDR-like) histogram of nanosecond values.
//
// Layout: values below 256 ns have a bucket each; above, every power of two is split into
// 128 equal buckets, so a bucket's width is at most 1/128 of its lower bound and the midpoint
// reported for it is within 0.4 % of any value in it. Values from 0 to 2^36 ns (68.7 s) are
// represented; larger values land in the last bucket.
//
// Threading: Histogram has a single writer (one thread calls Record*) and any number of
// readers (Snapshot), lock-free; readers see each bucket atomically, not the whole histogram
// at one instant. HistogramCounts is a plain value.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "stallwatch/findings.h"

namespace stallwatch {

static_assert(std::atomic<uint64_t>::is_always_lock_free);

inline constexpr int kHistSubBits = 7;  // 128 buckets per octave
inline constexpr uint64_t kHistLinear = uint64_t{1} << (kHistSubBits + 1);  // 256
inline constexpr int kHistMaxExp = 36;
inline constexpr size_t kHistBuckets =
    kHistLinear + (kHistMaxExp - (kHistSubBits + 1)) * (size_t{1} << kHistSubBits);

size_t HistBucketIndex(uint64_t value_ns);
uint64_t HistBucketLower(size_t index);
uint64_t HistBucketUpper(size_t index);  // exclusive
uint64_t HistBucketMid(size_t index);    // the value reported for the bucket

class HistogramCounts {
 public:
  HistogramCounts() : counts_(kHistBuckets, 0) {}

  void Add(uint64_t value_ns, uint64_t n = 1);
  uint64_t total() const { return total_; }
  uint64_t sum_ns() const { return sum_ns_; }
  uint64_t max_ns() const { return max_ns_; }
  void set_max_ns(uint64_t m) { max_ns_ = m; }
  // The value at quantile q in [0,1] (bucket midpoint, exact below 256 ns); 0 when empty.
  uint64_t ValueAtQuantile(double q) const;
  // this - earlier, bucket by bucket (counts are cumulative); max is taken from this.
  HistogramCounts Minus(const HistogramCounts& earlier) const;
  void Merge(const HistogramCounts& other);
  SparseHistogram ToSparse() const;
  static HistogramCounts FromSparse(const SparseHistogram& sparse);
  const std::vector<uint64_t>& counts() const { return counts_; }

 private:
  friend class Histogram;
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t sum_ns_ = 0;
  uint64_t max_ns_ = 0;
};

class Histogram {
 public:
  Histogram() = default;
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Called on the single writer thread. No allocation, no syscall, no locked instruction.
  void Record(uint64_t value_ns, uint64_t n = 1) {
    auto& c = counts_[HistBucketIndex(value_ns)];
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    total_.store(total_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    sum_ns_.store(sum_ns_.load(std::memory_order_relaxed) + value_ns * n,
                  std::memory_order_relaxed);
    if (value_ns > window_max_ns_.load(std::memory_order_relaxed)) {
      // Only readers reset it (exchange), so a plain store can lose a reset that races with
      // a new maximum; the cost is one window's max attributed to the next.
      window_max_ns_.store(value_ns, std::memory_order_relaxed);
    }
  }

  // Called on any thread. Cumulative counts since construction; max is the largest value
  // recorded since the previous TakeWindowMax (or ever).
  void Snapshot(HistogramCounts* out) const;
  // Called on one reader thread: the largest value since the previous call, then resets it.
  uint64_t TakeWindowMax() { return window_max_ns_.exchange(0, std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, kHistBuckets> counts_{};
  std::atomic<uint64_t> total_{0};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> window_max_ns_{0};
};

}  // namespace stallwatch
