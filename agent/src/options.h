#pragma once
// The STALLWATCH_* environment → Options, with the variables looked up through a function so
// that the parsing is tested and fuzzed without touching the process environment.
//
// Threading: any thread (warnings go through the agent's logger, each variable once per
// process).

#include <functional>
#include <string_view>

#include "stallwatch/agent.h"
#include "stallwatch/status.h"

namespace stallwatch::agent::internal {

// Returns the variable's value, or nullptr when it is not set.
using EnvLookup = std::function<const char*(const char* name)>;
// Options::FromEnvironment(base) with `lookup` as the environment (nullptr: no variables, only
// the defaults fill the unset fields).
Options OptionsFromEnv(Options base, const EnvLookup& lookup);

// STALLWATCH_SIGNAL: a real-time signal as a number ("37"), or by name relative to either end
// of the range: "SIGRTMIN+3", "RTMIN+3", "SIGRTMIN", "SIGRTMAX-2", "RTMAX". Anything outside
// SIGRTMIN..SIGRTMAX (e.g. "SIGUSR1", "10") is refused with a message saying a real-time signal
// is needed.
StatusOr<int> ParseSampleSignal(std::string_view text);

// What the warning for a malformed STALLWATCH_ENDPOINT adds as a hint ("" when none): a likely
// intended form for common slips ("stdout" → stderr, "/path" → file:/path or unix:/path).
std::string EndpointHint(std::string_view text);

}  // namespace stallwatch::agent::internal
