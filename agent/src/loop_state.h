#pragma once
// State of one attached loop shared between the loop thread (probe callback, wait hook), the
// watchdog (a thread of the host, or stallwatch-watchdog through the shared mapping) and the
// signal handler. Only lock-free atomics are shared; the loop thread is the single writer of the
// histograms and of the boundary stamps.

#include <pthread.h>
#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "ledger.h"
#include "stallwatch/common/histogram.h"

struct event_base;

namespace stallwatch::agent::internal {

static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(std::atomic<void*>::is_always_lock_free);

// One stack sample taken by the signal handler on the loop thread. Preallocated per loop.
inline constexpr size_t kStackCopyBytes = size_t{64} * 1024;
inline constexpr int kDwarfRegs = 17;  // x86_64 DWARF 0..16 (rip = 16)

// `stack` is left uninitialised: the handler writes it before the watchdog reads stack_len bytes.
// NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init)
struct RawSample {
  enum State : int { kIdle = 0, kRequested = 1, kWriting = 2, kReady = 3, kFailed = 4 };
  std::atomic<int> state{kIdle};
  pid_t tid = 0;  // the thread that must take it
  uint64_t regs[kDwarfRegs] = {};
  uint64_t stack_base = 0;  // address of stack[0] in the thread's stack
  size_t stack_len = 0;
  alignas(16) unsigned char stack[kStackCopyBytes];
};

// Lives in the host's memory, or, when the watchdog runs in a process of its own, in a mapping
// shared with it: no pointer in here is followed by the watchdog (docs/design.md).
struct LoopState {
  // What the loop is (immutable after attach).
  enum Kind : int { kLibevent = 0, kEpoll = 1 };
  // Immutable after attach.
  Kind kind = kLibevent;
  event_base* base = nullptr;  // kLibevent only
  char runtime[16] = {};       // what runs the loop, where it can be told ("python", …), or ""

  int64_t threshold_ns = 0;
  int64_t interval_ns = 0;

  // Loop thread identity: written once on the loop thread (probe or wait hook).
  std::atomic<pid_t> tid{0};
  pthread_t thread{};
  clockid_t cpu_clock{};
  std::atomic<bool> cpu_clock_ok{false};

  // Loop boundaries (wait hook and dispatch hook, loop thread only).
  std::atomic<int> epfd{-1};
  std::atomic<bool> boundaries_seen{false};
  bool boundaries_evwatch = false;           // "evwatch" rather than "epoll_wait"; set at attach
  std::atomic<bool> dispatch_hooked{false};  // the dispatch wrapper saw this base
  std::atomic<bool> in_dispatch{false};
  std::atomic<int64_t> dispatch_entered_ns{0};
  std::atomic<int64_t> busy_since_ns{0};  // 0 while waiting for events (or outside dispatch)
  std::atomic<int64_t> busy_total_ns{0};  // sum of completed busy periods
  std::atomic<uint64_t> iterations{0};
  // Ring of the last kLongRing busy periods >= threshold, so the watchdog learns their exact
  // ends even when it looks late (starved, or stopped with the process). long_seq counts the
  // periods written; a slot is complete once long_seq covers it (release/acquire).
  static constexpr int kLongRing = 8;
  struct LongPeriod {
    std::atomic<int64_t> start_ns{0};
    std::atomic<int64_t> end_ns{0};
  };
  LongPeriod long_ring[kLongRing];
  std::atomic<uint64_t> long_seq{0};
  Histogram iteration_hist;

  // Probe (loop thread only).
  Histogram delay_hist;
  std::atomic<int64_t> probe_due_ns{0};  // scheduled time of the oldest tick not yet serviced
  std::atomic<int64_t> probe_last_run_ns{0};
  std::atomic<uint64_t> probe_runs{0};
  std::atomic<int64_t> probe_busy_est_ns{0};  // sum of min(delay, interval): probe-only estimate

  // kEpoll loops (epoll_loop.h). The probe's timerfd sits in the host's own epoll set under
  // probe_key (probe_inline), or, where that set is shared with other waiters, in an epoll fd of
  // the agent's (wait_fd) that holds the host's epoll fd beside it. probe_shared: another thread
  // waits on the host's set, or the loop missed kMissesToMoveOut ticks in a row (a forked
  // process waits on it): the loop thread moves the probe to wait_fd at its next wait. Whether
  // the host closed its epoll fd (the loop ended) or one of the agent's fds (the probe is lost:
  // busy periods only). Set on the loop thread, or by close() on any thread.
  std::atomic<int> wait_fd{-1};
  std::atomic<int> probe_fd{-1};
  uint64_t probe_key = 0;  // immutable once the probe started
  std::atomic<bool> probe_inline{false};
  std::atomic<bool> probe_shared{false};
  int probe_misses = 0;  // loop thread only
  std::atomic<bool> closed{false};
  std::atomic<bool> probe_lost{false};
  // A discovered loop's thread no longer refers to this state (it saw the loop closed, or it
  // ended): only then may the loop be detached and this state freed (epoll_loop.cc).
  std::atomic<bool> released{false};
  // A Python loop (runtime "python"): its thread's PyThreadState, taken on the loop thread in its
  // wait (PyGILState_GetThisThreadState reads thread-local storage; the GIL is not held there),
  // for the watchdog's Python frames (python_frames.h); 0 when none. py_checked: loop thread only.
  std::atomic<uint64_t> py_tstate{0};
  bool py_checked = false;

  // Watchdog process only: an epoll fd it found for a loop whose fd attach could not bind; the
  // probe binds it on the loop thread.
  std::atomic<int> pending_epfd{-1};
  // Watchdog process only: the sampling signal (0: none), and whether the probe found another
  // handler than the agent's installed for it (the watchdog then never sends it).
  std::atomic<int> sample_signo{0};
  std::atomic<bool> handler_lost{false};

  // Blocking calls made on the loop thread between its waits (ledger.h): loop thread writes,
  // the watchdog reads.
  LedgerTable ledger;

  // Stack sampling.
  RawSample sample;
};

inline const char* KindName(const LoopState& s) {
  return s.kind == LoopState::kEpoll ? "epoll" : "libevent";
}

inline const char* BoundarySource(const LoopState& s) {
  if (!s.boundaries_seen.load(std::memory_order_acquire)) {
    return "probe";
  }
  return s.boundaries_evwatch ? "evwatch" : "epoll_wait";
}

// Called on the loop thread: records tid/pthread/cpu clock the first time.
void EnsureLoopThread(LoopState* s);

// Called on the loop thread when it goes back to wait for events (or leaves dispatch): the busy
// period that started at busy_since_ns ends at `now`. No allocation, no syscall.
inline void EndBusyPeriod(LoopState* s, int64_t now) {
  const int64_t since = s->busy_since_ns.load(std::memory_order_relaxed);
  if (since > 0) {
    const int64_t d = now - since;
    s->iteration_hist.Record(static_cast<uint64_t>(d > 0 ? d : 0));
    s->busy_total_ns.store(s->busy_total_ns.load(std::memory_order_relaxed) + d,
                           std::memory_order_relaxed);
    if (d >= s->threshold_ns) {
      const uint64_t seq = s->long_seq.load(std::memory_order_relaxed);
      auto& slot = s->long_ring[seq % LoopState::kLongRing];
      slot.start_ns.store(since, std::memory_order_relaxed);
      slot.end_ns.store(now, std::memory_order_relaxed);
      s->long_seq.store(seq + 1, std::memory_order_release);
    }
  }
  s->busy_since_ns.store(0, std::memory_order_release);
  s->iterations.store(s->iterations.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace stallwatch::agent::internal
