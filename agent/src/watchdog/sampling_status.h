#pragma once
// Whether the watchdog can take stacks, and the text Agent::Snapshot() shows for it.

#include <string>

namespace stallwatch::agent::internal {

enum class SamplingState {
  kOk,
  kOff,                       // STALLWATCH_SAMPLING=off
  kNoHostSignal,              // a watchdog process whose host has no sampling signal
  kRunningStacksUnavailable,  // no signal to sample running threads (detail: why)
  kStacksUnavailable,         // the unwinder failed (detail: why)
};

struct SamplingStatus {
  SamplingState state = SamplingState::kOk;
  std::string detail;  // kRunningStacksUnavailable, kStacksUnavailable: why

  bool ok() const { return state == SamplingState::kOk; }
  // Running threads cannot be sampled (blocked threads' stacks may still be taken).
  bool running_stacks_unavailable() const {
    return state == SamplingState::kNoHostSignal ||
           state == SamplingState::kRunningStacksUnavailable;
  }
};

// The status line: "ok", "off (STALLWATCH_SAMPLING=off)", "running-thread stacks unavailable:
// …", "stacks unavailable: …".
std::string SamplingStatusText(const SamplingStatus& s);

}  // namespace stallwatch::agent::internal
