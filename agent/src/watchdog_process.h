#pragma once
// The watchdog in a process of its own (docs/design.md, "Watchdog process").
//
// Any thread makes a program multi-threaded for good: glibc leaves its single-threaded fast
// paths (malloc without arena locks, syscalls without cancellation bookkeeping, unlocked stdio)
// and a single-threaded evhttp server pays ~1 % more CPU per request for it. So for a program
// that has never had a second thread when the agent attaches (and sets no hooks), the watchdog,
// the reporter and the unwinder run in `stallwatch-watchdog`, a small executable started with
// clone(CLONE_VM | CLONE_VFORK) + execve (no copy of the host's address space, no SIGCHLD: the
// host's wait() never sees it). Host and watchdog share one memfd mapping: the loops' state
// (written by the loop thread exactly as in-process), per-loop configuration, and what the
// watchdog publishes back (snapshots, sampling status). The watchdog reads the host's threads
// through /proc/PID, signals them with tgkill for stacks (the handler stays in the host), and
// exits when the host asks it to or when the host is gone (pidfd).
//
// The shared region's layout is in watchdog/region.h; stallwatch-watchdog's main() in
// watchdog_main.cc runs the same engine (watchdog/engine.h) as the watchdog thread.
//
// Threading (host side): AllocateSlot and ReleaseSlot may be called on any thread (they take the
// object's own lock). A slot's Add (Activate) and Remove (Detach) are called by the thread that
// attaches or detaches that loop, and never concurrently for one slot. Snapshots and the
// sampling status are read on any thread, loop threads included: they copy seqlocked text and
// never wait for the watchdog process.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "loop_state.h"
#include "stallwatch/agent.h"
#include "watchdog/backend.h"
#include "watchdog/region.h"
#include "watchdog/sampling_status.h"

namespace stallwatch::internal {

// Host side: the watchdog process of this host.
class WatchdogProcess final : public WatchdogBackend {
 public:
  // Whether the runtime should run its watchdog in a process, for these first options. When
  // not, `why` says why (for the status line; empty for the plain thread default).
  static bool Wanted(const Options& options, std::string* why);
  // Starts the process and waits (up to 5 s) until it runs. nullptr on failure (`why` set).
  // `host_status`: the host's own sampling status (its signal handler).
  static std::unique_ptr<WatchdogProcess> Start(const Options& options, const std::string& service,
                                                int sample_signal,
                                                agent::internal::SamplingStatus host_status,
                                                std::string* why);
  ~WatchdogProcess() override;  // asks it to stop, waits for it (bounded), reaps it
  WatchdogProcess(const WatchdogProcess&) = delete;
  WatchdogProcess& operator=(const WatchdogProcess&) = delete;

  // A free slot with a freshly constructed LoopState, or -1 when all are taken.
  int AllocateSlot();
  agent::internal::LoopState* loop_state(int slot) { return &region_->slots[slot].loop; }
  // After the loop is unregistered: the slot can be reused.
  void ReleaseSlot(int slot);
  pid_t pid() const { return pid_; }

  // WatchdogBackend. Add hands the loop's slot to the watchdog process (after the probe
  // started). Remove asks the watchdog process to close the loop (its last window, an ongoing
  // stall) and waits up to 2 s for it; the loop thread may go on writing until ReleaseSlot.
  void Add(const std::shared_ptr<LoopContext>& ctx) override;
  void Remove(LoopContext* ctx) override;
  // The host's own status when it is not "ok", else what the watchdog process published.
  std::string sampling_status() const override;
  uint64_t findings_dropped() const override { return 0; }
  void PullSnapshot(LoopContext& c) const override;
  WatchdogProcess* process() override { return this; }
  // In a child after fork(): the mapping becomes private memory of the child (same contents,
  // same address), so the child's copies of the loops never write into the parent's.
  void PrivatizeInChild();

 private:
  WatchdogProcess() = default;
  bool WaitFor(const std::atomic<int>& v, int want, int64_t timeout_ns);
  void Activate(int slot, const std::string& name, const Options& o, int probe_fd, bool bind_epfd);
  void Detach(int slot);

  Region* region_ = nullptr;
  size_t region_size_ = 0;
  pid_t pid_ = -1;
  int sample_signal_ = 0;
  agent::internal::SamplingStatus host_status_;
  std::mutex mu_;
  bool reserved_[kMaxProcessLoops] = {};  // slots handed out by AllocateSlot (host side)
};

}  // namespace stallwatch::internal
