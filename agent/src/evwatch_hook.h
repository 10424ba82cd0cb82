#pragma once
// Loop boundaries from libevent >= 2.2's prepare/check watchers (event2/watch.h), when the
// headers the agent is built against have them. With libevent 2.1 (Debian 12) this compiles to
// a stub that reports "unavailable", and the epoll_wait interposer is used instead.

#include "loop_state.h"

namespace stallwatch::agent::internal {

class EvwatchHook {
 public:
  EvwatchHook() = default;
  ~EvwatchHook();
  EvwatchHook(const EvwatchHook&) = delete;
  EvwatchHook& operator=(const EvwatchHook&) = delete;

  // Called on the loop thread or while the loop is not running. Returns false when watchers are
  // not available in this build.
  bool Start(LoopState* state);
  void Stop();

 private:
  void* prepare_ = nullptr;  // struct evwatch*
  void* check_ = nullptr;
};

}  // namespace stallwatch::agent::internal
