#pragma once
// The process-wide part of the agent: the sampling signal handler and one watchdog for all
// attached loops (a thread of this process, or stallwatch-watchdog: watchdog/backend.h).
// Created with the first attached loop, destroyed (watchdog stopped, signal disposition
// restored) with the last.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "platform/signal_sampler.h"
#include "stallwatch/agent.h"
#include "watchdog/backend.h"
#include "watchdog/loop_context.h"
#include "watchdog_process.h"

namespace stallwatch::internal {

class Runtime {
 public:
  // Returns the process's runtime, creating it (with `options`' process-wide settings) if none.
  static StatusOr<std::shared_ptr<Runtime>> Acquire(const Options& options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Any thread (Agent::Attach), after the loop's probe started.
  void Add(const std::shared_ptr<LoopContext>& ctx) { watchdog_->Add(ctx); }
  // Any thread. Closes an ongoing stall and emits the last delay window of the loop.
  void Remove(LoopContext* ctx);
  // Any thread, loop threads included: never waits for the watchdog's sampling or unwinding.
  std::string sampling_status() const { return watchdog_->sampling_status(); }
  // Findings the reporter of this process dropped so far (0 with a watchdog process: its
  // reporter counts them). Any thread.
  uint64_t findings_dropped() const { return watchdog_->findings_dropped(); }
  // Host of a watchdog process (nullptr: the watchdog is a thread here).
  WatchdogProcess* watchdog_process() const { return watchdog_->process(); }
  // Any thread: brings the loop's published snapshot (name, recent and ongoing stalls, last
  // window) up to date (from the watchdog process's region; nothing to do for the thread).
  void PullSnapshot(LoopContext& c) const { watchdog_->PullSnapshot(c); }
  // At the process's exit (an atexit handler, registered with the first runtime): the loops'
  // stalls and windows so far reach the endpoint, within `timeout`. Nothing in a forked child.
  void FlushForExit(std::chrono::milliseconds timeout);
  // In a child after fork(): the watchdog and reporter threads do not exist there and the locks
  // may be held forever, so this runtime is abandoned (never destroyed, never locked).
  void MarkForkedChild() { forked_child_.store(true); }
  bool forked_child() const { return forked_child_.load(); }
  const std::string& service() const { return service_; }
  // Test seam: see Watchdog::SetLookHookForTest.
  void SetLookHookForTest(const std::function<void()>& hook) {
    watchdog_->SetLookHookForTest(hook);
  }

 private:
  Runtime() = default;

  std::string service_;
  agent::platform::SignalSampler sampler_;
  std::unique_ptr<WatchdogBackend> watchdog_;
  std::atomic<bool> forked_child_{false};
};

}  // namespace stallwatch::internal
