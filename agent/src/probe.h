#pragma once
// The delay probe: a CLOCK_MONOTONIC timerfd registered on the host's event_base as an internal
// read event (it never keeps an otherwise idle loop alive). Each callback records the lateness
// of every tick that expired since the previous one (actual - scheduled), so ticks missed
// during a long stall are all accounted for.

#include <event2/event.h>

#include "loop_state.h"
#include "stallwatch/status.h"

namespace stallwatch::agent::internal {

// Arms `tfd` (a CLOCK_MONOTONIC timerfd) to expire every state->interval_ns from one interval
// from now, and sets state->probe_due_ns to the first expiry.
[[nodiscard]] Status ArmProbeTimer(int tfd, LoopState* state);

// Called on the loop thread when the probe's timerfd said `expirations` ticks expired, at `now`
// (CLOCK_MONOTONIC): records the lateness of each. The libevent probe and the epoll loops'
// probe (epoll_loop.h) share it. No allocation; one syscall at most (the binding of a found fd).
void OnProbeExpired(LoopState* s, uint64_t expirations, int64_t now) noexcept;
// The same ticks when their lateness is unknown (an epoll loop's tick taken by another waiter
// of its set while the loop was idle): the next tick is due later, nothing is recorded.
void SkipProbeTicks(LoopState* s, uint64_t expirations) noexcept;

class Probe {
 public:
  Probe() = default;
  ~Probe();
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // Called on the loop thread, or any thread while the loop is not running.
  [[nodiscard]] Status Start(LoopState* state);
  // Same threading as Start. Idempotent.
  void Stop();
  int timer_fd() const { return tfd_; }

 private:
  // Called on the loop thread.
  static void OnTick(evutil_socket_t fd, short what, void* arg) noexcept;

  LoopState* state_ = nullptr;
  int tfd_ = -1;
  event* ev_ = nullptr;
};

}  // namespace stallwatch::agent::internal
