#pragma once
// Stack samples of a running loop thread via a signal. The handler only copies the interrupted
// registers and the top of the thread's stack into a preallocated RawSample (process_vm_readv on
// the own process, so an unmapped page ends the copy instead of faulting); unwinding and
// symbolization happen later on the watchdog thread.
//
// Threading: Install/Uninstall and Capture are called on the watchdog thread only (one capture
// at a time per process).

#include <signal.h>

#include <chrono>
#include <string>

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
  void Uninstall();
  bool available() const { return installed_; }
  int signo() const { return signo_; }

  // Signals `tid` and waits up to `timeout` for the handler to fill `sample`.
  [[nodiscard]] Status Capture(pid_t tid, internal::RawSample* sample,
                               std::chrono::nanoseconds timeout);

 private:
  bool installed_ = false;
  int signo_ = 0;
  struct ::sigaction* previous_ = nullptr;
};

// The default sampling signal: SIGRTMIN + 3.
int DefaultSampleSignal();

}  // namespace stallwatch::agent::platform
