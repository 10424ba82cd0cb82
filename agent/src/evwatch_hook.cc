#include "evwatch_hook.h"

#include <event2/event.h>

#if defined(LIBEVENT_VERSION_NUMBER) && LIBEVENT_VERSION_NUMBER >= 0x02020000
#include <event2/watch.h>

#include "stallwatch/common/clock.h"
#define SW_HAVE_EVWATCH 1
#endif

namespace stallwatch::agent::internal {

#ifdef SW_HAVE_EVWATCH
namespace {

// Called on the loop thread before it waits for events: the busy period ends.
void OnPrepare(evwatch*, const evwatch_prepare_cb_info*, void* arg) {
  auto* s = static_cast<LoopState*>(arg);
  EnsureLoopThread(s);
  const int64_t now = MonotonicNanos();
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
  s->boundaries_seen.store(true, std::memory_order_release);
}

// Called on the loop thread after it waited: a busy period starts.
void OnCheck(evwatch*, const evwatch_check_cb_info*, void* arg) {
  auto* s = static_cast<LoopState*>(arg);
  s->busy_since_ns.store(MonotonicNanos(), std::memory_order_release);
}

}  // namespace

bool EvwatchHook::Start(LoopState* state) {
  prepare_ = evwatch_prepare_new(state->base, OnPrepare, state);
  check_ = evwatch_check_new(state->base, OnCheck, state);
  if (prepare_ == nullptr || check_ == nullptr) {
    Stop();
    return false;
  }
  state->boundary_source = "evwatch";
  return true;
}

void EvwatchHook::Stop() {
  if (prepare_ != nullptr) evwatch_free(static_cast<evwatch*>(prepare_));
  if (check_ != nullptr) evwatch_free(static_cast<evwatch*>(check_));
  prepare_ = check_ = nullptr;
}
#else
bool EvwatchHook::Start(LoopState*) { return false; }
void EvwatchHook::Stop() {}
#endif

EvwatchHook::~EvwatchHook() { Stop(); }

}  // namespace stallwatch::agent::internal
