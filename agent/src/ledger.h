#pragma once
// The blocking-call ledger (docs/design.md, "Blocking-call ledger"): calls of known-blocking libc
// functions made on a watched loop's thread, counted and timed by call site (the interposer's
// return address) and call, even far below the stall threshold.
//
// LedgerTable is a fixed table per loop (it lives in LoopState, so also in the mapping a
// watchdog process shares): kLedgerSlots entries keyed by (site, call), open addressing, never
// freed during the loop's life; a pair that finds no free entry is counted in `overflow`.
//
// Threading: written by one thread, the loop's (Record), read by any (LedgerCursor::Take, the
// watchdog), lock-free: a reader sees each field atomically, not an entry at one instant. An
// entry is published by its `site` (release), written last when the entry is claimed.
// LedgerCursor and LedgerRow are plain values of the reading thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace stallwatch::agent::internal {

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

// The calls the ledger knows (the interposers in agent/preload/ledger_hooks.cc).
enum class BlockingCall : uint8_t {
  kGetaddrinfo,
  kGethostbyname,
  kGethostbynameR,
  kGetnameinfo,
  kNanosleep,
  kClockNanosleep,
  kUsleep,
  kSleep,
  kFsync,
  kFdatasync,
  kSyncFileRange,
  kSyncfs,
  kConnect,
  kWaitpid,
  kSystem,
  kPthreadJoin,
  kFlock,
  kCount,  // not a call
};
inline constexpr int kBlockingCallCount = static_cast<int>(BlockingCall::kCount);

// "getaddrinfo", "usleep", …; "" for kCount.
const char* BlockingCallName(BlockingCall c);
// Its family: "dns", "sleep", "sync", "connect", "wait" or "lock".
const char* BlockingCallFamily(BlockingCall c);
// The call named `name` (a call's own name), or kCount.
BlockingCall ParseBlockingCall(std::string_view name);

// Entries per loop: distinct (call site, call) pairs. 128 × 312 bytes = 39 KiB per loop.
inline constexpr int kLedgerSlots = 128;
// Linear probing stops after this many entries: the pair is counted as overflow.
inline constexpr int kLedgerProbe = 16;
// Duration buckets of an entry: two per power of two from 2^kLedgerMinExp ns (256 ns, all
// shorter calls share bucket 0) to 2^36 ns (68.7 s, longer ones share the last).
inline constexpr int kLedgerMinExp = 8;
inline constexpr int kLedgerMaxExp = 36;
inline constexpr int kLedgerBuckets = 2 * (kLedgerMaxExp - kLedgerMinExp) + 2;

// Bucket of a duration. Pure.
inline int LedgerBucket(uint64_t ns) {
  if (ns < (uint64_t{1} << kLedgerMinExp)) {
    return 0;
  }
  const int exp = 63 - __builtin_clzll(ns);
  if (exp >= kLedgerMaxExp) {
    return kLedgerBuckets - 1;
  }
  const int half = static_cast<int>((ns >> (exp - 1)) & 1);  // upper half of the octave
  return 1 + 2 * (exp - kLedgerMinExp) + half;
}
// The value reported for a bucket (its midpoint; its upper bound for the last). Pure.
uint64_t LedgerBucketValue(int bucket);

struct LedgerEntry {
  std::atomic<uint64_t> site{0};  // 0: free
  std::atomic<uint32_t> call{0};
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> total_ns{0};
  std::atomic<uint64_t> window_max_ns{0};  // reset by the reader (exchange)
  std::atomic<uint32_t> buckets[kLedgerBuckets] = {};
};

class LedgerTable {
 public:
  LedgerTable() = default;
  LedgerTable(const LedgerTable&) = delete;
  LedgerTable& operator=(const LedgerTable&) = delete;

  // Called on the loop thread only. No allocation, no syscall, no locked instruction.
  // Async-signal safe.
  void Record(uint64_t site, BlockingCall call, uint64_t ns) {
    LedgerEntry* e = Find(site, call);
    if (e == nullptr) {
      overflow_.store(overflow_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return;
    }
    Bump(e->count, 1);
    Bump(e->total_ns, ns);
    auto& b = e->buckets[LedgerBucket(ns)];
    b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (ns > e->window_max_ns.load(std::memory_order_relaxed)) {
      // As Histogram's window max: a reset racing with a new maximum gives it to the next window.
      e->window_max_ns.store(ns, std::memory_order_relaxed);
    }
  }

  // Calls that found no entry, since the loop was attached. Any thread.
  uint64_t overflow() const { return overflow_.load(std::memory_order_relaxed); }
  const LedgerEntry& entry(int i) const { return entries_[i]; }
  LedgerEntry& entry(int i) { return entries_[i]; }

 private:
  static void Bump(std::atomic<uint64_t>& a, uint64_t n) {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  static uint32_t Key(BlockingCall call) { return static_cast<uint32_t>(call) + 1; }

  LedgerEntry* Find(uint64_t site, BlockingCall call) {
    const uint64_t h = (site ^ (site >> 17) ^ (uint64_t{Key(call)} * 0x9E3779B97F4A7C15ULL)) *
                       0xff51afd7ed558ccdULL;
    for (int i = 0; i < kLedgerProbe; ++i) {
      LedgerEntry& e = entries_[(h + i) % kLedgerSlots];
      const uint64_t at = e.site.load(std::memory_order_relaxed);
      if (at == 0) {
        e.call.store(Key(call), std::memory_order_relaxed);
        e.site.store(site, std::memory_order_release);  // published: the reader may look now
        return &e;
      }
      if (at == site && e.call.load(std::memory_order_relaxed) == Key(call)) {
        return &e;
      }
    }
    return nullptr;
  }

  LedgerEntry entries_[kLedgerSlots];
  std::atomic<uint64_t> overflow_{0};
};

// One (site, call) pair's calls in a window.
struct LedgerRow {
  uint64_t site = 0;
  BlockingCall call = BlockingCall::kCount;
  uint64_t count = 0;
  uint64_t total_ns = 0;
  uint64_t max_ns = 0;
  uint64_t p99_ns = 0;
  std::vector<std::pair<uint32_t, uint64_t>> buckets;  // the window's calls by bucket, non-zero
};

// What a reader has taken from a table so far; Take returns what came since.
class LedgerCursor {
 public:
  LedgerCursor();
  // Called on the reading thread (the watchdog). The pairs with calls since the previous Take,
  // most total time first; *overflow: calls that found no entry since then.
  std::vector<LedgerRow> Take(LedgerTable& table, uint64_t* overflow);

 private:
  struct Seen {
    uint64_t count = 0;
    uint64_t total_ns = 0;
    uint32_t buckets[kLedgerBuckets] = {};
  };
  std::vector<Seen> seen_;
  uint64_t overflow_seen_ = 0;
};

// The loop this thread runs and is now busy in (between two waits), or null: what the
// interposers check first. Set and cleared by the wait hooks (wait_hook.cc) on the loop thread;
// initial-exec TLS, so reading it is one load off the thread pointer (the shim and libstallwatch
// are loaded at start-up). POD: no TLS initialisation wrapper. Async-signal safe.
struct LoopState;
struct LedgerThread {
  LoopState* loop;
  int depth;  // inside an interposed call: a nested one is not counted again
};
extern __thread LedgerThread t_ledger __attribute__((tls_model("initial-exec")));

// STALLWATCH_LEDGER: anything but "off" keeps the ledger on (README). Off, the wait hooks never
// set t_ledger.loop, so every interposer passes straight through after its one TLS check.
// Read once. Thread-safe.
bool LedgerEnabled();

}  // namespace stallwatch::agent::internal
