#pragma once
// The calls of the blocking-call ledger and their families, in the order of the agent's
// BlockingCall enum (agent/src/ledger.h): the names in "calls" findings and what
// `stallwatch check --forbid` accepts (docs/findings.md), and the only values a `call` label may
// take. Fixed: a call is only ever appended, never renamed or removed. Pure constexpr data;
// thread-safe.

#include <array>
#include <cstdint>
#include <string_view>

namespace stallwatch {

struct BlockingCallInfo {
  std::string_view name;
  // "dns", "sleep", "sync", "connect", "wait", "lock", "file" (regular files: disk I/O),
  // "socket" (sockets, pipes and FIFOs in blocking mode)
  std::string_view family;
};

inline constexpr std::array<BlockingCallInfo, 41> kBlockingCalls = {{
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
    // File I/O: open* on any path, the others on a regular file or block device only.
    {"open", "file"},
    {"openat", "file"},
    {"read", "file"},
    {"write", "file"},
    {"pread", "file"},
    {"pwrite", "file"},
    {"readv", "file"},
    {"writev", "file"},
    // On a socket, pipe or FIFO in blocking mode only (never with MSG_DONTWAIT).
    {"accept", "socket"},
    {"accept4", "socket"},
    {"recv", "socket"},
    {"recvfrom", "socket"},
    {"recvmsg", "socket"},
    {"send", "socket"},
    {"sendto", "socket"},
    {"sendmsg", "socket"},
    {"read_blocking", "socket"},  // read(2) on a socket, pipe or FIFO in blocking mode
    {"write_blocking", "socket"},
    {"readv_blocking", "socket"},
    {"writev_blocking", "socket"},
    {"popen", "wait"},
    {"pclose", "wait"},
    {"fcntl", "lock"},               // F_SETLKW and F_OFD_SETLKW only
    {"pthread_mutex_lock", "lock"},  // only when pthread_mutex_trylock found it taken
}};

inline constexpr std::array<std::string_view, 8> kBlockingCallFamilies = {
    "dns", "sleep", "sync", "connect", "wait", "lock", "file", "socket"};

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
