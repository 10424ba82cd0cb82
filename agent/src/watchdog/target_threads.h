#pragma once
// The watchdog's view of the threads it watches: those of its own process (the watchdog is a
// thread of the host), or those of the host process a stallwatch-watchdog serves. Chosen once,
// when the watchdog is made; everything that differs between the two (CPU clocks, /proc paths,
// memory reads, how a running thread's stack is taken) is here, so the engine does not ask
// which one it has.
//
// Threading: called on the watchdog thread (and, at detach, on the host's thread under the
// engine's lock); the per-loop ThreadFiles belong to the caller.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "loop_state.h"
#include "platform/proc.h"
#include "stallwatch/status.h"

namespace stallwatch::agent::platform {
class SignalSampler;
}

namespace stallwatch::agent::internal {

// Files kept open for one loop thread (the owner re-reads them with pread).
struct ThreadFiles {
  std::unique_ptr<platform::ProcFile> schedstat;
  pid_t tid = 0;  // the thread `schedstat` is of
};

class TargetThreads {
 public:
  // The watchdog's own process; running threads are sampled through `sampler` (installed or
  // not; it must outlive this object).
  static std::unique_ptr<TargetThreads> Own(platform::SignalSampler* sampler);
  // Host process `pid` served by stallwatch-watchdog, whose agent handles `sample_signal` (0:
  // none). Makes `pid` the process of every platform /proc read and of the unwinder
  // (platform::SetTargetProcess): call before anything reads those.
  static std::unique_ptr<TargetThreads> Remote(pid_t pid, int sample_signal);

  virtual ~TargetThreads() = default;

  pid_t pid() const { return pid_; }
  // Whether the threads are in another process (the watchdog keeps running while they stop).
  virtual bool remote() const = 0;

  // The loop thread's CPU time (ns), -1 if unknown.
  virtual int64_t LoopCpu(const LoopState& s, ThreadFiles* files) const = 0;
  // The thread's time queued for a CPU (ns), -1 if unknown.
  int64_t RunDelay(pid_t tid) const;
  // Hypervisor steal time of one CPU on average since boot (ns), -1 if unknown.
  int64_t StealPerCpu() const;
  std::optional<platform::SyscallInfo> Syscall(pid_t tid) const;
  // Whether the thread is stopped (SIGSTOP, a debugger) while the watchdog runs: only a remote
  // watchdog can see that (an own-process watchdog stops with it).
  virtual bool Stopped(pid_t tid) const = 0;
  // What fd `fd` of the process is ("tcp 10.0.0.1:5432", a path, ...).
  std::string DescribeFd(pid_t tid, int fd) const;
  // The fd a poll()/ppoll() waits on: the first pollfd of the array at `array_addr`; -1.
  int FirstPollFd(uint64_t array_addr) const;
  // The name the program gave thread `tid`: "main" for the main thread, its comm when that
  // differs from the process's, else "".
  std::string ThreadName(pid_t tid) const;
  // Looks for the loop's epoll fd (the one containing `probe_fd`) and binds it: directly here,
  // through the host's probe for a remote loop. Returns whether it was found.
  virtual bool FindAndBindEpollFd(LoopState* s, int probe_fd) const = 0;

  // Whether a running thread of loop `s` can be signalled for its stack now.
  virtual bool CanSignal(const LoopState& s) const = 0;
  // Why not, when the host took the signal over ("" when no such note applies).
  virtual std::string LostSignalNote(const LoopState& s) const = 0;
  // Signals `tid` for its stack into s->sample, waiting up to `timeout`.
  virtual Status Capture(pid_t tid, LoopState* s, std::chrono::nanoseconds timeout) = 0;
  // After a kFailedPrecondition capture: whether the signal is gone for good.
  virtual bool SignalGone(const LoopState& s) const = 0;

 protected:
  explicit TargetThreads(pid_t pid) : pid_(pid) {}

 private:
  pid_t pid_;
};

}  // namespace stallwatch::agent::internal
