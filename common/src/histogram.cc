#include "stallwatch/common/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace stallwatch {

size_t HistBucketIndex(uint64_t v) {
  if (v < kHistLinear) return static_cast<size_t>(v);
  const int k = 63 - std::countl_zero(v);  // v in [2^k, 2^(k+1)), k >= 8
  if (k >= kHistMaxExp) return kHistBuckets - 1;
  const int shift = k - kHistSubBits;
  const uint64_t sub = (v >> shift) - (uint64_t{1} << kHistSubBits);  // [0,128)
  return kHistLinear + static_cast<size_t>(k - (kHistSubBits + 1)) * (1u << kHistSubBits) + sub;
}

uint64_t HistBucketLower(size_t i) {
  if (i < kHistLinear) return i;
  const size_t j = i - kHistLinear;
  const int k = static_cast<int>(j >> kHistSubBits) + kHistSubBits + 1;
  const uint64_t sub = j & ((1u << kHistSubBits) - 1);
  return ((uint64_t{1} << kHistSubBits) + sub) << (k - kHistSubBits);
}

uint64_t HistBucketUpper(size_t i) {
  if (i < kHistLinear) return i + 1;
  const size_t j = i - kHistLinear;
  const int k = static_cast<int>(j >> kHistSubBits) + kHistSubBits + 1;
  return HistBucketLower(i) + (uint64_t{1} << (k - kHistSubBits));
}

uint64_t HistBucketMid(size_t i) {
  if (i < kHistLinear) return i;
  return HistBucketLower(i) + (HistBucketUpper(i) - HistBucketLower(i)) / 2;
}

void HistogramCounts::Add(uint64_t v, uint64_t n) {
  counts_[HistBucketIndex(v)] += n;
  total_ += n;
  sum_ns_ += v * n;
  max_ns_ = std::max(max_ns_, v);
}

uint64_t HistogramCounts::ValueAtQuantile(double q) const {
  if (total_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_)));
  rank = std::clamp<uint64_t>(rank, 1, total_);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      uint64_t v = HistBucketMid(i);
      // Never report above the exact maximum when it is known to be in this bucket.
      if (max_ns_ != 0 && max_ns_ >= HistBucketLower(i) && max_ns_ < HistBucketUpper(i)) {
        v = std::min(v, max_ns_);
      }
      return v;
    }
  }
  return HistBucketMid(counts_.size() - 1);
}

HistogramCounts HistogramCounts::Minus(const HistogramCounts& earlier) const {
  HistogramCounts out;
  for (size_t i = 0; i < counts_.size(); ++i) {
    out.counts_[i] = counts_[i] >= earlier.counts_[i] ? counts_[i] - earlier.counts_[i] : 0;
  }
  out.total_ = total_ >= earlier.total_ ? total_ - earlier.total_ : 0;
  out.sum_ns_ = sum_ns_ >= earlier.sum_ns_ ? sum_ns_ - earlier.sum_ns_ : 0;
  out.max_ns_ = max_ns_;
  return out;
}

void HistogramCounts::Merge(const HistogramCounts& other) {
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  total_ += other.total_;
  sum_ns_ += other.sum_ns_;
  max_ns_ = std::max(max_ns_, other.max_ns_);
}

SparseHistogram HistogramCounts::ToSparse() const {
  SparseHistogram out;
  for (size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] != 0) out.emplace_back(static_cast<uint32_t>(i), counts_[i]);
  }
  return out;
}

HistogramCounts HistogramCounts::FromSparse(const SparseHistogram& sparse) {
  HistogramCounts out;
  for (const auto& [i, n] : sparse) {
    if (i >= kHistBuckets) continue;
    out.counts_[i] += n;
    out.total_ += n;
    out.sum_ns_ += HistBucketMid(i) * n;
    out.max_ns_ = std::max(out.max_ns_, HistBucketMid(i));
  }
  return out;
}

void Histogram::Snapshot(HistogramCounts* out) const {
  uint64_t total = 0;
  for (size_t i = 0; i < kHistBuckets; ++i) {
    out->counts_[i] = counts_[i].load(std::memory_order_relaxed);
    total += out->counts_[i];
  }
  // The bucket sum is the consistent total for quantiles; total_ may run ahead of it.
  out->total_ = total;
  out->sum_ns_ = sum_ns_.load(std::memory_order_relaxed);
  out->max_ns_ = window_max_ns_.load(std::memory_order_relaxed);
}

}  // namespace stallwatch
