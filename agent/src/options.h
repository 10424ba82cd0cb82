#pragma once
// The STALLWATCH_* environment → Options, with the variables looked up through a function so
// that the parsing is tested and fuzzed without touching the process environment.
//
// Threading: any thread (warnings go through the agent's logger, each variable once per
// process).

#include <functional>

#include "stallwatch/agent.h"

namespace stallwatch::agent::internal {

// Returns the variable's value, or nullptr when it is not set.
using EnvLookup = std::function<const char*(const char* name)>;
// Options::FromEnvironment(base) with `lookup` as the environment.
Options OptionsFromEnv(Options base, const EnvLookup& lookup);

}  // namespace stallwatch::agent::internal
