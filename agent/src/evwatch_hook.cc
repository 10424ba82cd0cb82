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
  EndBusyPeriod(s, MonotonicNanos());
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
  state->boundaries_evwatch = true;
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
