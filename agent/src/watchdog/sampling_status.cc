#include "watchdog/sampling_status.h"

namespace stallwatch::agent::internal {

std::string SamplingStatusText(const SamplingStatus& s) {
  switch (s.state) {
    case SamplingState::kOk:
      return "ok";
    case SamplingState::kOff:
      return "off (STALLWATCH_SAMPLING=off)";
    case SamplingState::kNoHostSignal:
      return "running-thread stacks unavailable: no sampling signal in the host";
    case SamplingState::kRunningStacksUnavailable:
      return "running-thread stacks unavailable: " + s.detail;
    case SamplingState::kStacksUnavailable:
      return "stacks unavailable: " + s.detail;
  }
  return "ok";
}

}  // namespace stallwatch::agent::internal
