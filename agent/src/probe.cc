#include "probe.h"

#include <event2/event_struct.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "libevent_weak.h"
#include "platform/signal_sampler.h"
#include "stallwatch/common/clock.h"
#include "wait_hook.h"

namespace stallwatch::agent::internal {

Probe::~Probe() { Stop(); }

Status Probe::Start(LoopState* state) {
  state_ = state;
  tfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd_ < 0) {
    return UnavailableError(std::string("timerfd_create: ") + std::strerror(errno));
  }
  ev_ = event_new(state->base, tfd_, EV_READ | EV_PERSIST, &Probe::OnTick, this);
  if (ev_ == nullptr) {
    Stop();
    return UnavailableError("event_new failed for the probe");
  }
  // EVLIST_INTERNAL: libevent does not count the event when deciding whether the loop has
  // anything left to do, so event_base_dispatch() still returns when the host's events are gone.
  ev_->ev_evcallback.evcb_flags |= EVLIST_INTERNAL;
  // Highest priority: a probe queued behind a long batch of callbacks would measure the batch.
  event_priority_set(ev_, 0);
  if (event_add(ev_, nullptr) != 0) {
    Stop();
    return UnavailableError("event_add failed for the probe");
  }
  if (Status st = ArmProbeTimer(tfd_, state); !st.ok()) {
    Stop();
    return st;
  }
  return OkStatus();
}

void Probe::Stop() {
  if (ev_ != nullptr) {
    event_del(ev_);
    event_free(ev_);
    ev_ = nullptr;
  }
  if (tfd_ >= 0) {
    ::close(tfd_);
    tfd_ = -1;
  }
}

void Probe::OnTick(evutil_socket_t fd, short /*what*/, void* arg) noexcept {
  auto* self = static_cast<Probe*>(arg);
  uint64_t expirations = 0;
  if (::read(fd, &expirations, sizeof(expirations)) != sizeof(expirations) || expirations == 0) {
    return;
  }
  OnProbeExpired(self->state_, expirations, MonotonicNanos());
}

Status ArmProbeTimer(int tfd, LoopState* state) {
  const int64_t first = MonotonicNanos() + state->interval_ns;
  itimerspec its{};
  its.it_value.tv_sec = first / 1'000'000'000;
  its.it_value.tv_nsec = first % 1'000'000'000;
  its.it_interval.tv_sec = state->interval_ns / 1'000'000'000;
  its.it_interval.tv_nsec = state->interval_ns % 1'000'000'000;
  state->probe_due_ns.store(first, std::memory_order_release);
  if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, nullptr) != 0) {
    return UnavailableError(std::string("timerfd_settime: ") + std::strerror(errno));
  }
  return OkStatus();
}

void SkipProbeTicks(LoopState* s, uint64_t expirations) noexcept {
  const int64_t due = s->probe_due_ns.load(std::memory_order_relaxed);
  s->probe_due_ns.store(due + static_cast<int64_t>(expirations) * s->interval_ns,
                        std::memory_order_release);
}

void OnProbeExpired(LoopState* s, uint64_t expirations, int64_t now) noexcept {
  EnsureLoopThread(s);
  const int64_t period = s->interval_ns;
  int64_t due = s->probe_due_ns.load(std::memory_order_relaxed);
  // Ticks that expired while the loop was outside dispatch are not the loop's lateness.
  const int64_t entered = s->dispatch_entered_ns.load(std::memory_order_relaxed);
  int64_t busy_est = 0;
  // Bound the work of one callback after an extreme pause (1e5 ticks ≈ 1000 s at 10 ms);
  // the remaining ticks are folded into the last recorded value's bucket.
  constexpr uint64_t kMaxRecords = 100000;
  const uint64_t records = expirations < kMaxRecords ? expirations : kMaxRecords;
  for (uint64_t k = 0; k < records; ++k) {
    const int64_t scheduled = due + static_cast<int64_t>(k) * period;
    if (scheduled < entered) {
      continue;
    }
    const int64_t late = now > scheduled ? now - scheduled : 0;
    const uint64_t n = (k + 1 == records) ? expirations - records + 1 : 1;
    s->delay_hist.Record(static_cast<uint64_t>(late), n);
    busy_est += late < period ? late : period;
  }
  due += static_cast<int64_t>(expirations) * period;
  s->probe_due_ns.store(due, std::memory_order_release);
  s->probe_busy_est_ns.store(s->probe_busy_est_ns.load(std::memory_order_relaxed) + busy_est,
                             std::memory_order_relaxed);
  s->probe_last_run_ns.store(now, std::memory_order_relaxed);
  s->probe_runs.store(s->probe_runs.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  // With the watchdog in a process of its own, the loop thread keeps two things for it: whether
  // the sampling handler is still the agent's (never signal into the host's handler), and the
  // binding of an epoll fd the watchdog found.
  if (const int signo = s->sample_signo.load(std::memory_order_relaxed);
      signo > 0 && !s->handler_lost.load(std::memory_order_relaxed) &&
      !platform::SamplingHandlerInstalled(signo)) {
    s->handler_lost.store(true, std::memory_order_release);
  }
  if (s->epfd.load(std::memory_order_relaxed) < 0) {
    if (const int epfd = s->pending_epfd.load(std::memory_order_relaxed); epfd >= 0) {
      try {
        BindEpollFd(s, epfd);
      } catch (...) {
      }
    }
  }
}

}  // namespace stallwatch::agent::internal
