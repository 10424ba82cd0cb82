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
#include <cstdlib>
#include <cstring>
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
  kOpen,
  kOpenat,
  kRead,
  kWrite,
  kPread,
  kPwrite,
  kReadv,
  kWritev,
  kAccept,
  kAccept4,
  kRecv,
  kRecvfrom,
  kRecvmsg,
  kSend,
  kSendto,
  kSendmsg,
  kReadBlocking,
  kWriteBlocking,
  kReadvBlocking,
  kWritevBlocking,
  kPopen,
  kPclose,
  kFcntl,
  kPthreadMutexLock,
  kCount,  // not a call
};
inline constexpr int kBlockingCallCount = static_cast<int>(BlockingCall::kCount);

// "getaddrinfo", "usleep", …; "" for kCount.
const char* BlockingCallName(BlockingCall c);
// Its family: "dns", "sleep", "sync", "connect", "wait", "lock", "file" or "socket".
const char* BlockingCallFamily(BlockingCall c);
// The call named `name` (a call's own name), or kCount.
BlockingCall ParseBlockingCall(std::string_view name);

// Entries per loop: distinct (call site, call) pairs. 128 × 328 bytes = 41 KiB per loop.
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
  // 0: free. The caller's return address; for a Python caller (py_code != 0) the address of the
  // caller's instruction (_PyInterpreterFrame.prev_instr, inside its code object).
  std::atomic<uint64_t> site{0};
  std::atomic<uint32_t> call{0};
  std::atomic<uint64_t> py_code{0};  // the Python caller's code object, or 0: a native site
  std::atomic<uint64_t> native{0};   // with py_code: the return address into the interpreter
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
  // Async-signal safe. `py_code` and `native`: see LedgerEntry (kept from the first call).
  void Record(uint64_t site, BlockingCall call, uint64_t ns, uint64_t py_code = 0,
              uint64_t native = 0) {
    LedgerEntry* e = Find(site, call, py_code, native);
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

  LedgerEntry* Find(uint64_t site, BlockingCall call, uint64_t py_code, uint64_t native) {
    const uint64_t h = (site ^ (site >> 17) ^ (uint64_t{Key(call)} * 0x9E3779B97F4A7C15ULL)) *
                       0xff51afd7ed558ccdULL;
    for (int i = 0; i < kLedgerProbe; ++i) {
      LedgerEntry& e = entries_[(h + i) % kLedgerSlots];
      const uint64_t at = e.site.load(std::memory_order_relaxed);
      if (at == 0) {
        e.call.store(Key(call), std::memory_order_relaxed);
        e.py_code.store(py_code, std::memory_order_relaxed);
        e.native.store(native, std::memory_order_relaxed);
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
  uint64_t py_code = 0;  // LedgerEntry's
  uint64_t native = 0;
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

// What the ledger knows of a descriptor: whether a read or write on it may wait for the disk or
// for a peer. Classified once per descriptor by the loop thread that first uses it (fcntl
// F_GETFL and fstat), cached in FdModeCache.
enum class FdMode : uint8_t {
  kUnknown = 0,         // not classified (or forgotten since)
  kFile = 1,            // regular file or block device: disk I/O whatever O_NONBLOCK says
  kBlockingStream = 2,  // socket, pipe or FIFO without O_NONBLOCK: waits for its peer
  kNotCounted = 3,      // the same with O_NONBLOCK; character devices (ttys, /dev/null);
                        // eventfd, timerfd, signalfd, epoll and other anonymous inodes; dirs
};

// The mode of a descriptor from fstat's st_mode and fcntl(F_GETFL)'s flags. Pure.
FdMode ClassifyFd(uint32_t st_mode, int status_flags);

// Descriptors below this are cached (one byte each: 64 KiB); the ledger does not count calls on
// higher ones (docs/design.md "Blocking-call ledger").
inline constexpr int kFdModeFds = 1 << 16;

// The mode of every descriptor of the process below kFdModeFds, process-wide (descriptors are).
// An entry is 2 bits of mode and 6 bits of generation: Forget bumps the generation, so a
// classification that raced with a close, dup2 or fcntl(F_SETFL) of the same descriptor fails to
// store (Put compares the whole byte) instead of caching the old descriptor's mode.
//
// Threading: Get and Put are called on loop threads, Forget on any thread (after the real call
// that closed, replaced, created or changed the descriptor), also in signal handlers: relaxed
// byte loads and stores and one compare-exchange, no locked instruction on the Forget path.
// Async-signal safe.
class FdModeCache {
 public:
  // The cached mode, kUnknown if none; *token: what Put must be given.
  FdMode Get(int fd, uint8_t* token) const {
    const uint8_t e = entries_[fd].load(std::memory_order_relaxed);
    *token = e;
    return static_cast<FdMode>(e & kModeMask);
  }
  // Caches `mode` unless the entry changed since Get returned `token`. False if it did.
  bool Put(int fd, uint8_t token, FdMode mode) {
    uint8_t expected = token;
    const auto next = static_cast<uint8_t>((token & ~kModeMask) | static_cast<uint8_t>(mode));
    return entries_[fd].compare_exchange_strong(expected, next, std::memory_order_relaxed);
  }
  // The descriptor is not what it was: its mode is unknown again. A plain load and store: two
  // racing Forgets may bump the generation once, which still fails a racing Put.
  void Forget(int fd) {
    if (fd < 0 || fd >= kFdModeFds) {
      return;
    }
    const uint8_t e = entries_[fd].load(std::memory_order_relaxed);
    entries_[fd].store(static_cast<uint8_t>((e | kModeMask) + 1), std::memory_order_relaxed);
  }

 private:
  static constexpr uint8_t kModeMask = 3;
  std::atomic<uint8_t> entries_[kFdModeFds] = {};
};
static_assert(std::atomic<uint8_t>::is_always_lock_free);

// The process's cache (ledger.cc).
extern FdModeCache g_fd_modes;

// The mode of `fd` for a call on a loop thread: cached, else classified now with two raw system
// calls (fcntl, fstat; errno kept) and cached. kNotCounted for a descriptor that is not open or
// is at or above kFdModeFds. Called on a loop thread. Async-signal safe.
// `token`: what Get returned with kUnknown.
FdMode ClassifyFdSlow(int fd, uint8_t token);
inline FdMode LedgerFdMode(int fd) {
  if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kFdModeFds)) {
    return FdMode::kNotCounted;
  }
  uint8_t token = 0;
  const FdMode m = g_fd_modes.Get(fd, &token);
  return __builtin_expect(m != FdMode::kUnknown, 1) ? m : ClassifyFdSlow(fd, token);
}

// A Python loop's caller, read on the loop thread when a call is recorded: the interpreter's
// current frame's code object and instruction (PyThreadState.cframe->current_frame->{f_code,
// prev_instr}), four loads of the thread's own interpreter state, no symbolization (the
// watchdog does that with fault-safe reads, PythonFrameReader::Locate). Set once, by the first
// Python loop's thread (NotePythonThread in epoll_loop.cc), only for CPython 3.11 (offsets of
// python_frames.h's kPy311Layout, checked in ledger.cc); read by loop threads.
using PyThreadStateFn = void* (*)();
struct PyCallerSource {
  std::atomic<uint64_t> text_lo{0};     // the interpreter's executable code: a site in
  std::atomic<uint64_t> text_hi{0};     // [text_lo, text_hi) is the interpreter's own
  std::atomic<uint64_t> finalizing{0};  // &_PyRuntime._finalizing: thread states die after it
  // PyGILState_GetThisThreadState: the calling thread's state, null once it is being deleted
  // (CPython clears it before freeing the state).
  std::atomic<PyThreadStateFn> get_tstate{nullptr};
};
extern PyCallerSource g_py_caller;

inline constexpr uint64_t kPyTstateCframe = 56;
inline constexpr uint64_t kPyCframeCurrentFrame = 8;
inline constexpr uint64_t kPyFrameCode = 32;
inline constexpr uint64_t kPyFramePrevInstr = 56;

// Whether `site` (a return address) is the interpreter's and the thread at `tstate` (the
// calling thread's own PyThreadState, LoopState::py_tstate) is in a Python frame; then *code
// and *instr. The thread's own state is not changing under it (this thread is in a C call of the
// interpreter); it is read only while it is still the thread's (PyGILState_GetThisThreadState,
// cleared before CPython frees it) and the runtime is not finalizing. Called on the loop thread.
// Async-signal safe (pthread_getspecific).
inline bool CurrentPythonCaller(uint64_t tstate, uint64_t site, uint64_t* code, uint64_t* instr) {
  const uint64_t lo = g_py_caller.text_lo.load(std::memory_order_acquire);
  if (tstate == 0 || lo == 0 || site < lo ||
      site >= g_py_caller.text_hi.load(std::memory_order_relaxed)) {
    return false;
  }
  // NOLINTNEXTLINE(performance-no-int-to-ptr): &_PyRuntime._finalizing, found by dlsym
  const auto* finalizing = reinterpret_cast<const std::atomic<uint64_t>*>(
      g_py_caller.finalizing.load(std::memory_order_relaxed));
  const PyThreadStateFn get = g_py_caller.get_tstate.load(std::memory_order_relaxed);
  if (finalizing == nullptr || finalizing->load(std::memory_order_relaxed) != 0 || get == nullptr ||
      reinterpret_cast<uint64_t>(get()) != tstate) {
    return false;
  }
  // The thread's own interpreter state, at the addresses CPython keeps in it.
  const auto load = [](uint64_t addr) {
    // NOLINTNEXTLINE(performance-no-int-to-ptr)
    return *reinterpret_cast<const uint64_t*>(addr);
  };
  const uint64_t cframe = load(tstate + kPyTstateCframe);
  const uint64_t frame = cframe != 0 ? load(cframe + kPyCframeCurrentFrame) : 0;
  if (frame == 0) {
    return false;
  }
  *code = load(frame + kPyFrameCode);
  *instr = load(frame + kPyFramePrevInstr);
  return *code != 0 && *instr != 0;
}

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
// Read once; inline, as every wait asks (one guard load after the first). Thread-safe.
inline bool LedgerEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("STALLWATCH_LEDGER");
    return v == nullptr || std::strcmp(v, "off") != 0;
  }();
  return enabled;
}

}  // namespace stallwatch::agent::internal
