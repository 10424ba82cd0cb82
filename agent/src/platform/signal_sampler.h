#pragma once
// Stack samples of a running loop thread via a signal. The handler only copies the interrupted
// registers and the top of the thread's stack into a preallocated RawSample (process_vm_readv on
// the own process, so an unmapped page ends the copy instead of faulting); unwinding and
// symbolization happen later on the watchdog thread.
//
// Threading: Install/Uninstall and Capture are called on the watchdog thread only (one capture
// at a time per process).

#include <signal.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "loop_state.h"
#include "stallwatch/status.h"

namespace stallwatch::agent::platform {

class SignalSampler {
 public:
  SignalSampler() = default;
  ~SignalSampler() { Uninstall(); }
  SignalSampler(const SignalSampler&) = delete;
  SignalSampler& operator=(const SignalSampler&) = delete;

  // Installs the handler for `signo` unless the host already handles it (then the sampler stays
  // unavailable and reason() says why).
  [[nodiscard]] Status Install(int signo);
  // Restores the previous disposition; a signal still pending for the agent is discarded first.
  // A handler the host installed after the agent's is left in place.
  void Uninstall();
  bool available() const { return installed_ && !taken_over_; }
  int signo() const { return signo_; }

  // Signals `tid` and waits up to `timeout` for the handler to fill `sample`. Never signals when
  // the host has since installed its own handler for the signal (the sampler then stays
  // unavailable: kFailedPrecondition, "... handler ...") or when `tid` blocks the signal (a
  // host that blocks it may be waiting for it with sigwait/signalfd: kFailedPrecondition,
  // "... blocked ...").
  [[nodiscard]] Status Capture(pid_t tid, internal::RawSample* sample,
                               std::chrono::nanoseconds timeout);

 private:
  bool installed_ = false;
  bool taken_over_ = false;  // the host installed its own handler after ours
  int signo_ = 0;
  struct ::sigaction* previous_ = nullptr;
};

// The default sampling signal: SIGRTMIN + 3.
int DefaultSampleSignal();

// Whether the agent's handler is the one installed for `signo` in this process.
bool SamplingHandlerInstalled(int signo);

// Capture for a watchdog process: signals thread `tid` of process `pid`, whose agent installed
// the handler for `signo`, and waits for the handler to fill `sample` (in memory shared with
// that process). Never signals once `handler_lost` (kept by the host's probe) is set, nor a
// thread that blocks the signal (kFailedPrecondition, as Capture).
[[nodiscard]] Status CaptureRemote(pid_t pid, pid_t tid, int signo,
                                   const std::atomic<bool>& handler_lost,
                                   internal::RawSample* sample, std::chrono::nanoseconds timeout);

}  // namespace stallwatch::agent::platform
