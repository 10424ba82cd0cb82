// libstallwatch_preload.so: LD_PRELOAD it into an unmodified libevent program and every event_base
// the program creates gets an agent, configured by the STALLWATCH_* environment. The loop is
// named after the thread that runs it (the base may be created on another thread).
//
// Interposed: event_base_new, event_base_new_with_config, event_init (creation → attach);
// event_base_free, event_base_free_nofinalize (→ detach first). The agent's own interposers of
// epoll_wait and the dispatch entry points come with the agent objects linked into this library.
// Loops that are not libevent's are found by how they wait: loading the shim turns discovery on
// (src/epoll_loop.h). A program that never waits on an epoll fd twice gets no agent at all.
#include <dlfcn.h>
#include <event2/event.h>

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>

#include "epoll_loop.h"
#include "stallwatch/agent.h"
#include "wait_hook.h"

namespace {

using NewFn = event_base* (*)();
using NewWithConfigFn = event_base* (*)(const event_config*);
using FreeFn = void (*)(event_base*);

template <typename Fn>
Fn Next(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

std::mutex& Mu() {
  static auto* mu = new std::mutex();  // never destroyed: used until the process ends
  return *mu;
}

std::map<event_base*, std::unique_ptr<stallwatch::Agent>>& Agents() {
  static auto* agents = new std::map<event_base*, std::unique_ptr<stallwatch::Agent>>();
  return *agents;
}

// Creation functions call one another (event_init → event_base_new → ..._with_config): only the
// outermost call attaches.
thread_local int g_depth = 0;

void AttachTo(event_base* base) noexcept {
  if (base == nullptr) {
    return;
  }
  try {
    stallwatch::Options o = stallwatch::Options::FromEnvironment();
    o.loop_name_from_thread = true;
    auto agent = stallwatch::Agent::Attach(base, std::move(o));
    if (!agent.ok()) {
      std::fprintf(stderr, "stallwatch: not watching an event_base: %s\n",
                   agent.status().ToString().c_str());
      return;
    }
    std::lock_guard<std::mutex> lock(Mu());
    Agents()[base] = std::move(*agent);
  } catch (...) {
    // The host keeps its loop either way.
  }
}

void DetachFrom(event_base* base) noexcept {
  std::unique_ptr<stallwatch::Agent> agent;
  {
    std::lock_guard<std::mutex> lock(Mu());
    auto it = Agents().find(base);
    if (it == Agents().end()) {
      return;
    }
    agent = std::move(it->second);
    Agents().erase(it);
  }
  try {
    agent.reset();
  } catch (...) {
  }
}

template <typename Create>
event_base* Created(Create create) {
  ++g_depth;
  event_base* base = create();
  if (--g_depth == 0) {
    AttachTo(base);
  }
  return base;
}

// A forked child that runs a base its parent created (daemonizing servers) attaches it again,
// under its own pid, at its first dispatch (wait_hook.h).
__attribute__((constructor)) void TurnDiscoveryOn() {
  stallwatch::agent::internal::EnableEpollDiscovery();
  stallwatch::agent::internal::SetReattachHook(&AttachTo);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) event_base* event_base_new(void) {
  static NewFn real = Next<NewFn>("event_base_new");
  return real ? Created([] { return real(); }) : nullptr;
}

__attribute__((visibility("default"))) event_base* event_base_new_with_config(
    const event_config* cfg) {
  static NewWithConfigFn real = Next<NewWithConfigFn>("event_base_new_with_config");
  return real ? Created([cfg] { return real(cfg); }) : nullptr;
}

__attribute__((visibility("default"))) event_base* event_init(void) {
  static NewFn real = Next<NewFn>("event_init");
  return real ? Created([] { return real(); }) : nullptr;
}

__attribute__((visibility("default"))) void event_base_free(event_base* base) {
  static FreeFn real = Next<FreeFn>("event_base_free");
  DetachFrom(base);
  if (real) {
    real(base);
  }
}

__attribute__((visibility("default"))) void event_base_free_nofinalize(event_base* base) {
  static FreeFn real = Next<FreeFn>("event_base_free_nofinalize");
  DetachFrom(base);
  if (real) {
    real(base);
  }
}

}  // extern "C"
