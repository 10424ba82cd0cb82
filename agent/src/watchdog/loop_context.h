#pragma once
// One attached loop as its host sees it: the attach options, the loop's shared state, the
// loop-thread objects (probe, evwatch), where its watchdog process slot is, and the snapshot
// the watchdog publishes. The watchdog's own per-loop state is in the engine (engine.h).

#include <memory>
#include <string>

#include "epoll_loop.h"
#include "evwatch_hook.h"
#include "loop_state.h"
#include "probe.h"
#include "stallwatch/agent.h"
#include "watchdog/published_snapshot.h"

namespace stallwatch::internal {

class Runtime;
struct RegionSlot;

// How the loop's boundaries reach the watchdog, as far as its epoll fd is concerned.
enum class EpfdBinding {
  kSearch,  // bound at attach, or, if not, searched for by the watchdog a few times
  kNone,    // boundaries from evwatch, or a backend other than epoll: no epoll fd to bind
};

class LoopContext {
 public:
  // `shared`: the loop's state in the watchdog process's mapping; nullptr: owned here.
  explicit LoopContext(agent::internal::LoopState* shared = nullptr)
      : owned_state(shared ? nullptr : new agent::internal::LoopState()),
        state(shared ? *shared : *owned_state) {}
  LoopContext(const LoopContext&) = delete;
  LoopContext& operator=(const LoopContext&) = delete;

  // Set before the loop is handed to the watchdog, constant afterwards.
  Options options;
  std::string service;
  std::unique_ptr<agent::internal::LoopState> owned_state;
  agent::internal::LoopState& state;
  int slot = -1;                 // host: the loop's slot in the watchdog process's mapping
  RegionSlot* served = nullptr;  // watchdog process: the host's slot this context serves
  EpfdBinding epfd_binding = EpfdBinding::kSearch;
  // Loop thread (started and stopped by Agent).
  agent::internal::Probe probe;  // libevent loops
  agent::internal::EvwatchHook evwatch;
  agent::internal::EpollProbe epoll_probe;  // epoll loops
  // Host: the process's runtime (nullptr in the watchdog process).
  std::shared_ptr<Runtime> runtime;

  agent::internal::PublishedSnapshot snapshot;
};

}  // namespace stallwatch::internal
