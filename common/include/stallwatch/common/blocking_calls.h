#pragma once
// The calls of the blocking-call ledger and their families, in the order of the agent's
// BlockingCall enum (agent/src/ledger.h): the names in "calls" findings and what
// `stallwatch check --forbid` accepts (docs/findings.md). Pure constexpr data; thread-safe.

#include <array>
#include <cstdint>
#include <string_view>

namespace stallwatch {

struct BlockingCallInfo {
  std::string_view name;
  std::string_view family;  // "dns", "sleep", "sync", "connect", "wait", "lock"
};

inline constexpr std::array<BlockingCallInfo, 17> kBlockingCalls = {{
    {"getaddrinfo", "dns"},
    {"gethostbyname", "dns"},
    {"gethostbyname_r", "dns"},
    {"getnameinfo", "dns"},
    {"nanosleep", "sleep"},
    {"clock_nanosleep", "sleep"},
    {"usleep", "sleep"},
    {"sleep", "sleep"},
    {"fsync", "sync"},
    {"fdatasync", "sync"},
    {"sync_file_range", "sync"},
    {"syncfs", "sync"},
    {"connect", "connect"},
    {"waitpid", "wait"},
    {"system", "wait"},
    {"pthread_join", "wait"},
    {"flock", "lock"},
}};

inline constexpr std::array<std::string_view, 6> kBlockingCallFamilies = {
    "dns", "sleep", "sync", "connect", "wait", "lock"};

// The duration buckets of a call site in a "calls" finding (its `buckets`: [[index, count], …]),
// the agent's ledger layout (agent/src/ledger.h): bucket 0 holds calls shorter than 2^8 ns; then
// two per power of two, [2^e, 1.5·2^e) and [1.5·2^e, 2^(e+1)) ns for e = 8 … 35; the last holds
// every call of 2^36 ns (68.7 s) or more.
inline constexpr int kCallBucketMinExp = 8;
inline constexpr int kCallBucketMaxExp = 36;
inline constexpr int kCallBuckets = 2 * (kCallBucketMaxExp - kCallBucketMinExp) + 2;

// The smallest duration (ns) of bucket `b` (0 ≤ b < kCallBuckets). Pure.
constexpr uint64_t CallBucketLowerNs(int b) {
  if (b <= 0) {
    return 0;
  }
  const int exp = kCallBucketMinExp + (b - 1) / 2;
  return (uint64_t{1} << exp) + static_cast<uint64_t>((b - 1) % 2) * (uint64_t{1} << (exp - 1));
}
// One past the largest duration (ns) of bucket `b`; UINT64_MAX for the last. Pure.
constexpr uint64_t CallBucketUpperNs(int b) {
  return b + 1 >= kCallBuckets ? UINT64_MAX : CallBucketLowerNs(b + 1);
}
static_assert(CallBucketLowerNs(1) == 256 && CallBucketLowerNs(2) == 384 &&
              CallBucketLowerNs(kCallBuckets - 1) == uint64_t{1} << kCallBucketMaxExp);

// The index of a call name in kBlockingCalls, or -1. Pure.
constexpr int BlockingCallIndex(std::string_view name) {
  for (size_t i = 0; i < kBlockingCalls.size(); ++i) {
    if (kBlockingCalls[i].name == name) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

}  // namespace stallwatch
