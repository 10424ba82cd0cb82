#pragma once
// The host's handle on its watchdog, wherever it runs: a thread of the host (ThreadWatchdog,
// watchdog_thread.h) or stallwatch-watchdog (WatchdogProcess, watchdog_process.h). The runtime
// makes one with StartWatchdog (runtime.cc), which falls back from the process to the thread and
// logs why.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "watchdog/loop_context.h"

namespace stallwatch::internal {

class WatchdogProcess;

class WatchdogBackend {
 public:
  virtual ~WatchdogBackend() = default;

  // Any thread (Agent::Attach). Hands the attached loop (probe started) to the watchdog.
  virtual void Add(const std::shared_ptr<LoopContext>& ctx) = 0;
  // Any thread (Agent's destructor). Closes an ongoing stall and emits the loop's last delay
  // window; the loop's hooks have run for all of them when it returns.
  virtual void Remove(LoopContext* ctx) = 0;
  // Any thread, at the process's exit (runtime.cc): the loops' stalls and windows so far go to
  // the endpoint, waiting at most `timeout` while it takes them. A watchdog process does this
  // by itself when its host is gone: nothing to do here.
  virtual void FlushForExit(std::chrono::milliseconds /*timeout*/) {}
  // Any thread, never waiting for the watchdog's sampling: "ok" or why stacks are unavailable.
  virtual std::string sampling_status() const = 0;
  // Any thread: findings this process's reporter dropped (0 with a watchdog process: its
  // reporter counts them, and its windows say so).
  virtual uint64_t findings_dropped() const = 0;
  // Any thread: brings `c.snapshot` up to date (a watchdog process publishes it in the region;
  // the watchdog thread writes it directly).
  virtual void PullSnapshot(LoopContext& c) const = 0;
  // The watchdog process, or nullptr for the thread.
  virtual WatchdogProcess* process() { return nullptr; }
  // See Watchdog::SetLookHookForTest (the watchdog thread only; ignored by the process).
  virtual void SetLookHookForTest(const std::function<void()>& /*hook*/) {}
};

}  // namespace stallwatch::internal
